//! preview-operator: a Kubernetes operator that gives every pull request its own short-lived,
//! tested environment. The binary in `main.rs` wires these modules together.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod controller;
pub mod crd;
pub mod github;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod server;
pub mod webhook;
