//! The tenants of a cluster test: a temporary namespace, the running operator's tenant in it,
//! and PreviewClasses that go when the test does.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use preview_operator::api::PreviewEnvironment;

use super::{await_gone, client, install_crd, preview, require_operator, wait_for};

/// A tenant namespace that exists for one test. Deleted when dropped (also when the test
/// panics), without waiting, so a failing test does not leave its objects behind.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"preview.dev/test": "true"}}
        }))
        .expect("namespace object");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("failed to create test namespace {name}: {e}"));
        // Pods cannot be created before the namespace's default ServiceAccount exists.
        let sa_api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(
            "the test namespace's default ServiceAccount",
            Duration::from_secs(30),
            || async {
                match sa_api.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async; kubectl is on PATH in the rig's environment.
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

fn random_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:08x}", hasher.finish() as u32)
}

/// A tenant of the running operator for one test: a client, a temporary tenant namespace
/// and the PreviewEnvironments API in it.
pub struct Tenant {
    pub client: Client,
    pub namespace: TestNamespace,
    pub api: Api<PreviewEnvironment>,
}

impl Tenant {
    /// Needs the operator hack/test.sh starts; installs the CRD and a namespace `<prefix>-…`.
    pub async fn new(prefix: &str) -> Tenant {
        require_operator();
        let client = client().await;
        install_crd(&client).await;
        let namespace = TestNamespace::create(&client, prefix).await;
        let api = Api::namespaced(client.clone(), &namespace.name);
        Tenant {
            client,
            namespace,
            api,
        }
    }

    pub async fn create(&self, name: &str, spec: serde_json::Value) -> PreviewEnvironment {
        self.api
            .create(
                &PostParams::default(),
                &preview(name, serde_json::json!({}), spec),
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// The preview namespace of `name` (the operator runs with the default prefix).
    pub fn preview_ns(&self, name: &str) -> String {
        preview_operator::naming::preview_namespace("pr-", &self.namespace.name, name)
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }

    /// Creates PreviewTemplate `name` in the tenant namespace from `spec` (JSON).
    pub async fn create_template(&self, name: &str, spec: serde_json::Value) {
        let template: preview_operator::api::template::PreviewTemplate =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewTemplate",
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap_or_else(|e| panic!("template fixture {name}: {e}"));
        self.templates()
            .create(&PostParams::default(), &template)
            .await
            .unwrap_or_else(|e| panic!("create template {name}: {e}"));
    }

    pub fn templates(&self) -> Api<preview_operator::api::template::PreviewTemplate> {
        Api::namespaced(self.client.clone(), &self.namespace.name)
    }

    /// Replaces the spec of PreviewTemplate `name` with `spec` (JSON).
    pub async fn set_template(&self, name: &str, spec: serde_json::Value) {
        self.templates()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .unwrap_or_else(|e| panic!("update template {name}: {e}"));
    }

    /// Lets the operator read this namespace's Secrets and ConfigMaps: the one RoleBinding to
    /// the chart's source-reader ClusterRole that the README tells a team to create.
    pub async fn grant_sources(&self) {
        let release =
            std::env::var("PREVIEW_CHART_RELEASE").unwrap_or_else(|_| "preview-operator".into());
        let namespace =
            std::env::var("PREVIEW_CHART_NAMESPACE").unwrap_or_else(|_| "preview-system".into());
        let binding: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "preview-operator-sources"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": format!("{release}-source-reader")},
                "subjects": [{"kind": "ServiceAccount", "name": release, "namespace": namespace}],
            }))
            .expect("role binding fixture");
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(
            self.client.clone(),
            &self.namespace.name,
        )
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("grant the operator the tenant's sources: {e}"));
    }

    /// Creates the Secret `shop-db` and the ConfigMap `shop-config` of [`shop_template`].
    pub async fn create_shop_sources(&self, password: &str) {
        let ns = &self.namespace.name;
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "shop-db"}, "stringData": {"password": password}}),
        )
        .expect("secret fixture");
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret shop-db");
        let map: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "shop-config"}, "data": {"mode": "preview"}}),
        )
        .expect("config map fixture");
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &map)
            .await
            .expect("create config map shop-config");
    }

    /// Deletes `name` and waits until it is gone (the operator's teardown included).
    pub async fn delete_and_wait(&self, name: &str) {
        let timeout = Duration::from_secs(120);
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        let api = self.api.clone();
        await_gone(&format!("preview {name}"), timeout, || api.get_opt(name)).await;
    }
}

/// A PreviewClass for one test, deleted when dropped (also when the test panics).
pub struct TestClass {
    pub name: String,
}

impl TestClass {
    /// Creates PreviewClass `name` with `spec` (JSON as in a manifest).
    pub async fn create(client: &Client, name: &str, spec: serde_json::Value) -> TestClass {
        let class: preview_operator::api::class::PreviewClass =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass",
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap_or_else(|e| panic!("class fixture {name}: {e}"));
        Api::<preview_operator::api::class::PreviewClass>::all(client.clone())
            .create(&PostParams::default(), &class)
            .await
            .unwrap_or_else(|e| panic!("create class {name}: {e}"));
        TestClass {
            name: name.to_string(),
        }
    }
}

impl Drop for TestClass {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "previewclass",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}
