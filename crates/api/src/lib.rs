//! The REST API of a node (`/api/v1`), with JWT roles and an OpenAPI document generated
//! from the handlers.

pub mod auth;
pub mod error;
pub mod routes;

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::DefaultBodyLimit, routing::get, Json, Router};
use mpc_node::Node;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use auth::{Jwt, Role};
pub use error::ApiError;

/// Largest request body accepted (PSBTs of a few hundred inputs fit easily).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub node: Node,
    pub jwt: Arc<Jwt>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "mpc-wallet", description = "Threshold-signature custody for Bitcoin: one node's REST API."),
    modifiers(&BearerAuth),
    tags(
        (name = "health"), (name = "ceremonies"), (name = "wallets"), (name = "signing")
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

/// The router and its OpenAPI document, built together.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::cluster_health))
        .routes(routes!(routes::aux_info))
        .routes(routes!(routes::dkg_initiate))
        .routes(routes!(routes::ceremony))
        .routes(routes!(routes::wallets))
        .routes(routes!(routes::wallet))
        .routes(routes!(routes::addresses))
        .routes(routes!(routes::descriptor))
        .routes(routes!(routes::presignatures))
        .routes(routes!(routes::sign_psbt))
        .with_state(state)
        .split_for_parts();
    let spec = openapi.clone();
    let router = router
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(spec) }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(|| async { ApiError::not_found("no such route".into()) });
    (router, openapi)
}

/// Serves the API on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (router, _) = router(state);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
