//! A store's metrics and health over HTTP (feature `prometheus`), for Prometheus to scrape and
//! for a liveness or readiness probe:
//!
//! - `GET /metrics`: every metric of [`crate::exposition`], from one
//!   [`PersistenceProvider::metrics`] snapshot and one health check per scrape;
//! - `GET /healthz`: `200` when the store is healthy or degraded (it serves; the reason says
//!   what needs attention), `503` when it is unhealthy, with a JSON body
//!   `{"status": "healthy" | "degraded" | "unhealthy", "reason": ...}`.
//!
//! The CLI serves a store it opens itself with `orbit-persistence serve-metrics`; an
//! application serves its own store with [`serve`] or mounts [`router`] in its own server.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use orbit_persistence_core::{PersistenceProvider, ProviderHealth, exposition};

/// What the handlers serve.
#[derive(Clone)]
struct Served {
    store: Arc<dyn PersistenceProvider>,
    backend: Arc<str>,
}

/// The routes `/metrics` and `/healthz` for `store`, whose metrics are labelled
/// `backend="<backend>"`.
pub fn router(store: Arc<dyn PersistenceProvider>, backend: &str) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Served {
            store,
            backend: Arc::from(backend),
        })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn PersistenceProvider>,
    backend: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, backend))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(served): State<Served>) -> Response {
    let (metrics, health) = (
        served.store.metrics().await,
        served.store.health_check().await,
    );
    match exposition::encode(&served.backend, &metrics, &health) {
        Ok(text) => ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

async fn healthz(State(served): State<Served>) -> Response {
    let health = served.store.health_check().await;
    // A degraded store still serves: only an unhealthy one fails the probe.
    let code = match health {
        ProviderHealth::Unhealthy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let body = match health.reason() {
        Some(reason) => serde_json::json!({"status": health.status(), "reason": reason}),
        None => serde_json::json!({"status": health.status()}),
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}
