//! PURE: a PreviewEnvironment and the PreviewTemplate it names become the spec the operator
//! rolls out: parameters checked, `<< key >>` substituted, CI's images put in.
//!
//! `<< key >>` is the only syntax (see [`Substitution`]), so `{{ }}`, `{% %}` and anything
//! else in an application's own strings stays as it is. A missing key is an error that names
//! it and its place, never an empty string.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::delivery::{HelmReleaseSpec, KustomizationSpec, MAX_VALUES_BYTES};
use crate::api::template::{DependencySpec, PreviewTemplateSpec, SetupSpec};
use crate::api::{EnvVar, PreviewEnvironmentSpec, ServiceSpec, TestSpec};
use crate::naming::short_sha;

/// What a preview rolls out: its spec with the services and tests (its own or its template's,
/// rendered), and what only a template can add.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The PreviewEnvironment's spec, its services and tests filled in from the template.
    pub spec: PreviewEnvironmentSpec,
    pub dependencies: Vec<DependencySpec>,
    pub setup: Vec<SetupSpec>,
    /// Secrets of the template's namespace to copy into the preview namespace.
    pub secrets: Vec<String>,
    /// ConfigMaps of the template's namespace to copy into the preview namespace.
    pub config_maps: Vec<String>,
    /// The template's idle time, if it asks for one shorter than its class's.
    pub after_idle: Option<String>,
    /// Helm charts Flux releases into the preview namespace, values substituted.
    pub helm_releases: Vec<HelmReleaseSpec>,
    /// Kustomize directories Flux applies, image overrides substituted.
    pub kustomizations: Vec<KustomizationSpec>,
}

impl Rendered {
    /// A preview without a template: its own services and tests, nothing else.
    pub fn inline(spec: &PreviewEnvironmentSpec) -> Self {
        Rendered {
            spec: spec.clone(),
            dependencies: Vec::new(),
            setup: Vec::new(),
            secrets: Vec::new(),
            config_maps: Vec::new(),
            after_idle: None,
            helm_releases: Vec::new(),
            kustomizations: Vec::new(),
        }
    }

    /// Whether Flux delivers part of the preview.
    pub fn delivers_through_flux(&self) -> bool {
        !self.helm_releases.is_empty() || !self.kustomizations.is_empty()
    }

    /// Whether Flux needs the pull request's repository: for a chart in it or a kustomization.
    pub fn needs_repository(&self) -> bool {
        !self.kustomizations.is_empty() || self.helm_releases.iter().any(|h| h.chart.path.is_some())
    }

    /// Every image the preview runs.
    pub fn images(&self) -> impl Iterator<Item = &str> {
        let s = &self.spec;
        (s.services.iter().map(|x| x.image.as_str()))
            .chain(s.tests.iter().map(|x| x.image.as_str()))
            .chain(self.dependencies.iter().map(|x| x.image.as_str()))
            .chain(self.setup.iter().map(|x| x.job.image.as_str()))
            .chain(
                (self.kustomizations.iter().flat_map(|k| &k.images))
                    .filter_map(|i| i.new_name.as_deref()),
            )
    }

    /// The env of every container the preview runs, with where it is (`services[web]`...).
    pub fn containers_env(&self) -> impl Iterator<Item = (String, &[EnvVar])> {
        let s = &self.spec;
        (s.services
            .iter()
            .map(|x| (format!("services[{}]", x.name), x.env.as_slice())))
        .chain((s.tests.iter()).map(|x| (format!("tests[{}]", x.name), x.env.as_slice())))
        .chain(
            (self.dependencies.iter())
                .map(|x| (format!("dependencies[{}]", x.name), x.env.as_slice())),
        )
        .chain(
            (self.setup.iter()).map(|x| (format!("setup[{}]", x.job.name), x.job.env.as_slice())),
        )
    }

    /// Every pod annotation key the preview sets.
    pub fn pod_annotation_keys(&self) -> impl Iterator<Item = &String> {
        let s = &self.spec;
        (s.services.iter().flat_map(|x| x.pod_annotations.keys()))
            .chain(s.tests.iter().flat_map(|x| x.pod_annotations.keys()))
            .chain(self.setup.iter().flat_map(|x| x.job.pod_annotations.keys()))
    }
}

/// Why a template cannot be rendered for a preview, for its `TemplateError` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Who the template is rendered for: the preview's name and namespace, and the template's.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The PreviewEnvironment's name.
    pub name: &'a str,
    /// The preview namespace.
    pub namespace: &'a str,
    /// The PreviewTemplate's name, for messages.
    pub template: &'a str,
    /// The host a preview's own charts may expose (`<namespace>.<base domain>`), if its
    /// class publishes anything.
    pub host: Option<&'a str>,
}

/// Renders `template` for the preview `spec`.
pub fn render(
    spec: &PreviewEnvironmentSpec,
    target: Target<'_>,
    template: &PreviewTemplateSpec,
) -> Result<Rendered, TemplateError> {
    let params = parameters(spec, target.template, template)?;
    check_images(spec, target.template, template)?;
    check_sources(target.template, template)?;
    let sub = Substitution::new(variables(spec, target, params));
    let mut rendered = Rendered {
        spec: PreviewEnvironmentSpec {
            services: template
                .services
                .iter()
                .map(|s| sub.service(s))
                .collect::<Result<_, _>>()?,
            tests: template
                .tests
                .iter()
                .map(|t| sub.test(t, &format!("tests[{}]", t.name)))
                .collect::<Result<_, _>>()?,
            ..spec.clone()
        },
        dependencies: template
            .dependencies
            .iter()
            .map(|d| sub.dependency(d))
            .collect::<Result<_, _>>()?,
        setup: template
            .setup
            .iter()
            .map(|s| {
                Ok(SetupSpec {
                    job: sub.test(&s.job, &format!("setup[{}]", s.job.name))?,
                    run_on: s.run_on,
                })
            })
            .collect::<Result<_, TemplateError>>()?,
        secrets: template.secrets.iter().map(|s| s.name.clone()).collect(),
        config_maps: template
            .config_maps
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        after_idle: template.sleep.as_ref().map(|s| s.after_idle.clone()),
        helm_releases: template
            .helm_releases
            .iter()
            .map(|h| sub.helm_release(h))
            .collect::<Result<_, _>>()?,
        kustomizations: template
            .kustomizations
            .iter()
            .map(|k| sub.kustomization(k))
            .collect::<Result<_, _>>()?,
    };
    override_images(&mut rendered, &spec.images);
    Ok(rendered)
}

/// The value of every parameter: the preview's, else the default; checked against the
/// template's names and patterns.
fn parameters(
    spec: &PreviewEnvironmentSpec,
    template_name: &str,
    template: &PreviewTemplateSpec,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let declared: BTreeSet<&str> = template
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if let Some(unknown) = spec
        .parameters
        .keys()
        .find(|k| !declared.contains(k.as_str()))
    {
        return Err(TemplateError(format!(
            "unknown parameter {unknown}: PreviewTemplate {template_name} declares {}",
            list_or_none(declared.iter().copied())
        )));
    }
    let mut values = BTreeMap::new();
    for p in &template.parameters {
        let Some(value) = spec.parameters.get(&p.name).or(p.default.as_ref()) else {
            return Err(TemplateError(format!(
                "parameter {} of PreviewTemplate {template_name} has no default: set \
                 spec.parameters.{}",
                p.name, p.name
            )));
        };
        if let Some(pattern) = &p.pattern {
            let re = regex::Regex::new(pattern).map_err(|e| {
                TemplateError(format!(
                    "parameter {} of PreviewTemplate {template_name} has an invalid pattern: {e}",
                    p.name
                ))
            })?;
            if !re.is_match(value) {
                return Err(TemplateError(format!(
                    "parameter {}={value:?} does not match its pattern {pattern}",
                    p.name
                )));
            }
        }
        values.insert(p.name.clone(), value.clone());
    }
    Ok(values)
}

/// `spec.images` may only name what the template runs.
fn check_images(
    spec: &PreviewEnvironmentSpec,
    template_name: &str,
    template: &PreviewTemplateSpec,
) -> Result<(), TemplateError> {
    let names: BTreeSet<&str> = (template.services.iter().map(|s| s.name.as_str()))
        .chain(template.dependencies.iter().map(|d| d.name.as_str()))
        .chain(template.setup.iter().map(|s| s.job.name.as_str()))
        .chain(template.tests.iter().map(|t| t.name.as_str()))
        .chain(
            (template.kustomizations.iter())
                .flat_map(|k| k.images.iter().map(|i| last_segment(&i.name))),
        )
        .collect();
    match spec.images.keys().find(|k| !names.contains(k.as_str())) {
        Some(unknown) => Err(TemplateError(format!(
            "spec.images names {unknown}, but PreviewTemplate {template_name} has no service, \
             dependency, setup Job, test or kustomization image of that name (it has {})",
            list_or_none(names.iter().copied())
        ))),
        None => Ok(()),
    }
}

/// The last path segment of an image name: `shop-web` of `ghcr.io/acme/shop-web`.
fn last_segment(image: &str) -> &str {
    image.rsplit('/').next().unwrap_or(image)
}

/// `valueFrom` may only read the Secrets and ConfigMaps the template declares: those are the
/// only ones copied into the preview namespace, and the only ones a team has put up for it.
/// The same holds for Helm values read from them (`helmReleases[].valuesFrom`).
fn check_sources(template_name: &str, template: &PreviewTemplateSpec) -> Result<(), TemplateError> {
    let secrets: BTreeSet<&str> = template.secrets.iter().map(|s| s.name.as_str()).collect();
    let maps: BTreeSet<&str> = template
        .config_maps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for release in &template.helm_releases {
        for from in &release.values_from {
            let (field, declared) = match from.kind {
                crate::api::delivery::ValuesKind::Secret => ("spec.secrets", &secrets),
                crate::api::delivery::ValuesKind::ConfigMap => ("spec.configMaps", &maps),
            };
            if !declared.contains(from.name.as_str()) {
                return Err(TemplateError(format!(
                    "helmReleases[{}]: valuesFrom reads {} {}, which PreviewTemplate \
                     {template_name} does not declare in {field}",
                    release.name,
                    from.kind.as_str(),
                    from.name
                )));
            }
        }
    }
    let envs = (template.services.iter().map(|s| (&s.name, &s.env)))
        .chain(template.dependencies.iter().map(|d| (&d.name, &d.env)))
        .chain(template.setup.iter().map(|s| (&s.job.name, &s.job.env)))
        .chain(template.tests.iter().map(|t| (&t.name, &t.env)));
    for (owner, env) in envs {
        for var in env {
            let Some(from) = &var.value_from else {
                continue;
            };
            let (kind, field, declared, key) =
                match (&from.secret_key_ref, &from.config_map_key_ref) {
                    (Some(r), _) => ("Secret", "spec.secrets", &secrets, r),
                    (None, Some(r)) => ("ConfigMap", "spec.configMaps", &maps, r),
                    (None, None) => continue,
                };
            if !declared.contains(key.name.as_str()) {
                return Err(TemplateError(format!(
                    "{owner}: env {} reads {kind} {}, which PreviewTemplate {template_name} does \
                     not declare in {field}",
                    var.name, key.name
                )));
            }
        }
    }
    Ok(())
}

fn override_images(rendered: &mut Rendered, images: &BTreeMap<String, String>) {
    let pick = |name: &str, image: &mut String| {
        if let Some(new) = images.get(name) {
            image.clone_from(new);
        }
    };
    for s in &mut rendered.spec.services {
        pick(&s.name, &mut s.image);
    }
    for t in &mut rendered.spec.tests {
        pick(&t.name, &mut t.image);
    }
    for d in &mut rendered.dependencies {
        pick(&d.name, &mut d.image);
    }
    for s in &mut rendered.setup {
        pick(&s.job.name, &mut s.job.image);
    }
    // A kustomization's image is overridden by its name's last segment: the reference CI
    // built replaces both the name and the tag (kustomize splits it back).
    for image in rendered
        .kustomizations
        .iter_mut()
        .flat_map(|k| &mut k.images)
    {
        if let Some(new) = images.get(last_segment(&image.name)) {
            let (name, tag) = split_reference(new);
            image.new_name = Some(name.to_string());
            image.new_tag = tag.map(str::to_string);
        }
    }
}

/// An image reference as name and tag: `ghcr.io/acme/web:1` is (`ghcr.io/acme/web`, `1`); a
/// `:` before the last `/` is a registry's port, not a tag. A digest stays in the name.
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') && !name.contains('@') => (name, Some(tag)),
        _ => (reference, None),
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The keys a template string may use, and why an unset one is missing.
struct Variables {
    values: BTreeMap<&'static str, String>,
    params: BTreeMap<String, String>,
    /// Keys that exist but have no value for this preview, with what to do about it.
    unset: BTreeMap<&'static str, &'static str>,
}

/// Every key, in the order the documentation lists them.
const KEYS: [&str; 10] = [
    "headSha",
    "shortSha",
    "pullRequest",
    "repository",
    "branch",
    "branchSlug",
    "namespace",
    "name",
    "host",
    "params",
];

/// The most the template strings of one preview may render to, in bytes. Every input is
/// bounded at admission, but a key's value can be much longer than the key (a 1 KiB parameter
/// behind `<< params.a >>`), so the output is bounded on its own: a template cannot make the
/// operator every tenant shares hold more than this per preview.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

fn variables(
    spec: &PreviewEnvironmentSpec,
    target: Target<'_>,
    params: BTreeMap<String, String>,
) -> Variables {
    let mut values = BTreeMap::from([
        ("headSha", spec.head_sha.clone()),
        ("shortSha", short_sha(&spec.head_sha).to_string()),
        ("pullRequest", spec.pull_request.to_string()),
        ("repository", spec.repository.clone()),
        ("namespace", target.namespace.to_string()),
        ("name", target.name.to_string()),
    ]);
    let mut unset = BTreeMap::new();
    match target.host {
        Some(host) => {
            values.insert("host", host.to_string());
        }
        None => {
            unset.insert(
                "host",
                "the PreviewClass publishes nothing (it has no spec.ingress.baseDomain)",
            );
        }
    }
    match &spec.branch {
        Some(branch) => {
            values.insert("branch", branch.clone());
            values.insert("branchSlug", slug(branch));
        }
        None => {
            unset.insert("branch", "spec.branch is not set");
            unset.insert("branchSlug", "spec.branch is not set");
        }
    }
    Variables {
        values,
        params,
        unset,
    }
}

/// A branch name as a DNS label: lower case, runs of anything else as one dash, at most 63.
pub fn slug(branch: &str) -> String {
    let mut out = String::with_capacity(branch.len());
    for c in branch.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    trimmed
        .get(..trimmed.len().min(63))
        .unwrap_or(trimmed)
        .trim_end_matches('-')
        .to_string()
}

/// Whether `text` is a key as a template may write it: a name, or `params.` and a name.
fn is_key(text: &str) -> bool {
    fn name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
    match text.split_once('.') {
        Some((head, rest)) => name(head) && name(rest),
        None => name(text),
    }
}

/// Substitutes `<< key >>` in template strings with the values of one preview.
///
/// Template strings are data written by tenants and rendered by the operator every tenant
/// shares, so `<< key >>` is the only thing recognised and nothing else in a string is
/// interpreted: one pass from left to right, each `<<` matched with the next `>>`, so the work
/// is linear in the input, and the output of all strings of one preview is bounded by
/// [`MAX_RENDERED_BYTES`]. No expressions, filters, loops or comments: a template engine would
/// let one string make the operator compute or allocate what a tenant asks for.
struct Substitution {
    vars: Variables,
    /// Bytes rendered so far for this preview.
    rendered: std::cell::Cell<usize>,
}

impl Substitution {
    fn new(vars: Variables) -> Self {
        Substitution {
            vars,
            rendered: std::cell::Cell::new(0),
        }
    }

    /// Renders one string; `at` says where it is, for the error.
    fn string(&self, text: &str, at: &str) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("<<") {
            self.push(&mut out, &rest[..start], at)?;
            let after = &rest[start + 2..];
            let Some(end) = after.find(">>") else {
                return Err(TemplateError(format!("{at}: << without a closing >>")));
            };
            let key = after[..end].trim();
            if !is_key(key) {
                return Err(TemplateError(format!(
                    "{at}: << {key} >> is not a key; write << key >> or << params.NAME >>, \
                     nothing else"
                )));
            }
            self.push(&mut out, self.value(key, at)?, at)?;
            rest = &after[end + 2..];
        }
        self.push(&mut out, rest, at)?;
        Ok(out)
    }

    /// Appends `piece` to `out`, within the preview's budget.
    fn push(&self, out: &mut String, piece: &str, at: &str) -> Result<(), TemplateError> {
        let total = self.rendered.get().saturating_add(piece.len());
        if total > MAX_RENDERED_BYTES {
            return Err(TemplateError(format!(
                "{at}: the template renders to more than {} KiB for this preview; shorten its \
                 strings or the parameters they use",
                MAX_RENDERED_BYTES / 1024
            )));
        }
        self.rendered.set(total);
        out.push_str(piece);
        Ok(())
    }

    /// The value of `key`, or an error that names it and the keys there are.
    fn value(&self, key: &str, at: &str) -> Result<&str, TemplateError> {
        let (head, rest) = key.split_once('.').unwrap_or((key, ""));
        if let Some(why) = self.vars.unset.get(head) {
            return Err(TemplateError(format!(
                "{at}: key << {key} >> has no value: {why}"
            )));
        }
        let value = match head {
            "params" => self.vars.params.get(rest).map(String::as_str),
            _ if rest.is_empty() => self.vars.values.get(head).map(String::as_str),
            _ => None,
        };
        value.ok_or_else(|| {
            let params = self.vars.params.keys().map(|p| format!("params.{p}"));
            let keys: Vec<String> = KEYS
                .iter()
                .filter(|k| **k != "params")
                .map(|k| k.to_string())
                .chain(params)
                .collect();
            TemplateError(format!(
                "{at}: unknown key << {key} >>; the keys are {}",
                keys.join(", ")
            ))
        })
    }

    fn strings(&self, items: &[String], at: &str) -> Result<Vec<String>, TemplateError> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| self.string(s, &format!("{at}[{i}]")))
            .collect()
    }

    fn env(&self, env: &[EnvVar], at: &str) -> Result<Vec<EnvVar>, TemplateError> {
        env.iter()
            .map(|e| {
                Ok(EnvVar {
                    value: self.string(&e.value, &format!("{at}.env[{}]", e.name))?,
                    ..e.clone()
                })
            })
            .collect()
    }

    fn service(&self, s: &ServiceSpec) -> Result<ServiceSpec, TemplateError> {
        let at = format!("services[{}]", s.name);
        Ok(ServiceSpec {
            image: self.string(&s.image, &format!("{at}.image"))?,
            command: self.strings(&s.command, &format!("{at}.command"))?,
            args: self.strings(&s.args, &format!("{at}.args"))?,
            env: self.env(&s.env, &at)?,
            ..s.clone()
        })
    }

    fn test(&self, t: &TestSpec, at: &str) -> Result<TestSpec, TemplateError> {
        Ok(TestSpec {
            image: self.string(&t.image, &format!("{at}.image"))?,
            command: self.strings(&t.command, &format!("{at}.command"))?,
            args: self.strings(&t.args, &format!("{at}.args"))?,
            env: self.env(&t.env, at)?,
            ..t.clone()
        })
    }

    fn helm_release(&self, h: &HelmReleaseSpec) -> Result<HelmReleaseSpec, TemplateError> {
        let at = format!("helmReleases[{}]", h.name);
        let values = match &h.values {
            Some(values) => {
                let size = serde_json::to_vec(values).map_or(0, |v| v.len());
                if size > MAX_VALUES_BYTES {
                    return Err(TemplateError(format!(
                        "{at}.values: {} KiB of values, more than the {} KiB a release may \
                         have; move defaults into the chart's values.yaml",
                        size / 1024,
                        MAX_VALUES_BYTES / 1024
                    )));
                }
                Some(self.json(values, &format!("{at}.values"))?)
            }
            None => None,
        };
        Ok(HelmReleaseSpec {
            values,
            ..h.clone()
        })
    }

    /// Substitutes every string in `value` (not the keys of its objects).
    fn json(
        &self,
        value: &serde_json::Value,
        at: &str,
    ) -> Result<serde_json::Value, TemplateError> {
        use serde_json::Value;
        Ok(match value {
            Value::String(text) => Value::String(self.string(text, at)?),
            Value::Array(items) => Value::Array(
                (items.iter().enumerate())
                    .map(|(i, v)| self.json(v, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.json(v, &format!("{at}.{k}"))?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn kustomization(&self, k: &KustomizationSpec) -> Result<KustomizationSpec, TemplateError> {
        let at = format!("kustomizations[{}]", k.name);
        let images = (k.images.iter())
            .map(|i| {
                let string = |v: &Option<String>, field: &str| {
                    v.as_ref()
                        .map(|v| self.string(v, &format!("{at}.images[{}].{field}", i.name)))
                        .transpose()
                };
                Ok(crate::api::delivery::ImageOverride {
                    name: i.name.clone(),
                    new_name: string(&i.new_name, "newName")?,
                    new_tag: string(&i.new_tag, "newTag")?,
                })
            })
            .collect::<Result<_, TemplateError>>()?;
        Ok(KustomizationSpec {
            images,
            ..k.clone()
        })
    }

    fn dependency(&self, d: &DependencySpec) -> Result<DependencySpec, TemplateError> {
        let at = format!("dependencies[{}]", d.name);
        Ok(DependencySpec {
            image: self.string(&d.image, &format!("{at}.image"))?,
            command: self.strings(&d.command, &format!("{at}.command"))?,
            args: self.strings(&d.args, &format!("{at}.args"))?,
            env: self.env(&d.env, &at)?,
            ..d.clone()
        })
    }
}

#[cfg(test)]
mod tests;
