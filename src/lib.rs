//! preview-operator: a Kubernetes operator that gives every pull request its own short-lived,
//! tested environment. `main.rs` parses the command line (`cli`) and hands `run` to `runtime`,
//! which wires the other modules together.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod crd;
pub mod credential;
pub mod flux;
pub mod github;
pub mod gitlab;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod render;
pub mod runtime;
pub mod scm;
pub mod server;
pub mod sync;
pub mod template;
pub mod testlog;
pub mod wake;
pub mod webhook;

#[cfg(test)]
mod fixtures;
