//! Where developers look for a running preview: a GitHub deployment (the pull request's "View
//! deployment" button) or a GitLab environment, one per preview, named
//! `preview/<namespace>/<name>` like its commit status context, so that one tenant's preview
//! never writes over another's.
//!
//! [`of`] is pure: the deployment a preview's status calls for. The poster task writes it
//! (`crate::scm::poster`), in order with the preview's commit statuses, each state once.

use crate::api::{Phase, PreviewEnvironmentStatus, condition};

/// What a deployment says about its environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentState {
    /// The services are being rolled out at this sha.
    InProgress,
    /// Every service is available at this sha (its tests are the check's matter).
    Success,
    /// The services could not be brought up at this sha.
    Failure,
    /// The environment is gone (torn down).
    Inactive,
}

impl DeploymentState {
    /// GitHub's name of the state (`repos/create-deployment-status`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Inactive => "inactive",
        }
    }
}

/// One preview's deployment as it should be shown now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// `owner/name` (a GitLab project path).
    pub repository: String,
    /// `preview/<namespace>/<name>`.
    pub environment: String,
    /// The commit deployed; empty for [`DeploymentState::Inactive`] when none was observed.
    pub sha: String,
    pub state: DeploymentState,
    /// The preview's URL, when it has an `http(s)` one.
    pub url: Option<String>,
    /// One line, at most [`MAX_DESCRIPTION`] characters.
    pub description: String,
}

/// Characters GitHub takes in a deployment status's description.
pub const MAX_DESCRIPTION: usize = 140;

/// The environment name of preview `preview` (`namespace/name`).
pub fn environment(preview: &str) -> String {
    format!("preview/{preview}")
}

/// PURE: the deployment `status` of `preview` (`namespace/name`) calls for: in progress
/// while its services roll out at the observed sha, success once they are all available
/// (failed tests leave the environment usable), failure when they could not be brought up,
/// inactive while it is torn down. `None` before it deploys anything (queued, refused) and
/// while it sleeps, which leaves the pull request showing what it showed.
pub fn of(
    repository: &str,
    preview: &str,
    status: &PreviewEnvironmentStatus,
) -> Option<Deployment> {
    let phase = status.phase?;
    let available = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition::AVAILABLE && c.status == "True");
    let (state, description) = match phase {
        Phase::Pending | Phase::Sleeping => return None,
        Phase::Terminating => (DeploymentState::Inactive, "torn down".to_string()),
        Phase::Deploying => (DeploymentState::InProgress, "deploying".to_string()),
        Phase::Testing | Phase::Ready => (DeploymentState::Success, "available".to_string()),
        Phase::Failed if available => (DeploymentState::Success, "available".to_string()),
        Phase::Failed => {
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == condition::READY);
            let why = ready.map(|c| format!("{}: {}", c.reason, c.message));
            (DeploymentState::Failure, why.unwrap_or_default())
        }
    };
    let sha = status.observed_sha.clone().unwrap_or_default();
    if sha.is_empty() && state != DeploymentState::Inactive {
        return None;
    }
    Some(Deployment {
        repository: repository.to_string(),
        environment: environment(preview),
        sha,
        state,
        url: status
            .url
            .clone()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://")),
        // The message may carry what a test printed: one line that mentions nobody.
        description: super::markdown::plain_line(&description)
            .chars()
            .take(MAX_DESCRIPTION)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.to_string().into(),
            status: status.to_string().into(),
            reason: reason.to_string().into(),
            message: "service web: back-off pulling\n@team look".into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    fn status(phase: Phase, available: bool) -> PreviewEnvironmentStatus {
        PreviewEnvironmentStatus {
            phase: Some(phase),
            observed_sha: Some("abcdef0".into()),
            url: Some("https://web.example.com".into()),
            conditions: vec![
                condition(
                    "Available",
                    if available { "True" } else { "False" },
                    "ImagePullBackOff",
                ),
                condition("Ready", "False", "ImagePullBackOff"),
            ],
            ..PreviewEnvironmentStatus::default()
        }
    }

    #[test]
    fn phases_map_to_deployment_states() {
        let state = |phase, available| of("a/b", "team/pr-1", &status(phase, available));
        let s = |phase, available| state(phase, available).map(|d| d.state);
        assert_eq!(s(Phase::Pending, false), None, "nothing deployed yet");
        assert_eq!(s(Phase::Sleeping, false), None, "asleep is not a result");
        assert_eq!(
            s(Phase::Deploying, false),
            Some(DeploymentState::InProgress)
        );
        assert_eq!(s(Phase::Testing, true), Some(DeploymentState::Success));
        assert_eq!(s(Phase::Ready, true), Some(DeploymentState::Success));
        assert_eq!(
            s(Phase::Failed, true),
            Some(DeploymentState::Success),
            "failed tests leave the environment usable"
        );
        assert_eq!(s(Phase::Failed, false), Some(DeploymentState::Failure));
        assert_eq!(
            s(Phase::Terminating, false),
            Some(DeploymentState::Inactive)
        );
        let d = state(Phase::Ready, true).expect("a deployment");
        assert_eq!(d.environment, "preview/team/pr-1");
        assert_eq!(d.sha, "abcdef0");
        assert_eq!(d.url.as_deref(), Some("https://web.example.com"));
    }

    #[test]
    fn a_failure_description_is_one_bounded_line_that_mentions_nobody() {
        let mut st = status(Phase::Failed, false);
        st.conditions[1].message = format!("{}\n@org/team", "x".repeat(300));
        let d = of("a/b", "n/p", &st).expect("a deployment");
        assert!(d.description.chars().count() <= MAX_DESCRIPTION);
        assert!(!d.description.contains('\n'));
        st.conditions[1].message = "image missing\n@org/team".into();
        let d = of("a/b", "n/p", &st).expect("a deployment");
        assert_eq!(
            d.description,
            "ImagePullBackOff: image missing @\u{200B}org/team"
        );
    }

    #[test]
    fn only_web_urls_are_linked() {
        let mut st = status(Phase::Ready, true);
        st.url = Some("javascript:alert(1)".into());
        assert_eq!(of("a/b", "n/p", &st).and_then(|d| d.url), None);
    }
}
