//! The PreviewEnvironment controller.

pub mod build;
