//! A bound on the operator's API requests in flight.
//!
//! kube's client speaks HTTP/1.1 only (kube-rs#1923), so every request in flight holds a TLS
//! connection of its own, with its buffers, and the pool keeps the connection a while after.
//! A flood of new previews (16 reconciles at once, each creating half a dozen children
//! concurrently) opened about a hundred of them, most of the operator's peak memory after its
//! caches. A 2-core API server does not serve more than a few dozen requests at once faster than
//! it would serve them in turn, so the surplus waited there anyway; here it waits without a
//! connection. Watches and other long-lived requests are exempt: each holds its connection for
//! as long as it runs, there is one per cached kind, and a bounded pool would let them starve
//! the reconciles.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
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
            permits: PollSemaphore::new(self.permits.clone()),
            permit: None,
        }
    }
}

/// See [`InFlightLayer`].
pub struct InFlight<S> {
    inner: S,
    permits: PollSemaphore,
    /// Taken when the service is polled ready, handed to the next request.
    permit: Option<OwnedSemaphorePermit>,
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
        if self.permit.is_none() {
            // `None` only once the semaphore is closed, which nothing does.
            self.permit = ready!(self.permits.poll_acquire(cx));
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The permit is taken before the request is known (readiness comes first): a
        // long-lived request gives it back at once.
        let permit = self.permit.take().filter(|_| !long_lived(&request));
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| Held { body, permit }))
        })
    }
}

/// A watch or a followed log: requests that stay open as long as their reader wants.
fn long_lived<B>(request: &Request<B>) -> bool {
    request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|p| matches!(p, "watch=true" | "watch=1" | "follow=true"))
    })
}

/// A response body that keeps its request's permit until it is read to the end or dropped:
/// the connection is busy until then.
pub struct Held<B> {
    body: B,
    permit: Option<OwnedSemaphorePermit>,
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
    use tower::ServiceExt;

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
        let first = (service.ready().await.expect("ready"))
            .call(get("/api/v1/namespaces"))
            .await
            .expect("answer");
        assert!(
            service.ready().now_or_never().is_none(),
            "a second request waits while the first answer is unread"
        );
        let body = first.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        assert!(
            service.ready().now_or_never().is_some(),
            "the permit is back once the body is read"
        );
    }

    #[tokio::test]
    async fn watches_do_not_hold_a_permit() {
        let mut service = InFlightLayer::new(1).layer(echo());
        let watch = (service.ready().await.expect("ready"))
            .call(get(
                "/api/v1/namespaces?labelSelector=a&watch=true&timeoutSeconds=290",
            ))
            .await
            .expect("answer");
        assert!(
            service.ready().now_or_never().is_some(),
            "an open watch leaves the permit to others"
        );
        drop(watch);
    }

    #[tokio::test]
    async fn a_dropped_answer_gives_its_permit_back() {
        let mut service = InFlightLayer::new(1).layer(echo());
        let answer = (service.ready().await.expect("ready"))
            .call(get("/api/v1/namespaces/a"))
            .await
            .expect("answer");
        drop(answer);
        assert!(service.ready().now_or_never().is_some());
    }
}
