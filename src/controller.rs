//! The PreviewEnvironment controller.

pub mod build;
pub mod status;
