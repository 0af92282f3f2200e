//! Stopping a long-running command (`serve-metrics`, `k8s operator`) cleanly.

/// A future that completes at the first SIGTERM or Ctrl-C (SIGINT). The handlers are
/// installed when this is called, so a signal from then on is a clean stop, never the
/// default kill.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}
