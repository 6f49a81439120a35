//! The operator's HTTP listeners: `/metrics` (and, when enabled, the webhooks) on `--http-addr`,
//! `/healthz` and `/readyz` on `--health-addr` (and on `--http-addr` too, for scripts), and the
//! loop that serves every listener, the wake listener included, within [`Limits`].
//!
//! Any pod of the cluster, and through the webhook Ingress anyone, can open connections to
//! these ports. hyper serves a connection that sends nothing for ever and accepts as many as
//! the process has descriptors, so each listener bounds how long a client may take and how
//! many connections it holds, and the probes have a listener of their own: a flood of the
//! webhook port can then neither exhaust the operator's descriptors nor fail its liveness
//! probe.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// True once the controller's caches are synced.
    pub synced: watch::Receiver<bool>,
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if *state.synced.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

/// The router of `--http-addr` without the webhooks. It keeps the probes' paths, which
/// scripts poll there; the kubelet uses [`health_router`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(health_router(state))
}

/// The router of `--health-addr`: `/healthz` and `/readyz` only.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// What one listener lets its clients hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A client must send a request's headers within this long, counted from connecting and,
    /// on a kept-alive connection, from the end of the previous answer: so it is also how
    /// long an idle keep-alive connection stays open. (hyper starts this timer again when a
    /// kept-alive connection goes idle.)
    pub header_read: Duration,
    /// Longest a request may take from its headers to its answer, reading its body included;
    /// a slower one is answered 408.
    pub request: Duration,
    /// After this long a connection is asked to close after its current request, and closed
    /// [`Limits::request`] later whatever it does: a client that never reads its answers
    /// cannot keep one for ever.
    pub lifetime: Duration,
    /// Connections open at once. One more is closed as soon as it is accepted: it frees its
    /// descriptor at once and the client learns at once, instead of waiting in a queue.
    pub connections: usize,
}

impl Limits {
    /// `--http-addr` (metrics, webhooks) and `--wake-addr` (visitors through the ingress
    /// controller, which keeps a few connections to each backend). Prometheus and GitHub
    /// send their request as soon as they connect; webhook bodies are at most a few hundred
    /// KiB.
    pub const WEB: Limits = Limits {
        header_read: Duration::from_secs(10),
        request: Duration::from_secs(30),
        lifetime: Duration::from_secs(300),
        connections: 256,
    };

    /// `--health-addr`: the kubelet connects, asks once and closes; its probe times out after
    /// a second by default.
    pub const HEALTH: Limits = Limits {
        header_read: Duration::from_secs(5),
        request: Duration::from_secs(5),
        lifetime: Duration::from_secs(60),
        connections: 32,
    };
}

/// How long the accept loop pauses after an error such as running out of descriptors, which
/// would otherwise repeat at once in a busy loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning about refused connections per listener this often: a flood must not
/// flood the log too.
const REFUSED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets the
/// open connections finish their requests (at most [`Limits::request`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let router = router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (StatusCode::REQUEST_TIMEOUT, "request took too long\n")
            }))
            .timeout(limits.request),
    );
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let slots = Arc::new(Semaphore::new(limits.connections));
    let (closing_tx, closing) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut refused = Refused::new(addr);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%addr, %error, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        // Forget the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused.note(limits.connections);
            continue;
        };
        connections.spawn(connection(
            http.clone(),
            stream,
            router.clone(),
            limits,
            closing.clone(),
            slot,
        ));
    }
    drop(listener);
    drop(closing_tx);
    // Every connection ends within `request` of the signal; the margin covers the close.
    let drained = tokio::time::timeout(limits.request + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(%addr, open = connections.len(), "shutdown: closing connections still open");
    }
    Ok(())
}

/// One connection, holding its `slot` until it ends. `closing` ends (its sender is dropped)
/// when the listener shuts down.
async fn connection(
    http: http1::Builder,
    stream: TcpStream,
    router: Router,
    limits: Limits,
    mut closing: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
) {
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.lifetime);
    tokio::pin!(deadline);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            // Shutdown or old age: finish the current request, then close.
            _ = closing.changed(), if !draining => {}
            () = &mut deadline => {
                if draining {
                    // Still open `request` after being asked to close: dropping closes it.
                    return;
                }
            }
        }
        conn.as_mut().graceful_shutdown();
        draining = true;
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + limits.request);
    }
}

/// Counts the connections refused over the cap, and warns now and then.
struct Refused {
    addr: std::net::SocketAddr,
    since_warning: u64,
    warned: Option<Instant>,
}

impl Refused {
    fn new(addr: std::net::SocketAddr) -> Self {
        Refused {
            addr,
            since_warning: 0,
            warned: None,
        }
    }

    fn note(&mut self, cap: usize) {
        self.since_warning += 1;
        if self
            .warned
            .is_some_and(|at| at.elapsed() < REFUSED_WARNING_EVERY)
        {
            return;
        }
        warn!(
            addr = %self.addr,
            cap,
            refused = self.since_warning,
            "connections over the cap closed at once (a flood, or a client that keeps too many open)"
        );
        self.since_warning = 0;
        self.warned = Some(Instant::now());
    }
}

/// Binds `addr`, naming the flag that set it when it is taken.
pub async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr} ({flag})"))?;
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, flag, "listening");
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn state() -> AppState {
        AppState {
            metrics: Arc::new(Metrics::new()),
            synced: watch::channel(true).1,
        }
    }

    fn tight(connections: usize) -> Limits {
        Limits {
            header_read: Duration::from_millis(300),
            request: Duration::from_millis(500),
            lifetime: Duration::from_secs(30),
            connections,
        }
    }

    /// Serves `router` on a loopback port until the returned sender is dropped.
    async fn start(
        router: Router,
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    // The crate's tokio has no io-util: reads and writes through readiness.
    async fn read(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            stream.readable().await?;
            match stream.try_read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }

    async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            stream.writable().await?;
            match stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until the server closes the connection, within [`DEADLINE`]; what it sent.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(DEADLINE, read(stream, &mut buf)).await {
                Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&seen).into_owned(),
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Err(_) => panic!("still open after {DEADLINE:?}"),
            }
        }
    }

    /// One GET on a fresh connection; the status code, or None when the server closed it
    /// without an answer.
    async fn fetch(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        write_all(&stream, request.as_bytes()).await.ok()?;
        let answer = until_closed(&mut stream).await;
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    #[tokio::test]
    async fn connections_that_send_no_headers_are_closed_after_the_header_timeout() {
        let limits = tight(16);
        let (addr, _stop, _task) = start(router(state()), limits).await;
        let started = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        for stream in &mut idle {
            assert_eq!(until_closed(stream).await, "", "closed without an answer");
        }
        assert!(
            started.elapsed() >= limits.header_read,
            "closed after {:?}, before the timeout",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_closed_once_idle_for_the_header_timeout() {
        let (addr, _stop, _task) = start(router(state()), tight(4)).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        write_all(&stream, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        let answer = until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(
            answer.ends_with("ok"),
            "one answer, then closed: {answer:?}"
        );
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_answered_408() {
        let slow = Router::new().route("/slow", get(std::future::pending::<&'static str>));
        let (addr, _stop, _task) = start(slow, tight(4)).await;
        assert_eq!(fetch(addr, "/slow").await, Some(408));
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_the_health_listener_still_answers() {
        let cap = 4;
        let limits = Limits {
            header_read: Duration::from_secs(30),
            ..tight(cap)
        };
        let (web, _stop_web, _web_task) = start(router(state()), limits).await;
        let (health, _stop_health, _health_task) =
            start(health_router(state()), Limits::HEALTH).await;
        // The listener accepts in the order clients connected: these hold every slot.
        let mut held = Vec::new();
        for _ in 0..cap {
            held.push(TcpStream::connect(web).await.expect("connect"));
        }
        let started = Instant::now();
        for _ in 0..3 {
            let mut over = TcpStream::connect(web).await.expect("connect");
            assert_eq!(until_closed(&mut over).await, "");
        }
        assert!(
            started.elapsed() < limits.header_read,
            "closed at once, not queued"
        );
        assert_eq!(fetch(web, "/healthz").await, None, "the web port is full");
        assert_eq!(fetch(health, "/healthz").await, Some(200));
        assert_eq!(fetch(health, "/readyz").await, Some(200));
        assert_eq!(fetch(health, "/metrics").await, Some(404));

        // Closing the held connections frees their slots.
        drop(held);
        let deadline = Instant::now() + DEADLINE;
        while fetch(web, "/metrics").await != Some(200) {
            assert!(Instant::now() < deadline, "slots never freed");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_returns() {
        let (addr, stop, task) = start(router(state()), Limits::WEB).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        // Served: the connection has its slot before the listener stops.
        write_all(&idle, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(DEADLINE, read(&idle, &mut buf))
            .await
            .expect("answered")
            .expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        drop(stop);
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("stopped in time")
            .expect("task")
            .expect("served");
        assert_eq!(until_closed(&mut idle).await, "");
    }
}
