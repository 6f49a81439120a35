//! The `preview.dev/v1alpha1` `PreviewEnvironment` API: spec, status and every admission rule.
//!
//! Everything a user can get wrong in a spec is refused by the API server (OpenAPI bounds and
//! patterns, CEL rules), so the operator only ever sees specs that make sense. Operator-side
//! policy the schema cannot know (TTL above the configured maximum, concurrency) is reported in
//! conditions instead.
//!
//! This module is the front: [`environment`] holds the spec and its schema rules, [`status`]
//! what the operator reports (phases, conditions, [`Reason`]), [`duration`] the API's duration
//! format; [`class`] and [`template`] are the platform's and the teams' APIs. Everything is
//! re-exported here, so callers name `crate::api::X`.

pub mod class;
pub mod conditions;
pub mod delivery;
pub mod duration;
pub mod environment;
pub mod status;
pub mod template;

pub use conditions::Condition;
pub use duration::{format_duration, parse_duration};
pub use environment::{
    EnvSource, EnvVar, KeyRef, MergeGroup, PREVIEW_TEXT_BUDGET, PreviewEnvironment,
    PreviewEnvironmentSpec, PreviewSleep, Provider, ServiceSpec, TEMPLATE_TEXT_BUDGET, TemplateRef,
    TestSpec,
};
pub use status::{
    Phase, PreviewEnvironmentStatus, Reason, ReleaseStatus, ReportedStatus, Revision,
    ServiceStatus, TestPhase, TestStatus, condition,
};

pub(crate) use duration::DURATION_PATTERN;
pub(crate) use environment::{
    DNS_LABEL_PATTERN, IMAGE_LOWERCASE_MESSAGE, IMAGE_LOWERCASE_RULE, IMAGE_PATTERN, MAX_ARGS,
    MAX_COMMAND, MAX_ENV, bounded_resources, text_budget,
};

/// Group of the API.
pub const GROUP: &str = "preview.dev";
