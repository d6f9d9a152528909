//! The REST API (axum): operators' endpoints under `/v1`, the agent's endpoints
//! under `/v1/agent`, the boot script, health, metrics and the OpenAPI document.
//!
//! Handlers never hold SQL: they call the store's typed operations. Every error
//! leaves as `{"error": {"code": "...", "message": "..."}}` with a stable code;
//! malformed bodies are refused before anything is written.

mod agent;
mod bmc;
mod dhcp;
mod error;
mod events;
mod nodes;
pub mod openapi;
pub mod profiles;
mod tokens;
pub mod views;

pub use error::{ApiError, ApiJson};

use crate::store::Role;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Each node's serialized JSON with the generation it was made at.
pub(crate) type NodeJsonCache = HashMap<uuid::Uuid, (i64, Arc<str>)>;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The operations (the store, configuration, counters, BMC drivers and
    /// profiles are reached through it: `app.store`, ...).
    pub core: crate::app::App,
    /// The newest event id known to this process (wakes the live stream).
    pub events_head: watch::Receiver<i64>,
    token_cache: Arc<Mutex<HashMap<String, (Role, Instant)>>>,
    /// Each node's JSON at a generation; exact, since every change bumps it.
    pub(crate) node_json: Arc<Mutex<NodeJsonCache>>,
}

impl std::ops::Deref for AppState {
    type Target = crate::app::App;
    fn deref(&self) -> &crate::app::App {
        &self.core
    }
}

impl AppState {
    pub fn new(core: crate::app::App, events_head: watch::Receiver<i64>) -> Self {
        AppState {
            core,
            events_head,
            token_cache: Arc::default(),
            node_json: Arc::default(),
        }
    }

    async fn role_of(&self, token: &str) -> Result<Option<Role>, ApiError> {
        const TTL: Duration = Duration::from_secs(2);
        if let Some((role, at)) = self
            .token_cache
            .lock()
            .ok()
            .and_then(|c| c.get(token).copied())
            && at.elapsed() < TTL
        {
            return Ok(Some(role));
        }
        let role = self.store.api_token_role(token).await?;
        if let (Some(r), Ok(mut c)) = (role, self.token_cache.lock()) {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(token.to_string(), (r, Instant::now()));
        }
        Ok(role)
    }

    fn forget_tokens(&self) {
        if let Ok(mut c) = self.token_cache.lock() {
            c.clear();
        }
    }
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(req_headers: &axum::http::HeaderMap) -> Option<&str> {
    req_headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Operator auth: any valid token may read; writes and token management need admin.
async fn operator_auth(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return ApiError::unauthorized("send 'Authorization: Bearer <token>' (the first admin token is in the data directory's admin.token)").into_response();
    };
    let role = match app.role_of(token).await {
        Ok(Some(r)) => r,
        Ok(None) => return ApiError::unauthorized("unknown or revoked token").into_response(),
        Err(e) => return e.into_response(),
    };
    let path = req.uri().path();
    let needs_admin =
        !matches!(*req.method(), Method::GET | Method::HEAD) || path.starts_with("/v1/tokens");
    if needs_admin && role != Role::Admin {
        return ApiError::forbidden("this token is read-only; this request needs an admin token")
            .into_response();
    }
    next.run(req).await
}

/// Counts and times every request by its route template, in a span of its own.
async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .or_else(|| crate::netboot::http_front::route_label(req.uri().path()).map(String::from))
        .unwrap_or_else(|| "unmatched".into());
    // Every line logged while answering carries the request's method and route.
    let span = tracing::info_span!("http", %method, %route, status = tracing::field::Empty);
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    app.metrics
        .http_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// The whole HTTP application.
pub fn router(app: AppState) -> Router {
    let operator = Router::new()
        .route("/v1/nodes", post(nodes::create).get(nodes::list))
        .route(
            "/v1/nodes/{id}",
            get(nodes::show).patch(nodes::update).delete(nodes::delete),
        )
        .route("/v1/nodes/{id}/actions/{action}", post(nodes::action))
        .route("/v1/nodes/{id}/events", get(events::node_events))
        .route("/v1/nodes/{id}/inventory", get(nodes::inventory))
        .route("/v1/nodes/{id}/steps", get(nodes::steps))
        .route(
            "/v1/nodes/{id}/power",
            get(bmc::power_status).post(bmc::power),
        )
        .route("/v1/nodes/{id}/boot-device", post(bmc::boot_device))
        .route("/v1/nodes/{id}/bios", get(bmc::bios).patch(bmc::set_bios))
        .route(
            "/v1/nodes/{id}/raid",
            get(bmc::raid).post(bmc::create_volume),
        )
        .route(
            "/v1/nodes/{id}/raid/{volume}",
            axum::routing::delete(bmc::delete_volume),
        )
        .route("/v1/nodes/{id}/bmc-inventory", get(bmc::inventory))
        .route("/v1/nodes/{id}/facts", get(profiles::facts))
        .route("/v1/nodes/{id}/matches", get(profiles::matches))
        .route("/v1/profiles", get(profiles::list))
        .route("/v1/profiles/{name}", get(profiles::show))
        .route("/v1/profiles/reload", post(profiles::reload))
        .route("/v1/profiles/test", post(profiles::test))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/dhcp/leases", get(dhcp::leases))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::delete))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), operator_auth));
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/boot.ipxe", get(agent::boot_script))
        .route("/v1/agent/inventory", post(agent::inventory))
        .route("/v1/agent/status", post(agent::status))
        .route("/v1/agent/heartbeat", post(agent::heartbeat))
        .route("/v1/agent/log", post(agent::log));
    // Boot files: no token (firmware and ramdisks fetch them), read-only,
    // Range and conditional requests answered by tower-http. Plain downloads
    // of the same mounts are sent by `http_front` with sendfile before they
    // reach the router.
    let ramdisk_missing = {
        let dir = app.cfg.boot.ramdisk_dir.clone();
        axum::routing::get(move || async move {
            ApiError::not_found(format!(
                "not in {}; build the ramdisk with boot-assets/build-ramdisk.sh",
                dir.display()
            ))
        })
    };
    let mut assets = Router::new();
    for mount in crate::netboot::http_front::mounts(&app.cfg) {
        let at = mount.prefix.trim_end_matches('/');
        let files = tower_http::services::ServeDir::new(&mount.dir);
        let served = if at == "/assets/ramdisk" {
            Router::new().fallback_service(files.not_found_service(ramdisk_missing.clone()))
        } else {
            Router::new().fallback_service(files)
        };
        let dir = mount.dir.clone();
        let served = served.layer(middleware::from_fn(move |req: Request, next: Next| {
            confine(dir.clone(), req, next)
        }));
        assets = assets.nest_service(at, served);
    }
    Router::new()
        .merge(operator)
        .merge(open)
        .merge(assets)
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .layer(DefaultBodyLimit::max(app.cfg.http.max_body_bytes))
        .with_state(app)
}

/// Answers 404 for a name under a boot-file mount (`dir`) that resolves
/// outside it (`dir` is its real path, resolved at start), before `ServeDir` (which follows links) opens it.
async fn confine(dir: std::path::PathBuf, req: Request, next: Next) -> Response {
    let name = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .trim_start_matches('/')
        .to_string();
    // `..` and other names ServeDir refuses by itself are left to it.
    if !name.split('/').any(|seg| seg == "..") {
        let path = dir.join(&name);
        let outside =
            tokio::task::spawn_blocking(move || crate::confined::escapes(&dir, &path).is_some())
                .await
                .unwrap_or(true);
        if outside {
            return ApiError::not_found(format!("no file {name} here")).into_response();
        }
    }
    next.run(req).await
}

#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "The database answers reads and commits a write: `{\"status\": \"ok\", \"database\": \"ok\", \"storage\": \"ok\", \"boot\": \"ok\"}`; `boot` says what is missing when the ramdisk racklift serves cannot be booted (which does not change the status)"),
    (status = 503, description = "`{\"status\": \"degraded\", \"database\": ..., \"storage\": ...}`: each says `ok` or what is wrong (reads, or a committed write)"),
))]
async fn healthz(State(app): State<AppState>) -> Response {
    let h = app.store.health().await;
    let word = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    // The ramdisk is reported, not counted in the status: the API and every
    // machine that boots its disk still work, and a restart would not help.
    let boot = crate::netboot::script::ramdisk_missing(&app.cfg.boot, &app.cfg.http.public_url);
    let body = serde_json::json!({
        "status": if h.ok() { "ok" } else { "degraded" },
        "database": word(&h.database),
        "storage": word(&h.storage),
        "boot": boot.map_or_else(|| "ok".to_string(), |m| m.detail),
    });
    let status = if h.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")), security(("bearer" = [])))]
async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let by_state = app.store.count_by_state().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&by_state),
    )
        .into_response())
}
