//! Admission: the CRD installs on a real API server and enforces every rule of the spec
//! (OpenAPI bounds, patterns, CEL), so a bad spec is refused with a message that says what to
//! fix, and `kubectl get` shows the printer columns.

mod common;

use common::{TestNamespace, client, install_crd, kubectl};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use preview_operator::api::PreviewEnvironment;
use serde_json::{Value, json};

fn valid_spec() -> Value {
    common::spec("acme/shop", 123, "4f2c9e1d")
        .services(json!([
            {"name": "web", "image": "ghcr.io/acme/shop-web:4f2c9e1", "port": 8080, "expose": true},
            {"name": "worker", "image": "ghcr.io/acme/shop-worker:4f2c9e1"}
        ]))
        .tests(json!([{"name": "e2e", "image": "ghcr.io/acme/shop-e2e:4f2c9e1"}]))
        .json()
}

fn preview(name: &str, spec: Value) -> PreviewEnvironment {
    common::Spec(spec).named(name)
}

/// Posts raw JSON, so specs the typed struct could not even represent are tested too.
async fn create_raw(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<(), String> {
    create_kind(
        client,
        ns,
        ("PreviewEnvironment", "previewenvironments"),
        name,
        spec,
    )
    .await
}

/// Posts a `kind` (its kind and plural) unchecked by the client, so admission says what is wrong.
async fn create_kind(
    client: &kube::Client,
    ns: &str,
    (kind, plural): (&str, &str),
    name: &str,
    spec: Value,
) -> Result<(), String> {
    let body = json!({
        "apiVersion": "preview.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    });
    let request = http::Request::post(format!(
        "/apis/preview.dev/v1alpha1/namespaces/{ns}/{plural}"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
    .map_err(|e| e.to_string())?;
    client
        .request::<Value>(request)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn with(mut spec: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut spec);
    spec
}

fn services(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"name": format!("svc{i}"), "image": "img:1"}))
            .collect(),
    )
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn the_crd_installs_and_is_established() {
    let client = client().await;
    let crd = install_crd(&client).await;
    assert_eq!(crd.spec.group, "preview.dev");
    let short = crd.spec.names.short_names.unwrap_or_default();
    assert!(short.contains(&"previewenv".to_string()) && short.contains(&"pe".to_string()));
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn invalid_specs_are_refused_with_a_message_that_names_the_problem() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "rig-admission").await;

    // (what is wrong, spec, every piece the API server's message must contain)
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "missing repository",
            with(valid_spec(), |s| {
                s.as_object_mut().map(|o| o.remove("repository"));
            }),
            vec!["spec.repository", "Required value"],
        ),
        (
            "repository without owner",
            with(valid_spec(), |s| s["repository"] = json!("shop")),
            vec!["spec.repository", "should match"],
        ),
        (
            "an image name with capitals",
            with(valid_spec(), |s| {
                s["services"][0]["image"] = json!("ghcr.io/Acme/web:V1")
            }),
            vec!["spec.services[0]", "image names are lowercase"],
        ),
        (
            "a test image name with capitals",
            with(valid_spec(), |s| {
                s["tests"][0]["image"] = json!("ghcr.io/acme/E2E:1")
            }),
            vec!["spec.tests[0]", "image names are lowercase"],
        ),
        (
            "too many pod annotations",
            with(valid_spec(), |s| {
                let many: serde_json::Map<String, Value> =
                    (0..17).map(|i| (format!("a{i}"), json!("x"))).collect();
                s["services"][0]["podAnnotations"] = Value::Object(many);
            }),
            vec!["podAnnotations", "16"],
        ),
        (
            "an oversized pod annotation value",
            with(valid_spec(), |s| {
                s["tests"][0]["podAnnotations"] = json!({"a": "x".repeat(1025)});
            }),
            vec!["podAnnotations", "at most 1024"],
        ),
        (
            "an oversized argument",
            with(valid_spec(), |s| {
                s["services"][0]["args"] = json!(["x".repeat(1025)])
            }),
            vec!["args", "1024"],
        ),
        (
            "an oversized env value",
            with(valid_spec(), |s| {
                s["services"][0]["env"] = json!([{"name": "BIG", "value": "x".repeat(2049)}]);
            }),
            vec!["env", "2048"],
        ),
        (
            "pull request zero",
            with(valid_spec(), |s| s["pullRequest"] = json!(0)),
            vec!["spec.pullRequest", "greater than or equal to 1"],
        ),
        (
            "pull request not a number",
            with(valid_spec(), |s| s["pullRequest"] = json!("123")),
            vec!["spec.pullRequest", "must be of type integer"],
        ),
        (
            "head sha in upper case",
            with(valid_spec(), |s| s["headSha"] = json!("4F2C9E1D")),
            vec!["spec.headSha", "should match"],
        ),
        (
            "head sha too short",
            with(valid_spec(), |s| s["headSha"] = json!("4f2c9e")),
            vec!["spec.headSha", "at least 7 chars long"],
        ),
        (
            "head sha too long",
            with(valid_spec(), |s| s["headSha"] = json!("a".repeat(41))),
            vec!["spec.headSha", "Too long"],
        ),
        (
            "no services",
            with(valid_spec(), |s| s["services"] = json!([])),
            vec!["a preview needs services", "spec.templateRef"],
        ),
        (
            "a template and services",
            with(valid_spec(), |s| s["templateRef"] = json!({"name": "shop"})),
            vec!["spec.templateRef and spec.services/spec.tests are exclusive"],
        ),
        (
            "images without a template",
            with(valid_spec(), |s| s["images"] = json!({"web": "web:2"})),
            vec!["spec.images and spec.parameters need a spec.templateRef"],
        ),
        (
            "a secret reference outside a template",
            with(valid_spec(), |s| {
                s["services"][0]["env"] = json!([{"name": "A",
                    "valueFrom": {"secretKeyRef": {"name": "other-teams", "key": "token"}}}])
            }),
            vec!["env valueFrom needs a PreviewTemplate"],
        ),
        (
            "a test reading the platform's TLS secret",
            with(valid_spec(), |s| {
                s["tests"][0]["env"] = json!([{"name": "KEY",
                    "valueFrom": {"secretKeyRef": {"name": "preview-wildcard-tls", "key": "tls.key"}}}])
            }),
            vec!["env valueFrom needs a PreviewTemplate", "move the tests"],
        ),
        (
            "a repository with a dot-dot segment",
            with(valid_spec(), |s| s["repository"] = json!("acme/..")),
            vec!["repository path segments may not be . or .."],
        ),
        (
            "too many services",
            with(valid_spec(), |s| s["services"] = services(21)),
            vec!["spec.services", "must have at most 20 items"],
        ),
        (
            "duplicate service names",
            with(valid_spec(), |s| s["services"][1]["name"] = json!("web")),
            vec!["spec.services", "service names must be unique"],
        ),
        (
            "service name not a DNS label",
            with(valid_spec(), |s| s["services"][0]["name"] = json!("Web_1")),
            vec!["spec.services[0].name", "should match"],
        ),
        (
            "service name longer than 30",
            with(valid_spec(), |s| {
                s["services"][0]["name"] = json!("a".repeat(31))
            }),
            vec!["spec.services[0].name", "Too long"],
        ),
        (
            "expose without port",
            with(valid_spec(), |s| {
                s["services"][1]["expose"] = json!(true);
            }),
            vec!["spec.services[1]", "expose: true needs a port"],
        ),
        (
            "readiness path without port",
            with(valid_spec(), |s| {
                s["services"][1]["readinessPath"] = json!("/healthz");
            }),
            vec!["spec.services[1]", "readinessPath needs a port"],
        ),
        (
            "port out of range",
            with(valid_spec(), |s| s["services"][0]["port"] = json!(70000)),
            vec!["spec.services[0].port", "less than or equal to 65535"],
        ),
        (
            "too many replicas",
            with(valid_spec(), |s| s["services"][0]["replicas"] = json!(11)),
            vec!["spec.services[0].replicas", "less than or equal to 10"],
        ),
        (
            "image with a space",
            with(valid_spec(), |s| {
                s["services"][0]["image"] = json!("web latest")
            }),
            vec!["spec.services[0].image", "should match"],
        ),
        (
            "ttl that does not parse",
            with(valid_spec(), |s| s["ttl"] = json!("3 days")),
            vec!["spec.ttl", "should match"],
        ),
        (
            "ttl of zero",
            with(valid_spec(), |s| s["ttl"] = json!("0h")),
            vec!["spec.ttl", "ttl must be a positive duration"],
        ),
        (
            "duplicate test names",
            with(valid_spec(), |s| {
                s["tests"] =
                    json!([{"name": "e2e", "image": "a:1"}, {"name": "e2e", "image": "b:1"}]);
            }),
            vec!["spec.tests", "test names must be unique"],
        ),
        (
            "too many tests",
            with(valid_spec(), |s| {
                s["tests"] = Value::Array(
                    (0..11)
                        .map(|i| json!({"name": format!("t{i}"), "image": "t:1"}))
                        .collect(),
                );
            }),
            vec!["spec.tests", "must have at most 10 items"],
        ),
        (
            "test timeout without unit",
            with(valid_spec(), |s| s["tests"][0]["timeout"] = json!("30")),
            vec!["spec.tests[0].timeout", "should match"],
        ),
        (
            "too many retries",
            with(valid_spec(), |s| s["tests"][0]["retries"] = json!(6)),
            vec!["spec.tests[0].retries", "less than or equal to 5"],
        ),
        (
            "test without image",
            with(valid_spec(), |s| s["tests"] = json!([{"name": "e2e"}])),
            vec!["spec.tests[0].image", "Required value"],
        ),
    ];
    assert!(cases.len() >= 15);

    let mut failures = Vec::new();
    for (i, (what, spec, expected)) in cases.into_iter().enumerate() {
        match create_raw(&client, &ns.name, &format!("bad-{i}"), spec).await {
            Ok(()) => failures.push(format!("{what}: accepted, but must be refused")),
            Err(message) => {
                let missing: Vec<_> = expected.iter().filter(|e| !message.contains(**e)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{what}: message lacks {missing:?}: {message}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "admission gaps:\n{}",
        failures.join("\n")
    );

    // Nothing was created by any refused request.
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns.name);
    let left = api.list(&ListParams::default()).await.expect("list");
    assert!(left.items.is_empty(), "refused specs left objects behind");
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn invalid_templates_are_refused_with_a_message_that_names_the_problem() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "rig-admission-tpl").await;
    let valid = common::shop_template();
    create_kind(&client, &ns.name, TEMPLATE, "good", valid.clone())
        .await
        .expect("the shop template is valid");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a dependency named like a service",
            with(valid.clone(), |t| {
                t["dependencies"][0]["name"] = json!("web")
            }),
            "a dependency and a service may not share a name",
        ),
        (
            "a setup image name with capitals",
            with(valid.clone(), |t| {
                t["setup"][0]["image"] = json!("ghcr.io/Acme/migrate:<< shortSha >>")
            }),
            "image names are lowercase",
        ),
        (
            "two readiness checks",
            with(valid.clone(), |t| {
                t["dependencies"][0]["readiness"] = json!({"tcpSocket": true, "httpPath": "/"})
            }),
            "readiness needs exactly one of",
        ),
        (
            "a value and a valueFrom",
            with(valid.clone(), |t| {
                t["services"][0]["env"][0]["value"] = json!("x")
            }),
            "set value or valueFrom, not both",
        ),
        (
            "a test named like a setup Job",
            with(valid.clone(), |t| {
                t["tests"][0]["name"] = json!("setup-migrate")
            }),
            "test names may not start with setup-",
        ),
        (
            "a parameter with spaces",
            with(valid.clone(), |t| {
                t["parameters"][0]["name"] = json!("the seed")
            }),
            "spec.parameters[0].name",
        ),
        (
            "no services",
            with(valid, |t| t["services"] = json!([])),
            "a template needs services, helmReleases or kustomizations",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, spec, expected)) in cases.into_iter().enumerate() {
        match create_kind(&client, &ns.name, TEMPLATE, &format!("bad-{i}"), spec).await {
            Ok(()) => failures.push(format!("{what}: accepted, but must be refused")),
            Err(message) if !message.contains(expected) => {
                failures.push(format!("{what}: message lacks {expected:?}: {message}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "admission gaps:\n{}",
        failures.join("\n")
    );
}

const TEMPLATE: (&str, &str) = ("PreviewTemplate", "previewtemplates");

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn valid_specs_are_accepted_and_identity_fields_are_immutable() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "rig-valid").await;
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns.name);

    let full = with(valid_spec(), |s| {
        s["branch"] = json!("feature/login");
        s["ttl"] = json!("1d12h");
        s["headSha"] = json!("4f2c9e1d4f2c9e1d4f2c9e1d4f2c9e1d4f2c9e1d");
        s["services"][0]["replicas"] = json!(0);
        s["services"][0]["readinessPath"] = json!("/healthz");
        s["services"][0]["command"] = json!(["/bin/web"]);
        s["services"][0]["args"] = json!(["--port", "8080"]);
        s["services"][0]["env"] = json!([{"name": "MODE", "value": "preview"}]);
        s["services"][0]["resources"] = json!({"requests": {"cpu": "100m", "memory": "64Mi"}});
        s["services"][0]["podAnnotations"] = json!({"example.com/team": "shop"});
        s["tests"][0]["timeout"] = json!("1h30m");
        s["tests"][0]["retries"] = json!(2);
    });
    for (name, spec) in [
        (
            "minimal",
            json!({"repository": "a/b", "pullRequest": 1, "headSha": "abcdef0",
                           "services": [{"name": "s", "image": "i"}]}),
        ),
        ("full", full),
        (
            "twenty-services",
            with(valid_spec(), |s| s["services"] = services(20)),
        ),
    ] {
        api.create(&PostParams::default(), &preview(name, spec))
            .await
            .unwrap_or_else(|e| panic!("valid spec {name} was refused: {e}"));
    }
    let stored = api.get("minimal").await.expect("get minimal");
    assert_eq!(
        stored.spec.services[0].replicas, 1,
        "replicas defaults to 1"
    );

    // Merge patches, not get-and-replace: a running operator may update the object in between
    // (finalizer, status), and the test is about admission, not optimistic concurrency.
    let patch = |spec: Value| Patch::Merge(json!({"spec": spec}));
    let err = api
        .patch(
            "full",
            &PatchParams::default(),
            &patch(json!({"repository": "acme/other"})),
        )
        .await
        .expect_err("changing the repository must be refused");
    assert!(err.to_string().contains("repository is immutable"), "{err}");
    api.patch(
        "full",
        &PatchParams::default(),
        &patch(json!({"headSha": "0123456"})),
    )
    .await
    .expect("a new headSha is an ordinary update");
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn kubectl_get_shows_the_printer_columns() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "rig-columns").await;
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &preview("shop-pr-123", valid_spec()),
    )
    .await
    .expect("create");

    let (ok, out, err) = kubectl(&["get", "previewenv", "-n", &ns.name]);
    assert!(ok, "kubectl get previewenv failed: {err}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PR", "PHASE", "TESTS", "URL", "EXPIRES", "AGE"],
        "{out}"
    );
    assert!(out.contains("shop-pr-123") && out.contains("123"), "{out}");

    let (ok, out, err) = kubectl(&["get", "pe", "-o", "wide", "-n", &ns.name]);
    assert!(ok, "kubectl get pe -o wide failed: {err}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PR",
            "PHASE",
            "TESTS",
            "URL",
            "EXPIRES",
            "AGE",
            "REPOSITORY",
            "SHA",
            "NAMESPACE"
        ],
        "{out}"
    );
    assert!(
        out.contains("acme/shop") && out.contains("4f2c9e1d"),
        "{out}"
    );
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn absurd_storage_sizes_and_oversized_specs_are_refused() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "rig-admission-size").await;
    let with_storage = |size: &str| {
        with(common::shop_template(), |t| {
            t["dependencies"][0]["storage"] = json!({"size": size})
        })
    };
    // A spec at the text budget passes; one character more does not.
    let at_budget = |extra: usize| {
        with(valid_spec(), |s| {
            let mut args = vec![json!("x".repeat(1024)); 32];
            args[0] = json!("x".repeat(1024 - 2 + extra));
            s["services"] = json!([{"name": "web", "image": "w:1", "args": args}]);
            s["tests"] = json!([{"name": "e2e", "image": "t:1", "args": ["ab"]}]);
        })
    };
    create_raw(&client, &ns.name, "at-budget", at_budget(0))
        .await
        .expect("a spec at its text budget is accepted");
    create_kind(
        &client,
        &ns.name,
        TEMPLATE,
        "one-terabyte",
        with_storage("1Ti"),
    )
    .await
    .expect("1Ti of storage passes admission (the class may allow less)");
    let storage = "storage.size must be a quantity from 1 byte to 1Ti";
    let budget = "may hold at most 32768 characters together";
    let cases: Vec<(&str, (&str, &str), Value, &str)> = vec![
        ("exabytes", TEMPLATE, with_storage("999999Ei"), storage),
        ("petabytes", TEMPLATE, with_storage("1Pi"), storage),
        (
            "gibibytes above a terabyte",
            TEMPLATE,
            with_storage("999999Gi"),
            storage,
        ),
        ("no storage", TEMPLATE, with_storage("0"), storage),
        (
            "one character over the text budget",
            PREVIEW,
            at_budget(1),
            budget,
        ),
        (
            "the issue's 1.3 MiB spec",
            PREVIEW,
            with(valid_spec(), |s| {
                s["services"] = Value::Array(
                    (0..20)
                        .map(|i| {
                            json!({"name": format!("s{i}"), "image": "w:1",
                                        "args": vec!["x".repeat(1024); 32]})
                        })
                        .collect(),
                )
            }),
            budget,
        ),
        (
            "a template over its text budget",
            TEMPLATE,
            with(common::shop_template(), |t| {
                t["setup"][0]["args"] = json!(vec!["x".repeat(1024); 32]);
                t["tests"][0]["args"] = json!(vec!["x".repeat(1024); 32]);
                t["services"][0]["args"] = json!(vec!["x".repeat(1024); 1]);
            }),
            "may hold at most 65536 characters together",
        ),
        (
            "a quantity that is not one",
            PREVIEW,
            with(valid_spec(), |s| {
                s["services"][0]["resources"] = json!({"limits": {"cpu": "lots"}})
            }),
            "resources.limits.cpu",
        ),
        (
            "too many resources",
            PREVIEW,
            with(valid_spec(), |s| {
                let many: serde_json::Map<String, Value> =
                    (0..7).map(|i| (format!("r{i}"), json!("1"))).collect();
                s["services"][0]["resources"] = json!({"requests": many})
            }),
            "must have at most 6 items",
        ),
        (
            "too many arguments",
            PREVIEW,
            with(valid_spec(), |s| {
                s["services"][0]["args"] = json!(vec!["x"; 33])
            }),
            "must have at most 32 items",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, kind, spec, expected)) in cases.into_iter().enumerate() {
        match create_kind(&client, &ns.name, kind, &format!("bad-{i}"), spec).await {
            Ok(()) => failures.push(format!("{what}: accepted, but must be refused")),
            Err(message) if !message.contains(expected) => {
                failures.push(format!("{what}: message lacks {expected:?}: {message}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "admission gaps:\n{}",
        failures.join("\n")
    );
}

const PREVIEW: (&str, &str) = ("PreviewEnvironment", "previewenvironments");
