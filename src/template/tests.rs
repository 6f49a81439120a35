//! Unit tests of `template`.

use super::*;
use serde_json::json;

fn template(value: serde_json::Value) -> PreviewTemplateSpec {
    serde_json::from_value(value).expect("template fixture deserializes")
}

fn shop() -> PreviewTemplateSpec {
    template(json!({
        "parameters": [{"name": "seed", "default": "small", "pattern": "^(small|large)$"}],
        "secrets": [{"name": "shop-db"}],
        "configMaps": [{"name": "shop-config"}],
        "dependencies": [{
            "name": "db", "image": "postgres:17", "port": 5432,
            "env": [{"name": "POSTGRES_PASSWORD",
                     "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}],
        }],
        "setup": [{"name": "migrate", "image": "ghcr.io/acme/shop-migrate:<< shortSha >>",
                   "args": ["--seed", "<< params.seed >>"]}],
        "services": [{"name": "web", "image": "ghcr.io/acme/shop-web:<< shortSha >>",
                      "port": 8080,
                      "env": [{"name": "PR", "value": "pr-<< pullRequest >> in << namespace >>"},
                              {"name": "RAW", "value": "{{ not ours }}"}]}],
        "tests": [{"name": "e2e", "image": "ghcr.io/acme/shop-e2e:<< headSha >>"}],
    }))
}

fn preview(extra: serde_json::Value) -> PreviewEnvironmentSpec {
    let mut spec = json!({
        "repository": "acme/shop", "pullRequest": 123, "headSha": "4f2c9e1d00aa",
        "branch": "Feature/Login_Page", "templateRef": {"name": "shop"},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(spec).expect("preview fixture deserializes")
}

const TARGET: Target<'static> = Target {
    name: "shop-pr-123",
    namespace: "pr-shop-pr-123-0123456789abcdef",
    template: "shop",
    host: Some("pr-shop-pr-123-abcdef.preview.example.com"),
};

#[test]
fn every_key_is_substituted_and_other_braces_stay() {
    let r = render(&preview(json!({})), TARGET, &shop()).expect("renders");
    assert_eq!(r.spec.services[0].image, "ghcr.io/acme/shop-web:4f2c9e1");
    assert_eq!(
        r.spec.services[0].env[0].value,
        "pr-123 in pr-shop-pr-123-0123456789abcdef"
    );
    assert_eq!(r.spec.services[0].env[1].value, "{{ not ours }}");
    assert_eq!(r.spec.tests[0].image, "ghcr.io/acme/shop-e2e:4f2c9e1d00aa");
    assert_eq!(r.setup[0].job.args, vec!["--seed", "small"]);
    assert_eq!(r.dependencies[0].image, "postgres:17");
    assert_eq!(r.secrets, vec!["shop-db"]);
    assert_eq!(r.config_maps, vec!["shop-config"]);
    assert_eq!(r.spec.repository, "acme/shop");
}

#[test]
fn parameters_and_images_from_the_preview_win() {
    let r = render(
        &preview(json!({"parameters": {"seed": "large"},
                        "images": {"web": "ghcr.io/acme/shop-web:pr-123", "db": "postgres:16"}})),
        TARGET,
        &shop(),
    )
    .expect("renders");
    assert_eq!(r.setup[0].job.args, vec!["--seed", "large"]);
    assert_eq!(r.spec.services[0].image, "ghcr.io/acme/shop-web:pr-123");
    assert_eq!(r.dependencies[0].image, "postgres:16");
}

#[test]
fn branch_keys_come_from_the_branch() {
    let mut t = shop();
    t.services[0].args = vec!["<< branch >>".into(), "<< branchSlug >>".into()];
    let r = render(&preview(json!({})), TARGET, &t).expect("renders");
    assert_eq!(
        r.spec.services[0].args,
        vec!["Feature/Login_Page", "feature-login-page"]
    );
    let mut no_branch = preview(json!({}));
    no_branch.branch = None;
    let err = render(&no_branch, TARGET, &t).expect_err("branch unset");
    assert!(
        err.0.contains("<< branch >>") && err.0.contains("spec.branch is not set"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_refused_with_its_name_and_place() {
    let mut t = shop();
    t.services[0].args = vec!["<< params.sed >>".into()];
    let err = render(&preview(json!({})), TARGET, &t).expect_err("unknown key");
    assert!(err.0.contains("services[web].args[0]"), "{err}");
    assert!(err.0.contains("<< params.sed >>"), "{err}");
    assert!(err.0.contains("params.seed"), "lists the known keys: {err}");
    t.services[0].args = vec!["<< headsha >>".into()];
    let err = render(&preview(json!({})), TARGET, &t).expect_err("unknown key");
    assert!(err.0.contains("<< headsha >>"), "{err}");
}

#[test]
fn only_keys_are_substituted_never_expressions() {
    for bad in [
        "<< \"x\" * 1000000000 >>",
        "<< branch | upper >>",
        "<< range(10) >>",
        "<< headSha ~ headSha >>",
        "<< params.seed.more >>",
    ] {
        let mut t = shop();
        t.services[0].args = vec![bad.to_string()];
        let err = render(&preview(json!({})), TARGET, &t).expect_err(bad);
        assert!(err.0.contains("is not a key"), "{bad}: {err}");
    }
}

#[test]
fn nothing_but_keys_is_interpreted() {
    // Block, comment and expression syntax of template engines is text here: a template
    // string cannot loop, set variables or call anything.
    let blocks = [
        "<%% for a in headSha %%><%% for b in headSha %%>x<%% endfor %%><%% endfor %%>",
        "<%% set s = 'x' ~ 'x' %%>",
        "<## a comment ##>",
        "{% for a in range(10) %}{{ a }}{% endfor %}",
    ];
    for text in blocks {
        let mut t = shop();
        t.services[0].args = vec![text.to_string(), format!("{text}<< shortSha >>")];
        let r = render(&preview(json!({})), TARGET, &t).expect(text);
        assert_eq!(r.spec.services[0].args[0], text);
        assert_eq!(r.spec.services[0].args[1], format!("{text}4f2c9e1"));
    }
    let mut t = shop();
    t.services[0].args = vec!["<%% set s = 'x' %%><< s >>".into()];
    let err = render(&preview(json!({})), TARGET, &t).expect_err("s is no key");
    assert!(err.0.contains("unknown key << s >>"), "{err}");
}

#[test]
fn the_output_of_one_preview_is_bounded() {
    // 1000 arguments of 100 keys each, every key a 1 KiB parameter: about 100 MiB if
    // rendered, refused as soon as the preview's budget is spent.
    let mut t = shop();
    t.parameters[0].pattern = None;
    t.services[0].args = vec!["<< params.seed >>".repeat(100); 1000];
    let big = "x".repeat(1024);
    let err = render(&preview(json!({"parameters": {"seed": big}})), TARGET, &t)
        .expect_err("over the budget");
    assert!(err.0.contains("renders to more than 1024 KiB"), "{err}");
    assert!(
        err.0.starts_with("services[web].args["),
        "names the place: {err}"
    );
}

#[test]
fn a_broken_template_string_is_refused_with_its_place() {
    let mut t = shop();
    t.tests[0].image = "e2e:<< shortSha".into();
    let err = render(&preview(json!({})), TARGET, &t).expect_err("syntax error");
    assert!(err.0.starts_with("tests[e2e].image:"), "{err}");
}

#[test]
fn unknown_and_invalid_parameters_are_refused_by_name() {
    let err = render(
        &preview(json!({"parameters": {"sed": "x"}})),
        TARGET,
        &shop(),
    )
    .expect_err("unknown parameter");
    assert!(
        err.0.contains("unknown parameter sed") && err.0.contains("seed"),
        "{err}"
    );
    let err = render(
        &preview(json!({"parameters": {"seed": "huge"}})),
        TARGET,
        &shop(),
    )
    .expect_err("pattern");
    assert!(
        err.0.contains("seed") && err.0.contains("^(small|large)$"),
        "{err}"
    );
    let mut t = shop();
    t.parameters[0].default = None;
    let err = render(&preview(json!({})), TARGET, &t).expect_err("no default");
    assert!(err.0.contains("spec.parameters.seed"), "{err}");
}

#[test]
fn images_may_only_name_what_the_template_runs() {
    let err = render(&preview(json!({"images": {"wbe": "x:1"}})), TARGET, &shop())
        .expect_err("unknown image name");
    assert!(err.0.contains("spec.images names wbe"), "{err}");
}

#[test]
fn value_from_may_only_read_declared_sources() {
    let mut t = shop();
    t.secrets.clear();
    let err = render(&preview(json!({})), TARGET, &t).expect_err("undeclared secret");
    assert!(
        err.0.contains("Secret shop-db") && err.0.contains("spec.secrets"),
        "{err}"
    );
}

#[test]
fn slugs_are_dns_labels() {
    assert_eq!(slug("feature/Login--page_"), "feature-login-page");
    assert_eq!(slug(&"a".repeat(80)).len(), 63);
    assert_eq!(slug("--"), "");
}
