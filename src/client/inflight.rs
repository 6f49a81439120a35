//! A bound on the operator's API requests in flight.
//!
//! A flood of new previews (16 reconciles at once, each creating half a dozen children
//! concurrently) would put about a hundred requests before the API server at once. A 2-core
//! API server does not serve more than a few dozen faster than it would serve them in turn,
//! so the surplus waited there anyway, each holding buffers on both ends (and, when the client
//! still spoke HTTP/1.1, a TLS connection each: 133 open descriptors at 1000 previews, 69 with
//! this bound); here it waits as a queued future. The requests share one HTTP/2 connection
//! now (`connection`), whose streams the bound also keeps well under the API server's limit
//! per connection (100). Watches and other long-lived requests are exempt (and run on
//! connections of their own): there is one per cached kind, each runs for as long as the
//! operator does, and a bounded pool would let them starve the reconciles. So is the
//! leader's Lease: a renewal queued behind a flood could miss the lease's deadline, and a
//! lost lease stops every reconcile.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

/// Requests in flight at most, watches aside: twice the reconciles that run at once, which
/// keeps every reconcile's children going while a 2-core API server is saturated.
pub const MAX_IN_FLIGHT: usize = 32;

/// A tower layer that lets at most `max` requests hold a connection at once; see the module.
#[derive(Clone)]
pub struct InFlightLayer {
    permits: Arc<Semaphore>,
}

impl InFlightLayer {
    pub fn new(max: usize) -> Self {
        InFlightLayer {
            permits: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See [`InFlightLayer`].
pub struct InFlight<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B, RB> Service<Request<B>> for InFlight<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Held<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The permit is waited for in the answer's future, before that polls the inner one:
        // the client sends nothing until its future is polled, and only here is it known
        // whether the request is exempt (readiness comes before the request).
        let permit = (!exempt(&request)).then(|| self.permits.clone().acquire_owned());
        let future = self.inner.call(request);
        Box::pin(async move {
            // An error only once the semaphore is closed, which nothing does.
            let permit = match permit {
                Some(waiting) => waiting.await.ok(),
                None => None,
            };
            let response = future.await?;
            Ok(response.map(|body| Held::new(body, permit)))
        })
    }
}

/// A watch or a followed log (open as long as their reader wants), or a Lease (see the module):
/// the Lease told by the API group, not by a path segment a namespace or object could also be
/// named.
fn exempt<B>(request: &Request<B>) -> bool {
    super::connection::long_lived(request)
        || request
            .uri()
            .path()
            .starts_with("/apis/coordination.k8s.io/")
}

/// A response body that keeps its request's permit until it is read to the end or dropped:
/// the connection (or, for a watch, its stream on a connection: `connection::Watches`) is busy
/// until then.
pub struct Held<B> {
    body: B,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B> Held<B> {
    pub(super) fn new(body: B, permit: Option<OwnedSemaphorePermit>) -> Self {
        Held { body, permit }
    }
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() {
            this.permit = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use futures::FutureExt;
    use http_body_util::{BodyExt, Full};

    type Answer = Response<Full<bytes::Bytes>>;
    type Answered = std::future::Ready<Result<Answer, Infallible>>;

    /// A service that answers every request at once with a two-byte body.
    fn echo() -> impl Service<Request<()>, Response = Answer, Error = Infallible, Future = Answered>
    {
        tower::service_fn(|_: Request<()>| {
            std::future::ready(Ok(Response::new(Full::new(bytes::Bytes::from_static(
                b"ok",
            )))))
        })
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).expect("request")
    }

    #[tokio::test]
    async fn a_request_holds_its_permit_until_its_body_is_read() {
        let mut service = InFlightLayer::new(1).layer(echo());
        let first = service
            .call(get("/api/v1/namespaces"))
            .await
            .expect("answer");
        let mut second = service.call(get("/api/v1/namespaces/a"));
        assert!(
            futures::poll!(&mut second).is_pending(),
            "a second request waits while the first answer is unread"
        );
        let body = first.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        assert!(
            second.now_or_never().is_some(),
            "the permit is back once the body is read"
        );
    }

    #[tokio::test]
    async fn watches_and_lease_renewals_pass_a_full_pool() {
        let mut service = InFlightLayer::new(1).layer(echo());
        let held = service
            .call(get("/api/v1/namespaces/a"))
            .await
            .expect("answer");
        for exempt in [
            "/api/v1/namespaces?labelSelector=a&watch=true&timeoutSeconds=290",
            "/apis/coordination.k8s.io/v1/namespaces/preview-system/leases/preview-operator",
        ] {
            assert!(
                service.call(get(exempt)).now_or_never().is_some(),
                "{exempt} does not wait"
            );
        }
        for bound in [
            "/api/v1/namespaces/b",
            "/api/v1/namespaces/leases/services/web",
        ] {
            assert!(
                service.call(get(bound)).now_or_never().is_none(),
                "{bound} waits"
            );
        }
        drop(held);
    }

    #[tokio::test]
    async fn a_dropped_answer_gives_its_permit_back() {
        let mut service = InFlightLayer::new(1).layer(echo());
        let answer = service
            .call(get("/api/v1/namespaces/a"))
            .await
            .expect("answer");
        drop(answer);
        assert!(
            service
                .call(get("/api/v1/namespaces/b"))
                .now_or_never()
                .is_some()
        );
    }
}
