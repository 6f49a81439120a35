//! The connections to the API server: one HTTP/2 connection for every request, and as few
//! as carry the watches.
//!
//! kube's own client stack speaks HTTP/1.1 only (kube-rs#1923): every request in flight and
//! every watch holds a TLS connection of its own, with hyper's read buffer, its dispatch
//! channel and rustls' state on each. At 1000 previews that was about 2 MB of the operator's
//! memory for some fifty connections (a watch per cached kind and 32 requests in flight), and
//! as many on the API server's side. Here the requests share one HTTP/2 connection, built from
//! the parts kube builds its own stack from (the base URI, authentication and extra headers
//! layers, the rustls configuration with the cluster's CA and client certificate), offering
//! `h2` and `http/1.1` by ALPN so that a server without HTTP/2 still gets HTTP/1.1.
//!
//! Watches (and followed logs) go on connections of their own, [`WATCHES_PER_CONNECTION`] at
//! most on each. kube-apiserver serves at most 100 streams on one HTTP/2 connection, and a
//! watch holds its stream for minutes: the operator runs a watch per cached kind and two for
//! every team namespace whose templates copy Secrets or ConfigMaps, so with a few dozen such
//! teams one connection would be full, and hyper's client then waits for a free stream where
//! client-go opens another connection. So does [`Watches`]: it counts the watches open on each
//! of its connections and opens another when all are full. A watch whose events are read late
//! holds its connection's flow-control window, which is one more reason the requests (at most
//! 32 in flight, `inflight`, and the leader's Lease) never share a connection with watches.
//!
//! A connection through a proxy is left to kube's stack, which knows the proxy protocols.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::retry::RetryLayer;
use tower::util::BoxService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use super::inflight::Held;
use crate::sync::lock;

/// How often an idle connection is pinged, and how long an answer may take before the
/// connection is taken for dead and every request and watch on it fails over to a new one:
/// client-go's HTTP/2 health check, which replaces HTTP/1.1's read timeout. Tighter than
/// client-go's 30 s and 15 s: the requests share one connection, the leader's Lease renewal
/// too, and a connection that died silently must be replaced within the lease's 15 s
/// (renewed after 10), not after 45.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive on every connection: probes after this long idle, this often, this many
/// (what finds a dead peer when the server answered by ALPN with HTTP/1.1, which has no pings).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// The most an HTTP/1.1 connection's read buffer grows to (when the server offers no HTTP/2).
/// hyper's default grows to about 400 KiB with the bursts a watch reads and keeps what it grew
/// to; events are read as they come, and a body of any size still passes in pieces (only a
/// response head must fit).
const READ_BUFFER: usize = 64 * 1024;
/// Watches on one connection at most: under kube-apiserver's 100 streams per connection
/// (`--http2-max-streams-per-connection`), with room for the odd stream a watch's end and the
/// next one's start overlap on.
pub const WATCHES_PER_CONNECTION: usize = 90;

/// Connections to the API server, as hyper's client pools them: with HTTP/2 one per client.
type Connections = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// The service a [`kube::Client`] is built on (the type kube's own builder makes).
pub type ApiService = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// A client builder for `config` on multiplexed connections (kube's own stack, HTTP/1.1,
/// when the config names a proxy); layers are added and the client built by the caller.
pub fn builder(config: kube::Config) -> Result<ClientBuilder<ApiService>, kube::Error> {
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config);
    }
    let service = service(&config)?;
    Ok(ClientBuilder::new(service, config.default_namespace))
}

fn service(config: &kube::Config) -> Result<ApiService, kube::Error> {
    let connect = Connect::new(config)?;
    let connections = Route {
        requests: connect.open(),
        watches: Watches::new(connect),
    };
    // kube's own stack retries what the API server asks to have retried (429 with
    // Retry-After from priority and fairness, 503), with backoff: so does this one.
    let retry = (config.default_retry).then(|| RetryLayer::new(RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(connections)
        .map_response(|response| {
            response.map(|body| Box::new(body.map_err(BoxError::from)) as Box<DynBody>)
        });
    Ok(BoxService::new(service))
}

/// How a connection to the API server is opened: each [`Connect::open`] makes a client with a
/// pool of its own, so a connection of its own.
#[derive(Clone)]
struct Connect {
    builder: hyper_util::client::legacy::Builder,
    https: hyper_rustls::HttpsConnector<HttpConnector>,
}

impl Connect {
    /// `h2` offered by ALPN, falling back to HTTP/1.1.
    fn new(config: &kube::Config) -> Result<Self, kube::Error> {
        let mut http = HttpConnector::new();
        // The cluster URL is usually https: the TLS connector wraps this one.
        http.enforce_http(false);
        http.set_connect_timeout(config.connect_timeout);
        http.set_nodelay(true);
        http.set_keepalive(Some(KEEPALIVE_IDLE));
        http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
        http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config.rustls_client_config()?)
            .https_or_http();
        let https = match &config.tls_server_name {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                    kube::Error::Service(format!("tls-server-name {name:?}: {e}").into())
                })?;
                https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => https,
        };
        let https = https.enable_all_versions().wrap_connector(http);
        let mut builder = HyperClient::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_keep_alive_interval(PING_EVERY)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .http1_max_buf_size(READ_BUFFER);
        Ok(Connect { builder, https })
    }

    fn open(&self) -> Connections {
        self.builder.build(self.https.clone())
    }
}

/// Requests to the shared connection, watches to [`Watches`].
#[derive(Clone)]
struct Route {
    requests: Connections,
    watches: Watches,
}

type Answer = Result<Response<Held<Incoming>>, hyper_util::client::legacy::Error>;

impl Service<Request<Body>> for Route {
    type Response = Response<Held<Incoming>>;
    type Error = hyper_util::client::legacy::Error;
    type Future = BoxFuture<'static, Answer>;

    // hyper's client is always ready: a request waits for its connection in its future.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (connections, stream) = if long_lived(&request) {
            let (connections, stream) = self.watches.stream();
            (connections, Some(stream))
        } else {
            (self.requests.clone(), None)
        };
        let answer = connections.request(request);
        Box::pin(async move {
            // A watch that fails gives its stream back here, one that runs when its body ends.
            let response = answer.await?;
            Ok(response.map(|body| Held::new(body, stream)))
        })
    }
}

/// The connections watches run on, each with a count of the streams it has left.
#[derive(Clone)]
struct Watches {
    connect: Connect,
    lanes: Arc<Mutex<Vec<Lane>>>,
}

struct Lane {
    connections: Connections,
    streams: Arc<Semaphore>,
}

impl Watches {
    fn new(connect: Connect) -> Self {
        Watches {
            connect,
            lanes: Arc::default(),
        }
    }

    /// A connection with a stream to spare, and that stream: the first such of those open,
    /// else a new one. Connections nothing runs on are closed by hyper's pool when idle, and
    /// opened again with the next watch.
    fn stream(&self) -> (Connections, OwnedSemaphorePermit) {
        let mut lanes = lock(&self.lanes);
        loop {
            let free = lanes.iter().find_map(|lane| {
                let stream = lane.streams.clone().try_acquire_owned().ok()?;
                Some((lane.connections.clone(), stream))
            });
            if let Some(free) = free {
                return free;
            }
            lanes.push(Lane {
                connections: self.connect.open(),
                streams: Arc::new(Semaphore::new(WATCHES_PER_CONNECTION)),
            });
        }
    }

    /// How many connections have been opened for watches.
    #[cfg(test)]
    fn connections(&self) -> usize {
        lock(&self.lanes).len()
    }
}

/// A watch or a followed log: open for as long as its reader wants. Told by the query, not by
/// a path segment a namespace or object could also be named.
pub fn long_lived<B>(request: &Request<B>) -> bool {
    request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|p| matches!(p, "watch=true" | "watch=1" | "follow=true"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watches() -> Watches {
        let config = kube::Config::new("https://127.0.0.1:6443".parse().expect("a URL"));
        Watches::new(Connect::new(&config).expect("a connector"))
    }

    #[test]
    fn watches_fill_a_connection_before_another_is_opened() {
        let watches = watches();
        let mut open: Vec<_> = (0..WATCHES_PER_CONNECTION)
            .map(|_| watches.stream().1)
            .collect();
        assert_eq!(watches.connections(), 1);
        open.push(watches.stream().1);
        assert_eq!(
            watches.connections(),
            2,
            "a full connection gets no more watches"
        );
        // A watch that ends frees its stream for the next one, on the first connection.
        drop(open.swap_remove(0));
        open.push(watches.stream().1);
        assert_eq!(watches.connections(), 2);
        open.push(watches.stream().1);
        assert_eq!(watches.connections(), 2, "the second connection has room");
        drop(open);
        let _again = watches.stream();
        assert_eq!(
            watches.connections(),
            2,
            "connections are kept for the next watches"
        );
    }

    #[test]
    fn long_lived_requests_are_told_by_their_query() {
        for (uri, long) in [
            ("/api/v1/namespaces?watch=true&timeoutSeconds=290", true),
            (
                "/api/v1/namespaces/a/pods/p/log?follow=true&container=c",
                true,
            ),
            ("/api/v1/namespaces?watch=1", true),
            ("/api/v1/namespaces/watch", false),
            ("/api/v1/namespaces?labelSelector=watch%3Dtrue", false),
            ("/api/v1/namespaces?watch=false", false),
        ] {
            let request = Request::get(uri).body(()).expect("a request");
            assert_eq!(long_lived(&request), long, "{uri}");
        }
    }
}
