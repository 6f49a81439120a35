//! The connections to the API server: one HTTP/2 connection for every request, and an
//! HTTP/1.1 connection of its own for every watch.
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
//! Watches (and followed logs) do not share it. kube-apiserver serves at most 100 streams on
//! one HTTP/2 connection, and a watch holds its stream for minutes: the operator runs a watch
//! per cached kind and two for every team namespace whose templates copy Secrets or
//! ConfigMaps, so with a few dozen such teams the watches alone would take every stream, and
//! every request queued behind them would wait until a watch ended (client-go opens another
//! connection when one is full; hyper's client waits). A watch whose events are read late
//! would also hold the shared connection's flow-control window. So each long-lived request
//! gets an HTTP/1.1 connection, as with kube's stack; the requests' connection carries the 32
//! the in-flight bound lets through (`inflight`) and the leader's Lease.
//!
//! A connection through a proxy is left to kube's stack, which knows the proxy protocols.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use tower::retry::RetryLayer;
use tower::steer::Steer;
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// How often an idle connection is pinged, and how long an answer may take before the
/// connection is taken for dead and every request and watch on it fails over to a new one:
/// client-go's HTTP/2 health check, which replaces HTTP/1.1's read timeout. Tighter than
/// client-go's 30 s and 15 s: everything shares this one connection, the leader's Lease
/// renewal too, and a connection that died silently must be replaced within the lease's
/// 15 s (renewed after 10), not after 45.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive on every connection: probes after this long idle, this often, this many.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// The most a watch connection's read buffer grows to.
const WATCH_READ_BUFFER: usize = 64 * 1024;

/// A pool of connections to the API server.
type Connections = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// The service a [`kube::Client`] is built on (the type kube's own builder makes).
pub type ApiService = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// A client builder for `config` on one multiplexed connection (kube's own stack, HTTP/1.1,
/// when the config names a proxy); layers are added and the client built by the caller.
pub fn builder(config: kube::Config) -> Result<ClientBuilder<ApiService>, kube::Error> {
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config);
    }
    let service = service(&config)?;
    Ok(ClientBuilder::new(service, config.default_namespace))
}

fn service(config: &kube::Config) -> Result<ApiService, kube::Error> {
    // Index 0 the shared HTTP/2 connection, 1 a connection per watch ([`long_lived`]).
    let connections = Steer::new(
        [http_client(config, true)?, http_client(config, false)?],
        |request: &Request<Body>, _: &[_]| usize::from(long_lived(request)),
    );
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

/// A hyper client for the API server: `h2` offered by ALPN (falling back to HTTP/1.1) when
/// `multiplexed`, HTTP/1.1 only otherwise.
fn http_client(config: &kube::Config, multiplexed: bool) -> Result<Connections, kube::Error> {
    let mut http = HttpConnector::new();
    // The cluster URL is usually https: the TLS connector wraps this one.
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    http.set_nodelay(true);
    // A watch's connection may be quiet for minutes; TCP keepalive finds one whose peer is
    // gone (about 25 s), where HTTP/2's pings do that for the shared connection.
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
    let https = if multiplexed {
        https.enable_all_versions().wrap_connector(http)
    } else {
        https.enable_http1().wrap_connector(http)
    };
    let mut builder = HyperClient::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new());
    if multiplexed {
        builder
            .http2_keep_alive_interval(PING_EVERY)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .http2_keep_alive_while_idle(true);
    } else {
        // A watch's read buffer grows with the bursts it reads, by default up to about 400 KiB
        // per connection, and keeps what it grew to; its events are read as they come, and a
        // body of any size still passes in pieces (only a response head must fit).
        builder.http1_max_buf_size(WATCH_READ_BUFFER);
    }
    Ok(builder.build(https))
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
