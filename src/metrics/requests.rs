//! A tower layer that counts every Kubernetes API request the operator makes, by verb,
//! resource and status code, into [`Metrics`].

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use tower::{Layer, Service};

use super::Metrics;

/// The Kubernetes verb of a request, from its method and query.
pub fn verb(method: &Method, query: Option<&str>, path: &str) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        Method::GET if watching => "watch",
        Method::GET if is_collection(path) => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// The part of a resource path after the group and version and after `namespaces/<ns>`:
/// `/api/v1[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]`, or the same under
/// `/apis/<group>/<version>`.
fn resource_segments(path: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let skip = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return None,
    };
    let mut rest = segments.get(skip..)?.to_vec();
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        rest.drain(..2);
    }
    Some(rest)
}

/// Whether a GET path names a collection (list) rather than one object (get).
fn is_collection(path: &str) -> bool {
    resource_segments(path).is_some_and(|rest| rest.len() == 1)
}

/// The resource a request is about, `<plural>` or `<plural>/<subresource>`: which kinds cost
/// the requests. Bounded: the operator touches about a dozen.
pub fn resource(path: &str) -> String {
    match resource_segments(path).as_deref() {
        Some([plural]) | Some([plural, _]) => (*plural).to_string(),
        Some([plural, _, sub, ..]) => format!("{plural}/{sub}"),
        _ => "other".to_string(),
    }
}

/// A tower layer counting API requests into [`Metrics`].
#[derive(Clone)]
pub struct ApiMetricsLayer {
    metrics: Arc<Metrics>,
}

impl ApiMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ApiMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`ApiMetricsLayer`].
#[derive(Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<Request<B>> for ApiMetricsService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let verb = verb(
            request.method(),
            request.uri().query(),
            request.uri().path(),
        );
        let resource = resource(request.uri().path());
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response.status().as_u16(),
                // No answer at all (connection refused, timeout).
                Err(_) => 0,
            };
            metrics.api_request(verb, &resource, code);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_kubernetes_conventions() {
        let get = Method::GET;
        assert_eq!(
            verb(
                &get,
                Some("watch=true&resourceVersion=1"),
                "/api/v1/namespaces"
            ),
            "watch"
        );
        assert_eq!(
            verb(&get, Some("labelSelector=a"), "/api/v1/namespaces"),
            "list"
        );
        assert_eq!(verb(&get, None, "/api/v1/namespaces/pr-x"), "get");
        assert_eq!(
            verb(&get, None, "/apis/apps/v1/namespaces/pr-x/deployments"),
            "list"
        );
        assert_eq!(
            verb(
                &get,
                None,
                "/apis/preview.dev/v1alpha1/namespaces/t/previewenvironments/pods"
            ),
            "get"
        );
        assert_eq!(
            verb(&get, None, "/apis/preview.dev/v1alpha1/previewenvironments"),
            "list"
        );
        assert_eq!(verb(&Method::PATCH, None, "/x"), "patch");
        assert_eq!(verb(&Method::POST, None, "/x"), "create");
        assert_eq!(verb(&Method::DELETE, None, "/x"), "delete");
    }

    #[test]
    fn requests_are_counted_by_resource() {
        assert_eq!(resource("/api/v1/namespaces"), "namespaces");
        assert_eq!(resource("/api/v1/namespaces/pr-x"), "namespaces");
        assert_eq!(
            resource("/apis/apps/v1/namespaces/pr-x/deployments/web"),
            "deployments"
        );
        assert_eq!(
            resource("/apis/preview.dev/v1alpha1/namespaces/t/previewenvironments/a/status"),
            "previewenvironments/status"
        );
        assert_eq!(resource("/apis/batch/v1/jobs"), "jobs");
        assert_eq!(resource("/version"), "other");
    }
}
