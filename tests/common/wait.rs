//! Polling with a deadline: tests never sleep to synchronise, they wait for what they need.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use preview_operator::api::PreviewEnvironment;

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what` and the last
/// observation. Tests never sleep to synchronise; they wait for what they need.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last observed: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until PreviewEnvironment `name` has condition `kind` with `status` (and `reason`, when
/// given) for its current generation, and returns the object.
pub async fn await_condition(
    api: &Api<preview_operator::api::PreviewEnvironment>,
    name: &str,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> preview_operator::api::PreviewEnvironment {
    wait_for(
        &format!("{name} to have {kind}={status} ({reason:?})"),
        timeout,
        || async {
            let pe = api.get(name).await.map_err(|e| e.to_string())?;
            let generation = pe.metadata.generation;
            let found = pe
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
                .cloned();
            match found {
                Some(c)
                    if c.status == status
                        && reason.is_none_or(|r| r == c.reason)
                        && c.observed_generation == generation =>
                {
                    Ok(pe)
                }
                other => Err(format!(
                    "{other:?}, phase {:?}",
                    pe.status.and_then(|s| s.phase)
                )),
            }
        },
    )
    .await
}

/// Waits until `get` finds nothing.
pub async fn await_gone<F, Fut, T>(what: &str, timeout: Duration, get: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, kube::Error>>,
    T: std::fmt::Debug,
{
    let get = std::cell::RefCell::new(get);
    wait_for(&format!("{what} to be gone"), timeout, || async {
        let fut = (get.borrow_mut())();
        match fut.await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// Waits until PreviewEnvironment `name` is Ready (`Ready=True` for its current generation),
/// and returns the object.
pub async fn await_ready(
    api: &Api<PreviewEnvironment>,
    name: &str,
    timeout: Duration,
) -> PreviewEnvironment {
    await_condition(api, name, "Ready", "True", None, timeout).await
}

/// Waits until namespace `ns` holds an Event with `reason`, and returns it. `name`, when given,
/// narrows it to Events about that object; the failure message lists the reasons seen.
pub async fn await_event(
    client: &Client,
    ns: &str,
    name: Option<&str>,
    reason: &str,
    timeout: Duration,
) -> Event {
    let events = Api::<Event>::namespaced(client.clone(), ns);
    wait_for(
        &format!("a {reason} event in {ns} (about {name:?})"),
        timeout,
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let about =
                |e: &Event| name.is_none_or(|n| e.involved_object.name.as_deref() == Some(n));
            list.items
                .iter()
                .find(|e| about(e) && e.reason.as_deref() == Some(reason))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{:?}",
                        list.items
                            .iter()
                            .map(|e| e.reason.clone())
                            .collect::<Vec<_>>()
                    )
                })
        },
    )
    .await
}
