//! ① Shutdown: SIGTERM or SIGINT (or a call from a test) starts a graceful drain.

use tokio::sync::watch;

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn os_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() {
                tracing::info!("SIGINT received");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Resolves when the shutdown flag turns true (or its sender is gone).
pub(crate) async fn signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
