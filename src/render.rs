//! `preview-operator render`: every object the operator would apply for a PreviewEnvironment,
//! from files and without a cluster, or the error the preview would show. CI runs it before
//! applying; a team runs it while writing its template.
//!
//! It goes through the same steps as the controller (template rendering, the class's
//! admission, the builders), at the stage where everything is rolled out. What needs the
//! cluster is named instead: the data of copied Secrets and ConfigMaps, the namespace's UID.

use std::fmt::Write as _;
use std::sync::Arc;

use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::PreviewEnvironment;
use crate::api::Reason;
use crate::api::class::PreviewClass;
use crate::api::template::PreviewTemplate;
use crate::config::Config;
use crate::controller::build::{self, Preview, Stage};
use crate::controller::plan::{self, Classes, Snapshot};
use crate::controller::status::Gate;
use crate::template::Rendered;

/// Why there is nothing to render: a file, or what the preview would report.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{0}")]
    Input(String),
    /// The condition reason and message the preview would show.
    #[error("{}: {message}", reason.as_str())]
    Refused { reason: Reason, message: String },
    #[error("failed to write {0}")]
    Write(String),
}

/// How `render` writes the objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A YAML stream, with comments naming what needs the cluster.
    #[default]
    Yaml,
    /// One JSON object per line, without the comments: for scripts (`jq`, or a client that
    /// creates the objects itself, as the benchmark's baseline does).
    Json,
}

/// The UID a preview read from a file has before the API server gives it one.
const NO_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Parses one YAML document of kind `K`.
pub fn parse<K: DeserializeOwned>(file: &str, text: &str) -> Result<K, RenderError> {
    serde_saphyr::from_str(text).map_err(|e| RenderError::Parse {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// The objects for `pe` as a YAML stream, rendered from `template` and admitted by `class`
/// (the operator's defaults without one).
pub fn render(
    pe: &PreviewEnvironment,
    template: Option<&PreviewTemplate>,
    class: Option<&PreviewClass>,
) -> Result<String, RenderError> {
    render_as(Format::Yaml, pe, template, class)
}

/// The objects for `pe`, written as `format` says.
pub fn render_as(
    format: Format,
    pe: &PreviewEnvironment,
    template: Option<&PreviewTemplate>,
    class: Option<&PreviewClass>,
) -> Result<String, RenderError> {
    let mut pe = pe.clone();
    let tenant = pe.namespace().unwrap_or_else(|| "default".to_string());
    pe.metadata.namespace = Some(tenant.clone());
    if pe.metadata.uid.is_none() {
        pe.metadata.uid = Some(NO_UID.to_string());
    }
    check_template_file(&pe, template)?;
    // The class given is the class: the preview names it, whatever its default annotation.
    let classes = match class {
        Some(class) => {
            pe.spec.preview_class_name = Some(class.name_any());
            Classes::Cluster(vec![Arc::new(class.clone())])
        }
        None => Classes::Defaults,
    };
    // As the chart runs it: with the role Flux applies with (named after the release).
    let defaults = Config {
        flux_applier_role: Some("preview-operator-flux-applier".to_string()),
        ..Config::default()
    };
    let snapshot = Snapshot {
        defaults: &defaults,
        classes,
        template: template.map(|t| Arc::new(t.clone())),
        tenant_labels: Default::default(),
        peers: Vec::new(),
        scm: None,
        flux_installed: true,
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    // The operator's own plan: the class admits the namespace and repository before the
    // template is rendered, then what it renders.
    let plan = plan::plan(&pe, &snapshot)
        .map_err(|_| RenderError::Input("the preview has no name".into()))?;
    if let Some(gate) = &plan.gate {
        return Err(refused(gate));
    }
    let (rendered, config, preview) = (&plan.rendered, &plan.policy.config, plan.preview());
    let mut out = Output {
        text: String::new(),
        format,
    };
    out.comment(&format!(
        "preview {tenant}/{} in namespace {}{}",
        pe.name_any(),
        preview.namespace,
        class.map_or(String::new(), |c| format!(
            ", admitted by PreviewClass {}",
            c.name_any()
        ))
    ));
    out.object(&build::namespace(&preview, config))?;
    out.copies(config, rendered, &tenant);
    out.environment(&preview, config)?;
    Ok(out.text)
}

/// The `--template` file must be the template the preview names: what `render` is given,
/// said in terms of its arguments.
fn check_template_file(
    pe: &PreviewEnvironment,
    template: Option<&PreviewTemplate>,
) -> Result<(), RenderError> {
    let Some(wanted) = &pe.spec.template_ref else {
        return Ok(());
    };
    let Some(template) = template else {
        return Err(RenderError::Input(format!(
            "spec.templateRef names PreviewTemplate {}: pass its file with --template",
            wanted.name
        )));
    };
    if template.name_any() != wanted.name {
        return Err(RenderError::Refused {
            reason: Reason::TemplateNotFound,
            message: format!(
                "the preview names PreviewTemplate {}, the --template file holds {}",
                wanted.name,
                template.name_any()
            ),
        });
    }
    Ok(())
}

/// The reason and message the preview would show for the plan's closed `gate`.
fn refused(gate: &Gate) -> RenderError {
    let (reason, message) = match gate {
        Gate::NotAdmitted { reason, message } | Gate::Blocked { reason, message } => {
            (*reason, message.clone())
        }
        Gate::PolicyViolation(message) => (Reason::PolicyViolation, message.clone()),
        other => (Reason::PolicyViolation, format!("{other:?}")),
    };
    RenderError::Refused { reason, message }
}

/// The objects being written.
struct Output {
    text: String,
    format: Format,
}

impl Output {
    /// Comments naming the Secrets and ConfigMaps the operator copies into the namespace
    /// (their contents are not the render's to print).
    fn copies(&mut self, config: &Config, rendered: &Rendered, tenant: &str) {
        for name in config.copied_secrets() {
            self.comment(&format!(
                "Secret {name}: copied from the platform Secrets namespace (PreviewClass)"
            ));
        }
        for name in &rendered.secrets {
            self.comment(&format!(
                "Secret {name}: copied from namespace {tenant} (PreviewTemplate)"
            ));
        }
        for name in &rendered.config_maps {
            self.comment(&format!(
                "ConfigMap {name}: copied from namespace {tenant} (PreviewTemplate)"
            ));
        }
    }

    /// Everything in the preview namespace, in the order a rollout brings it: hardening and
    /// bindings, dependencies, Services, setup Jobs, Deployments, Ingresses, what Flux
    /// delivers, the test Jobs.
    fn environment(&mut self, preview: &Preview<'_>, config: &Config) -> Result<(), RenderError> {
        let build::Environment {
            network_policy,
            quota,
            limit_range,
            stateful_sets,
            deployments,
            services,
            ingresses,
            role_bindings,
            held: _,
            delivery,
        } = build::environment(preview, config, Stage::Services);
        self.object(&network_policy)?;
        self.object(&quota)?;
        self.object(&limit_range)?;
        self.objects(&role_bindings)?;
        self.objects(&stateful_sets)?;
        self.objects(&services.objects)?;
        for setup in preview.setup {
            self.object(&build::setup_job(preview, config, setup))?;
        }
        self.objects(&deployments.objects)?;
        self.objects(&ingresses.objects)?;
        if !delivery.is_empty() {
            self.comment(
                "delivered through Flux, as the ServiceAccount below (its RoleBinding is above)",
            );
        }
        self.objects(&delivery.service_accounts.objects)?;
        self.objects(&delivery.git_repositories.objects)?;
        self.objects(&delivery.helm_repositories.objects)?;
        self.objects(&delivery.oci_repositories.objects)?;
        self.objects(&delivery.helm_releases.objects)?;
        self.objects(&delivery.kustomizations.objects)?;
        for test in &preview.spec.tests {
            self.object(&build::test_job(preview, config, test))?;
        }
        Ok(())
    }

    fn comment(&mut self, line: &str) {
        // JSON has no comments; what they name is not an object to create.
        if self.format == Format::Yaml {
            let _ = writeln!(self.text, "# {line}");
        }
    }

    fn object<T: Serialize>(&mut self, object: &T) -> Result<(), RenderError> {
        match self.format {
            Format::Yaml => {
                let yaml = serde_saphyr::to_string(object)
                    .map_err(|e| RenderError::Write(format!("YAML: {e}")))?;
                self.text.push_str("---\n");
                self.text.push_str(&yaml);
            }
            Format::Json => {
                let json = serde_json::to_string(object)
                    .map_err(|e| RenderError::Write(format!("JSON: {e}")))?;
                self.text.push_str(&json);
                self.text.push('\n');
            }
        }
        Ok(())
    }

    fn objects<T: Serialize>(&mut self, objects: &[T]) -> Result<(), RenderError> {
        objects.iter().try_for_each(|o| self.object(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example<K: DeserializeOwned>(file: &str) -> K {
        let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse(file, &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn json_is_one_object_per_line_the_same_objects_as_yaml() {
        let pe: PreviewEnvironment = example("previewenvironment-from-template.yaml");
        let template: PreviewTemplate = example("previewtemplate-shop.yaml");
        let yaml = render(&pe, Some(&template), None).expect("renders");
        let json = render_as(Format::Json, &pe, Some(&template), None).expect("renders");
        let objects: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        let yaml_kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        assert_eq!(kinds, yaml_kinds);
        assert_eq!(objects[0]["kind"], "Namespace");
        assert!(!json.contains("# Secret"), "no comments in JSON");
    }

    #[test]
    fn the_example_template_renders_every_object_in_order() {
        let pe: PreviewEnvironment = example("previewenvironment-from-template.yaml");
        let template: PreviewTemplate = example("previewtemplate-shop.yaml");
        let out = render(&pe, Some(&template), None).expect("renders");
        let kinds: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        let first = |kind: &str| kinds.iter().position(|k| *k == kind);
        assert_eq!(first("Namespace"), Some(0), "{kinds:?}");
        assert!(first("StatefulSet") < first("Job") && first("Job") < first("Deployment"));
        assert!(
            out.contains("# Secret shop-db: copied from namespace team-shop"),
            "{out}"
        );
        assert!(
            out.contains("ghcr.io/acme/shop-web:pr-123-4f2c9e1"),
            "CI's image: {out}"
        );
        assert!(!out.contains("<<"), "everything substituted: {out}");
    }

    #[test]
    fn a_preview_without_its_template_or_with_a_bad_parameter_says_why() {
        let mut pe: PreviewEnvironment = example("previewenvironment-from-template.yaml");
        let template: PreviewTemplate = example("previewtemplate-shop.yaml");
        let err = render(&pe, None, None).expect_err("no template");
        assert!(err.to_string().contains("--template"), "{err}");
        pe.spec.parameters.insert("sed".into(), "x".into());
        let err = render(&pe, Some(&template), None).expect_err("bad parameter");
        assert!(err.to_string().starts_with("TemplateError: "), "{err}");
        assert!(err.to_string().contains("unknown parameter sed"), "{err}");
    }

    #[test]
    fn a_class_that_does_not_bind_the_repository_refuses_it() {
        let pe: PreviewEnvironment = example("preview-minimal.yaml");
        let class: PreviewClass = parse(
            "class.yaml",
            "apiVersion: preview.dev/v1alpha1\nkind: PreviewClass\nmetadata: {name: strict}\n\
             spec: {tenants: [{namespaces: [nobody], repositories: ['*/*']}]}\n",
        )
        .expect("class");
        let err = render(&pe, None, Some(&class)).expect_err("refused");
        assert!(
            err.to_string().starts_with("RepositoryNotAllowed: "),
            "{err}"
        );
        assert!(render(&pe, None, None).is_ok());
    }

    #[test]
    fn an_inline_test_reading_a_secret_renders_nothing() {
        let mut pe: PreviewEnvironment = example("preview-minimal.yaml");
        let mut test: crate::api::TestSpec = serde_json::from_value(serde_json::json!({
            "name": "leak", "image": "busybox:1",
            "env": [{"name": "KEY", "valueFrom":
                {"secretKeyRef": {"name": "preview-wildcard-tls", "key": "tls.key"}}}],
        }))
        .expect("test");
        test.command = vec!["sh".into(), "-c".into(), "echo $KEY".into()];
        pe.spec.tests.push(test);
        let err = render(&pe, None, None).expect_err("refused");
        assert!(err.to_string().starts_with("PolicyViolation: "), "{err}");
        assert!(!err.to_string().contains("secretKeyRef:"), "{err}");
    }

    #[test]
    fn a_template_is_not_rendered_for_a_repository_its_class_refuses() {
        let mut pe: PreviewEnvironment = example("previewenvironment-from-template.yaml");
        pe.spec.parameters.insert("sed".into(), "x".into());
        let template: PreviewTemplate = example("previewtemplate-shop.yaml");
        let class: PreviewClass = parse(
            "class.yaml",
            "apiVersion: preview.dev/v1alpha1\nkind: PreviewClass\nmetadata: {name: strict}\n\
             spec: {tenants: [{namespaces: [nobody], repositories: ['*/*']}]}\n",
        )
        .expect("class");
        // The template has an error, but the class's refusal comes first: nothing is rendered.
        let err = render(&pe, Some(&template), Some(&class)).expect_err("refused");
        assert!(
            err.to_string().starts_with("RepositoryNotAllowed: "),
            "{err}"
        );
    }
}
