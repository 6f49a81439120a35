//! PURE: the `repository` label of a preview's series, taken from what the platform team wrote
//! in its PreviewClasses rather than from the preview: a repository a class names literally is
//! labelled with that name in lower case, one a class admits through a glob with that glob, and
//! anything else (a repository no class binds) with [`UNBOUND`]. Tenants choose the repository
//! string of their previews, and a class matches it case-insensitively and through globs; its
//! raw value as a label would let one tenant mint series without bound.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use kube::ResourceExt;

use crate::api::class::PreviewClass;

/// The label of a repository no class binds. Parentheses are not allowed in repository names,
/// so it cannot be taken for one.
pub const UNBOUND: &str = "(unbound)";

/// What a repository is labelled with, for one set of classes.
#[derive(Debug, Default)]
pub struct RepositoryLabels {
    /// Repositories the classes name without a glob, in lower case.
    literals: HashSet<String>,
    /// The glob patterns, in lower case, in the order of `globs`' indices.
    patterns: Vec<String>,
    globs: GlobSet,
}

impl RepositoryLabels {
    /// The labels `classes` allow. Globs are tried in the order of the classes' names, then
    /// their tenants', then their repositories', so a repository two globs admit always gets
    /// the same one.
    pub fn new(classes: &[Arc<PreviewClass>]) -> Self {
        let mut labels = RepositoryLabels::default();
        let mut globs = GlobSetBuilder::new();
        for pattern in patterns(classes) {
            let lower = pattern.to_ascii_lowercase();
            if !is_glob(pattern) {
                labels.literals.insert(lower);
                continue;
            }
            // The same glob options as the class binding (controller::policy): `*` within one
            // path segment, any case.
            match GlobBuilder::new(pattern)
                .literal_separator(true)
                .case_insensitive(true)
                .build()
            {
                Ok(glob) => {
                    globs.add(glob);
                    labels.patterns.push(lower);
                }
                // The binding lets an invalid glob match only itself.
                Err(_) => {
                    labels.literals.insert(lower);
                }
            }
        }
        // Every pattern compiled on its own; a set of them only fails when it grows too large
        // for the regex engine, and then nothing is labelled by a glob.
        labels.globs = globs.build().unwrap_or_else(|_| {
            labels.patterns.clear();
            GlobSet::empty()
        });
        labels
    }

    /// The label of `repository`.
    pub fn label(&self, repository: &str) -> String {
        let lower = repository.to_ascii_lowercase();
        if self.literals.contains(&lower) {
            return lower;
        }
        self.globs
            .matches(repository)
            .into_iter()
            .min()
            .and_then(|first| self.patterns.get(first))
            .cloned()
            .unwrap_or_else(|| UNBOUND.to_string())
    }
}

/// A fingerprint of what [`RepositoryLabels::new`] reads from `classes`: labels built for one
/// fingerprint hold until it changes.
pub fn fingerprint(classes: &[Arc<PreviewClass>]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for pattern in patterns(classes) {
        pattern.hash(&mut hasher);
    }
    hasher.finish()
}

/// Every repository pattern of `classes`, in the order labels try them.
fn patterns(classes: &[Arc<PreviewClass>]) -> impl Iterator<Item = &str> {
    let mut sorted: Vec<&Arc<PreviewClass>> = classes.iter().collect();
    sorted.sort_by_key(|c| c.name_any());
    sorted.into_iter().flat_map(|c| {
        c.spec
            .tenants
            .iter()
            .flat_map(|t| t.repositories.iter().map(String::as_str))
    })
}

/// Whether `pattern` has anything a glob interprets.
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::class::PreviewClassSpec;

    fn class(name: &str, repositories: &[&str]) -> Arc<PreviewClass> {
        Arc::new(PreviewClass::new(
            name,
            PreviewClassSpec {
                tenants: serde_json::from_value(serde_json::json!([
                    {"namespaces": ["team-shop"], "repositories": repositories}
                ]))
                .expect("tenants"),
                ..PreviewClassSpec::default()
            },
        ))
    }

    #[test]
    fn a_named_repository_is_its_name_in_lower_case() {
        let labels = RepositoryLabels::new(&[class("standard", &["Acme/Shop", "acme/*"])]);
        for variant in ["acme/shop", "Acme/Shop", "ACME/SHOP", "acme/SHOP"] {
            assert_eq!(labels.label(variant), "acme/shop");
        }
    }

    #[test]
    fn a_repository_a_glob_admits_is_labelled_with_the_glob() {
        let labels = RepositoryLabels::new(&[class("standard", &["acme/shop", "Acme/shop-*"])]);
        for invented in [
            "acme/shop-x",
            "ACME/Shop-whatever-a-tenant-wants",
            "acme/shop-",
        ] {
            assert_eq!(labels.label(invented), "acme/shop-*", "{invented}");
        }
        assert_eq!(labels.label("acme/payments"), UNBOUND);
        assert_eq!(labels.label("acme/shop-x/deeper"), UNBOUND, "one segment");
    }

    #[test]
    fn the_first_glob_by_class_name_then_order_wins() {
        let classes = [
            class("zeta", &["acme/*"]),
            class("alpha", &["acme/shop-*", "acme/*"]),
        ];
        let labels = RepositoryLabels::new(&classes);
        assert_eq!(labels.label("acme/shop-1"), "acme/shop-*");
        assert_eq!(labels.label("acme/pay"), "acme/*");
        let reversed = [classes[1].clone(), classes[0].clone()];
        assert_eq!(fingerprint(&classes), fingerprint(&reversed));
        assert_ne!(
            fingerprint(&classes),
            fingerprint(&[class("alpha", &["acme/*"])])
        );
    }

    #[test]
    fn no_class_labels_every_repository_unbound() {
        let labels = RepositoryLabels::new(&[]);
        assert_eq!(labels.label("acme/shop"), UNBOUND);
    }
}
