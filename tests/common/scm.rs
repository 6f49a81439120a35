//! The loopback stand-in for GitHub and GitLab that the SCM tests point an operator at.

/// Serves `app` (a stand-in for GitHub) on a free port of 127.0.0.1 until the test ends, and
/// returns its base URL.
pub async fn serve_locally(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}
