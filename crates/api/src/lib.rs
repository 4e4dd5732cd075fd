//! The REST API of a node (`/api/v1`), with JWT roles, rate limiting, Prometheus metrics and
//! an OpenAPI document generated from the handlers.
//!
//! Every route is registered through `utoipa_axum::routes!`, so the router and the document
//! are built from the same list and cannot drift apart. A request passes, in order: the body
//! size limit, error normalization (every error leaves as `{"error": {code, message,
//! details}}`), metrics, the rate limiter (before any handler, so a refused request starts
//! nothing), then the handler, which checks the caller's role. The web console
//! ([`console`], `/console`) is served beside the API, through the same layers.

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod console;
pub mod error;
pub mod incidents;
pub mod metrics;
pub mod payments;
pub mod ratelimit;
pub mod routes;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use axum::{extract::DefaultBodyLimit, middleware, Router};
use mpc_node::{config::ApiConfig, Node};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use auth::{Jwt, Role};
pub use error::ApiError;
pub use metrics::Metrics;
pub use ratelimit::RateLimits;

/// Largest request body accepted (PSBTs of a few hundred inputs fit easily).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub jwt: Arc<Jwt>,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// The OpenAPI document as served, set when the router is built.
    spec: Arc<OnceLock<String>>,
}

/// Why the API could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Jwt(#[from] auth::JwtConfigError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

impl AppState {
    /// The state for `node` with the limits and metrics setting of `config`.
    pub fn new(node: Node, jwt: Arc<Jwt>, config: &ApiConfig) -> Result<Self, SetupError> {
        Ok(Self {
            node,
            jwt,
            limits: Arc::new(RateLimits::new(
                config.rate_limit_per_second,
                config.rate_limit_burst,
                config.rate_limit_ip_per_second,
                config.rate_limit_ip_burst,
            )),
            metrics: Arc::new(Metrics::new()?),
            metrics_public: config.metrics_public,
            spec: Arc::new(OnceLock::new()),
        })
    }
}

/// The token verifier of `config`: HS256 with `secret`, plus its public key if configured.
pub fn jwt_from_config(secret: &[u8], config: &ApiConfig) -> Result<Jwt, SetupError> {
    let jwt = Jwt::hs256(secret, &config.jwt_issuer, &config.jwt_audience)?;
    match (
        &config.jwt_public_key_file,
        &config.jwt_public_key_algorithm,
    ) {
        (None, None) => Ok(jwt),
        (Some(path), Some(algorithm)) => {
            let pem = std::fs::read(path).map_err(|e| SetupError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok(jwt.with_public_key(algorithm, &pem)?)
        }
        _ => Err(SetupError::File {
            path: "api.jwt_public_key_file".into(),
            reason: "set both jwt_public_key_file and jwt_public_key_algorithm, or neither".into(),
        }),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "mpc-wallet", description = "Threshold-signature custody for Bitcoin: one node's REST API. \
        Errors are always `{\"error\": {\"code\", \"message\", \"details\"}}`; 429 responses carry `Retry-After`."),
    modifiers(&BearerAuth),
    tags(
        (name = "health"), (name = "ceremonies"), (name = "wallets"), (name = "signing"),
        (name = "audit"), (name = "approvals")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route, with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::healthz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(routes::openapi_json))
        .routes(routes!(routes::cluster_health))
        .routes(routes!(incidents::incidents))
        .routes(routes!(incidents::release))
        .routes(routes!(incidents::verify_evidence))
        .routes(routes!(audit::audit_log))
        .routes(routes!(routes::aux_info))
        .routes(routes!(routes::start_keygen))
        .routes(routes!(routes::ceremony))
        .routes(routes!(routes::wallets))
        .routes(routes!(routes::wallet))
        .routes(routes!(routes::addresses))
        .routes(routes!(routes::address_qr))
        .routes(routes!(routes::descriptor))
        .routes(routes!(payments::register_utxos, payments::list_utxos))
        .routes(routes!(routes::presignatures))
        .routes(routes!(routes::refresh))
        .routes(routes!(routes::reshare))
        .routes(routes!(routes::repair))
        .routes(routes!(routes::presignature_stats))
        .routes(routes!(routes::sign_psbt))
        .routes(routes!(payments::transactions))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::show))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
}

/// The router and its OpenAPI document, built together from one list of routes.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = routes().with_state(state.clone()).split_for_parts();
    let _ = state
        .spec
        .set(serde_json::to_string(&openapi).unwrap_or_default());
    // Layers added later run first: the body limit, then normalization, metrics, and the
    // rate limiter just before the handler.
    let router = router
        .merge(console::router())
        .fallback(|| async { ApiError::not_found("no such route".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(error::normalize))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    (router, openapi)
}

/// Serves the API on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    ratelimit::spawn_pruner(&state.limits);
    let (router, _) = router(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
