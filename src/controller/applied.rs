//! What this process applied that the caches may not show yet (see [`Applied`]).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sync::lock;

/// The children this process applied that its caches may not show yet. Under load a watch
/// event trails its write by a second or more, and a reconcile woken meanwhile (by another
/// child of the same preview) would apply the same object again: at 1000 previews that was
/// most of the writes above one per child.
#[derive(Default)]
pub struct Applied {
    pending: Mutex<HashMap<ChildKey, Pending>>,
}

/// A child's kind, namespace and name.
pub(super) type ChildKey = (String, String, String);

/// One apply the cache may not show yet.
struct Pending {
    /// The resourceVersion the cache showed when it was applied (none: not cached).
    seen: Option<String>,
    /// The fingerprint applied.
    hash: String,
}

impl Applied {
    /// Whether `want` was applied to the object and the cache still shows the copy from
    /// before (`cached_version`). Once the cache shows any other version (ours, or a change
    /// someone made after it) the entry goes and the cache decides again.
    pub(super) fn in_flight(
        &self,
        key: &ChildKey,
        cached_version: Option<&String>,
        want: &str,
    ) -> bool {
        let mut pending = lock(&self.pending);
        match pending.get(key) {
            Some(p) if p.seen.as_ref() == cached_version => p.hash == want,
            Some(_) => {
                pending.remove(key);
                false
            }
            None => false,
        }
    }

    pub(super) fn record(&self, key: ChildKey, seen: Option<String>, hash: String) {
        lock(&self.pending).insert(key, Pending { seen, hash });
    }

    /// Whether this process applied `key` and the cache has not shown it since.
    pub(super) fn recorded(&self, key: &ChildKey) -> bool {
        lock(&self.pending).contains_key(key)
    }

    /// The cache shows what was applied: nothing is pending any more.
    pub(super) fn settled(&self, key: &ChildKey) {
        lock(&self.pending).remove(key);
    }

    /// Forgets the objects of a preview namespace that is gone.
    pub fn forget(&self, namespace: &str) {
        lock(&self.pending).retain(|(_, ns, _), _| ns != namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_the_cache_has_not_shown_yet_is_not_repeated_but_any_newer_copy_decides() {
        let applied = Applied::default();
        let key = (
            "Deployment".to_string(),
            "pr-1".to_string(),
            "web".to_string(),
        );
        let v = |s: &str| Some(s.to_string());
        assert!(!applied.in_flight(&key, v("5").as_ref(), "h1"));
        applied.record(key.clone(), v("5"), "h1".into());
        assert!(
            applied.in_flight(&key, v("5").as_ref(), "h1"),
            "the cache still shows 5"
        );
        assert!(
            !applied.in_flight(&key, v("5").as_ref(), "h2"),
            "another fingerprint is applied"
        );
        assert!(
            !applied.in_flight(&key, v("7").as_ref(), "h1"),
            "a newer copy (ours or someone else's): the cache decides"
        );
        assert!(
            !applied.in_flight(&key, v("5").as_ref(), "h1"),
            "and the entry is gone"
        );
        applied.record(key.clone(), None, "h1".into());
        assert!(
            applied.in_flight(&key, None, "h1"),
            "created, not cached yet"
        );
        applied.forget("pr-1");
        assert!(!applied.in_flight(&key, None, "h1"));
    }
}
