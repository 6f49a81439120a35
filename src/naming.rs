//! Names and labels: the preview namespace's name and the labels that tie every object the
//! operator creates back to its PreviewEnvironment.
//!
//! Children live in another namespace than their PreviewEnvironment (and the Namespace is
//! cluster-scoped), so ownerReferences cannot express ownership; these labels do, and the
//! owner-uid label is the authority on what the operator may touch.

use std::collections::BTreeMap;
use std::fmt;

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::PreviewEnvironment;

/// Marks every object the operator manages.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`], and the field manager of every write the operator makes.
pub const MANAGER: &str = "preview-operator";
/// Namespace of the owning PreviewEnvironment.
pub const OWNER_NAMESPACE: &str = "preview.dev/owner-namespace";
/// Name of the owning PreviewEnvironment (truncated to a label value; the UID decides).
pub const OWNER_NAME: &str = "preview.dev/owner-name";
/// UID of the owning PreviewEnvironment: what makes an object ours.
pub const OWNER_UID: &str = "preview.dev/owner-uid";
/// Repository as a label value: lower case, `/` replaced by `.` (GitHub owners have no dots).
pub const REPOSITORY: &str = "preview.dev/repository";
/// Pull request number.
pub const PULL_REQUEST: &str = "preview.dev/pull-request";
/// Kind of child inside a preview namespace (service or test), for cleanup selectors.
pub const COMPONENT: &str = "preview.dev/component";
/// Name of the service or test a child belongs to.
pub const PART_OF: &str = "preview.dev/name";
/// Commit a test Job runs for.
pub const SHA: &str = "preview.dev/sha";
/// Annotation on a PreviewEnvironment asking for its tests to run again at the same sha: any
/// new value reruns every test (CI sets it when a workflow run is re-run).
pub const RERUN_TESTS: &str = "preview.dev/rerun-tests";
/// Annotation whose new value wakes a sleeping preview (`kubectl annotate`, the wake listener).
pub const WAKE_REQUEST: &str = "preview.dev/wake-request";
/// Annotation on a sleeping preview's namespace: the replicas of the workloads Flux delivered
/// before they were scaled to zero, `{"Deployment/web": 2}`, restored when it wakes.
pub const REPLICAS_BEFORE_SLEEP: &str = "preview.dev/replicas-before-sleep";
/// Annotation `"true"` keeping a preview awake, where its class allows it.
pub const NEVER_SLEEP: &str = "preview.dev/never-sleep";
/// Annotation naming the owning PreviewEnvironment exactly (`namespace/name`); labels cannot
/// hold every valid name, and watches map children back to their owner through it.
pub const OWNER_REF: &str = "preview.dev/owner";
/// Annotation on the operator's Ingresses naming their host, so a host already served by
/// another preview is found in the cache before it is claimed twice.
pub const HOST: &str = "preview.dev/host";
/// Annotation holding a fingerprint of what the operator last applied to an object, so a
/// reconcile that would change nothing makes no request at all.
pub const APPLIED_HASH: &str = "preview.dev/applied-hash";
/// Annotation on a Deployment or StatefulSet: a fingerprint of its pod template, so a change
/// that rolls its pods is told apart from one that does not (replicas while asleep).
pub const POD_TEMPLATE: &str = "preview.dev/pod-template";
/// Annotation on a test or setup Job: a fingerprint of its own step's spec, so a Job runs
/// again when its step changed, not when the class changed how its pod is dressed (pull
/// secrets, resource defaults).
pub const RUN_SPEC: &str = "preview.dev/run-spec";
/// Annotation on a test Job: a fingerprint of the workloads (services and dependencies) it
/// ran against, so the tests run again when what they test changed.
pub const TESTED: &str = "preview.dev/tested";
/// Annotation on a test Job that runs again at the same sha: why (`TemplateChanged`,
/// `ClassChanged`, `SpecChanged`).
pub const RUN_REASON: &str = "preview.dev/run-reason";

/// The owner (`namespace`, `name`) an object's [`OWNER_REF`] annotation names (read with
/// `slim::Keeps::kept`: a cached object may keep it outside its annotation map).
pub fn owner_ref(annotation: Option<&str>) -> Option<(&str, &str)> {
    PreviewKey::parts(annotation?)
}

/// A PreviewEnvironment's identity as the operator writes it outside the API: `namespace/name`
/// in the owner annotation, the commit-status context (`preview/namespace/name`) and the pull
/// request comment. Written with `Display` and read back with [`PreviewKey::parse`], so both
/// sides agree on one format.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PreviewKey {
    pub namespace: String,
    pub name: String,
}

impl PreviewKey {
    /// The identity of `pe`.
    pub fn of(pe: &PreviewEnvironment) -> PreviewKey {
        PreviewKey {
            namespace: pe.namespace().unwrap_or_default(),
            name: pe.name_any(),
        }
    }

    /// The identity `text` (`namespace/name`) names.
    pub fn parse(text: &str) -> Option<PreviewKey> {
        let (namespace, name) = PreviewKey::parts(text)?;
        Some(PreviewKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// The namespace and name `text` (`namespace/name`) names, borrowed from it. Both must be
    /// names the API server accepts: the text comes from annotations and commit statuses
    /// anyone with write access can edit, and a malformed one names no preview.
    pub fn parts(text: &str) -> Option<(&str, &str)> {
        let (namespace, name) = text.split_once('/')?;
        (is_dns_label(namespace) && is_dns_subdomain(name)).then_some((namespace, name))
    }
}

impl From<&Owner> for PreviewKey {
    fn from(owner: &Owner) -> Self {
        PreviewKey {
            namespace: owner.namespace.clone(),
            name: owner.name.clone(),
        }
    }
}

impl fmt::Display for PreviewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether `text` is a DNS-1123 label, as namespace names are.
fn is_dns_label(text: &str) -> bool {
    text.len() <= MAX_LABEL && is_dns_part(text)
}

/// Whether `text` is a DNS-1123 subdomain, as the names of custom resources are (a part
/// between dots may be longer than a label).
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_part)
}

/// Lower-case alphanumerics and dashes, starting and ending with an alphanumeric.
fn is_dns_part(text: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
        && text.chars().all(|c| alphanumeric(c) || c == '-')
}

/// The first seven characters of a commit sha, as Git prints it.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Selector for everything the operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

const MAX_LABEL: usize = 63;
/// Hex characters of the hash in preview namespace names: 64 bits, so a crafted name cannot
/// be brute-forced onto another tenant's namespace.
const HASH_LEN: usize = 16;

/// The preview namespace of PreviewEnvironment `namespace/name`: `<prefix><name>-<hash>`.
///
/// Deterministic (a restart finds the same namespace), a valid DNS-1123 label of at most 63
/// characters, readable (it starts with the CR's name) and collision-free: the hash covers
/// `namespace/name`, so the same name in two tenant namespaces, or two long names that
/// truncate alike, still get different namespaces.
pub fn preview_namespace(prefix: &str, namespace: &str, name: &str) -> String {
    let hash = short_hash(&format!("{namespace}/{name}"));
    let room = MAX_LABEL - HASH_LEN - 1;
    let mut readable = sanitize_label(&format!("{prefix}{name}"));
    readable.truncate(room);
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        hash
    } else {
        format!("{readable}-{hash}")
    }
}

/// The preview namespace of `pe`: the one its status names (so a preview keeps its namespace
/// when the naming scheme changes), else the one its name gives under `prefix`. Either is used
/// only once it proves to carry the preview's owner-uid label.
pub fn preview_namespace_of(pe: &PreviewEnvironment, owner: &Owner, prefix: &str) -> String {
    pe.status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| preview_namespace(prefix, &owner.namespace, &owner.name))
}

/// First characters of the hex SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(HASH_LEN);
    for byte in digest.iter().take(HASH_LEN.div_ceil(2)) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(HASH_LEN);
    hex
}

/// Lower-cases and maps every character outside `[a-z0-9-]` to `-`, trimming dashes at the
/// start (a DNS label must start with an alphanumeric).
fn sanitize_label(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_start_matches('-').to_string()
}

/// A label value for arbitrary text: at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with an alphanumeric.
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '.'
            }
        })
        .take(MAX_LABEL)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The repository as a label value: `Acme/Shop` becomes `acme.shop`, so the webhook can select
/// previews of a repository case-insensitively.
pub fn repository_label(repository: &str) -> String {
    label_value(&repository.to_ascii_lowercase())
}

/// Labels identifying the PreviewEnvironment an object belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub repository: String,
    pub pull_request: i64,
}

impl Owner {
    /// The owner of a stored PreviewEnvironment; `None` before it has a namespace and UID.
    pub fn of(pe: &PreviewEnvironment) -> Option<Owner> {
        Some(Owner {
            namespace: pe.metadata.namespace.clone()?,
            name: pe.metadata.name.clone()?,
            uid: pe.metadata.uid.clone()?,
            repository: pe.spec.repository.clone(),
            pull_request: pe.spec.pull_request,
        })
    }

    /// Labels every object owned by this PreviewEnvironment carries.
    /// Who a pod runs for, on every pod of the preview, so cost tools (OpenCost, Kubecost)
    /// can attribute its spend to the tenant, repository and pull request.
    pub fn cost_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (OWNER_NAMESPACE.to_string(), self.namespace.clone()),
            (REPOSITORY.to_string(), repository_label(&self.repository)),
            (PULL_REQUEST.to_string(), self.pull_request.to_string()),
        ])
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.to_string(), MANAGER.to_string()),
            (OWNER_NAMESPACE.to_string(), self.namespace.clone()),
            (OWNER_NAME.to_string(), label_value(&self.name)),
            (OWNER_UID.to_string(), self.uid.clone()),
            (REPOSITORY.to_string(), repository_label(&self.repository)),
            (PULL_REQUEST.to_string(), self.pull_request.to_string()),
        ])
    }

    /// Selector matching every object owned by this PreviewEnvironment.
    pub fn selector(&self) -> String {
        format!("{},{OWNER_UID}={}", managed_selector(), self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_name_is_readable_and_deterministic() {
        let a = preview_namespace("pr-", "team-shop", "shop-pr-123");
        assert!(a.starts_with("pr-shop-pr-123-"), "{a}");
        assert_eq!(a, preview_namespace("pr-", "team-shop", "shop-pr-123"));
        assert!(is_dns_label(&a), "{a}");
    }

    #[test]
    fn same_name_in_two_tenants_gets_two_namespaces() {
        assert_ne!(
            preview_namespace("pr-", "team-a", "pr-1"),
            preview_namespace("pr-", "team-b", "pr-1")
        );
    }

    #[test]
    fn long_and_dotted_names_become_valid_distinct_labels() {
        let long_a = format!("{}.a", "x".repeat(250));
        let long_b = format!("{}.b", "x".repeat(250));
        let a = preview_namespace("pr-", "team", &long_a);
        let b = preview_namespace("pr-", "team", &long_b);
        assert!(is_dns_label(&a) && is_dns_label(&b), "{a} {b}");
        assert_eq!(a.len(), 63);
        assert_ne!(a, b, "names that truncate alike must still differ");
        let dotted = preview_namespace("pr-", "team", "web.v2--");
        assert!(is_dns_label(&dotted), "{dotted}");
    }

    #[test]
    fn an_empty_prefix_still_gives_a_valid_label() {
        let n = preview_namespace("", "team", "-.-");
        assert!(is_dns_label(&n), "{n}");
    }

    #[test]
    fn repository_label_is_lower_case_and_valid() {
        assert_eq!(repository_label("Acme/Shop.Web"), "acme.shop.web");
        let long = repository_label(&format!("acme/{}", "r".repeat(200)));
        assert!(long.len() <= 63);
    }

    #[test]
    fn owner_selector_names_the_uid() {
        let owner = Owner {
            namespace: "team".into(),
            name: "pr-1".into(),
            uid: "1234-abcd".into(),
            repository: "acme/shop".into(),
            pull_request: 1,
        };
        assert_eq!(
            owner.selector(),
            "app.kubernetes.io/managed-by=preview-operator,preview.dev/owner-uid=1234-abcd"
        );
        assert_eq!(owner.labels()[PULL_REQUEST], "1");
        assert_eq!(owner.labels()[REPOSITORY], "acme.shop");
    }
    #[test]
    fn a_preview_key_reads_back_as_it_was_written() {
        let key = PreviewKey::of(&crate::fixtures::preview("shop-pr-1"));
        let text = key.to_string();
        assert_eq!(text, "team-shop/shop-pr-1");
        assert_eq!(PreviewKey::parse(&text), Some(key));
    }

    #[test]
    fn odd_but_valid_names_survive_the_round_trip() {
        let long = format!("{}.b", "x".repeat(250));
        for (namespace, name) in [
            ("team-shop", "web.v2.pr-12"),
            ("0", "1"),
            ("a-b-c", "9-9.0-0"),
            (&"n".repeat(63)[..], long.as_str()),
        ] {
            let key = PreviewKey {
                namespace: namespace.into(),
                name: name.into(),
            };
            assert_eq!(PreviewKey::parse(&key.to_string()), Some(key), "{name}");
        }
    }

    #[test]
    fn malformed_identities_name_no_preview() {
        let long_namespace = format!("{}/web", "n".repeat(64));
        let long_name = format!("team/{}", "x".repeat(254));
        for text in [
            "",
            "team",
            "/web",
            "team/",
            "team/web/extra",
            "Team/web",
            "team/Web",
            "team/-web",
            "team/web.",
            "team/web..pr",
            "team.a/web",
            "team/web pr",
            long_namespace.as_str(),
            long_name.as_str(),
        ] {
            assert_eq!(PreviewKey::parse(text), None, "{text:?}");
            assert_eq!(PreviewKey::parts(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_owner_annotation_names_its_preview() {
        let owner = Owner {
            namespace: "team".into(),
            name: "pr-1.web".into(),
            uid: "u".into(),
            repository: "acme/shop".into(),
            pull_request: 1,
        };
        let annotation = PreviewKey::from(&owner).to_string();
        assert_eq!(owner_ref(Some(&annotation)), Some(("team", "pr-1.web")));
        assert_eq!(owner_ref(Some("team")), None);
        assert_eq!(owner_ref(None), None);
    }
}
