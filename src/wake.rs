//! The wake listener (`--wake-addr`): while a preview sleeps, its Ingress routes visitors to
//! the operator, through a Service in the preview namespace. The listener finds the preview by
//! the request's Host (the Ingress host the operator gave it, so no other host can wake it),
//! asks for a wake with the `preview.dev/wake-request` annotation, and answers a page that
//! reloads until the preview's own service answers instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::controller::cached::CachedMeta;
use crate::controller::slim::Keeps;
use crate::controller::store::ChildStore;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{Phase, PreviewEnvironment};
use crate::naming::{self, HOST, WAKE_REQUEST};
use crate::sync::lock;

/// One wake request per preview per this long, however many visitors knock.
const WAKE_EVERY: Duration = Duration::from_secs(10);

/// What the listener reads and writes.
#[derive(Clone)]
pub struct WakeState {
    pub client: Client,
    pub ingresses: ChildStore<CachedMeta<Ingress>>,
    pub previews: Store<PreviewEnvironment>,
    /// When each preview was last asked to wake by this process.
    pub asked: Arc<Mutex<HashMap<ObjectRef<PreviewEnvironment>, Instant>>>,
}

/// Every path of every host answers through [`wake`].
pub fn router(state: WakeState) -> Router {
    Router::new().fallback(wake).with_state(state)
}

async fn wake(State(state): State<WakeState>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
        .unwrap_or_default();
    let Some(key) = preview_at(&state.ingresses, &host) else {
        return (StatusCode::NOT_FOUND, "no preview at this host\n").into_response();
    };
    let Some(pe) = state.previews.get(&key) else {
        return (StatusCode::NOT_FOUND, "no preview at this host\n").into_response();
    };
    let asleep = pe.status.as_ref().and_then(|s| s.phase) == Some(Phase::Sleeping);
    if asleep && due(&state.asked, &key) {
        let value = Timestamp::now().to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {WAKE_REQUEST: value}}});
        let api: Api<PreviewEnvironment> =
            Api::namespaced(state.client.clone(), &pe.namespace().unwrap_or_default());
        match api
            .patch(
                &pe.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => info!(%host, preview = %key, "woken by a visit"),
            Err(error) => {
                // Let the next visitor try again.
                lock(&state.asked).remove(&key);
                warn!(%host, preview = %key, %error, "failed to ask the preview to wake");
            }
        }
    }
    let repository = escape(&pe.spec.repository);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>Starting the preview</title></head>\
         <body><h1>This preview is starting</h1><p>The preview of {repository} pull request \
         #{} was asleep and is waking up; this page reloads until it answers.</p></body></html>\n",
        pe.spec.pull_request
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, "5"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(page),
    )
        .into_response()
}

/// The preview whose Ingress serves `host`.
fn preview_at(
    ingresses: &ChildStore<CachedMeta<Ingress>>,
    host: &str,
) -> Option<ObjectRef<PreviewEnvironment>> {
    if host.is_empty() {
        return None;
    }
    ingresses.state().iter().find_map(|i| {
        (i.kept(HOST) == Some(host)).then_some(())?;
        let (ns, name) = naming::PreviewKey::parts(i.kept(naming::OWNER_REF)?)?;
        Some(ObjectRef::new(name).within(ns))
    })
}

/// Whether this process may ask `key` to wake now, and if so remembers that it did.
fn due(
    asked: &Mutex<HashMap<ObjectRef<PreviewEnvironment>, Instant>>,
    key: &ObjectRef<PreviewEnvironment>,
) -> bool {
    let mut asked = lock(asked);
    let now = Instant::now();
    asked.retain(|_, at| now.duration_since(*at) < WAKE_EVERY);
    if asked.contains_key(key) {
        return false;
    }
    asked.insert(key.clone(), now);
    true
}

/// Text for an HTML page.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_asked_to_wake_at_most_once_in_a_while() {
        let asked = Mutex::default();
        let key = ObjectRef::new("shop").within("team");
        assert!(due(&asked, &key));
        assert!(!due(&asked, &key));
        assert!(due(&asked, &ObjectRef::new("other").within("team")));
    }

    #[test]
    fn page_text_is_escaped() {
        assert_eq!(escape("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}
