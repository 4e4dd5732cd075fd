//! Handlers of `/api/v1`. Each is annotated for the OpenAPI document, which is generated
//! from these annotations together with the router (so the document lists exactly the
//! routes served).

use axum::{
    extract::{FromRequest, OptionalFromRequest, Path, Query, Request, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use mpc_bitcoin::{Chain, Scheme};
use mpc_node::{approvals::Submitted, ceremony::CreateWallet, keys::WalletInfo, Node};
use mpc_protocols::DerivationPath;
use mpc_types::{NodeId, WalletId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Caller, ADMIN, READ, SIGN},
    error::{ApiError, ErrorBody},
    AppState,
};

/// JSON body extractor that reports malformed bodies and unknown fields in the API's error
/// shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match <Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                crate::error::body_code(rejection.status()),
                rejection.body_text(),
            )),
        }
    }
}

/// An optional body: none when the request has no `Content-Type` (a bare `POST`); one that
/// is there must parse.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

fn accepted(ceremony: Uuid) -> Response {
    let location = format!("/api/v1/ceremonies/{ceremony}");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location.clone())],
        Json(json!({"ceremony_id": ceremony, "location": location})),
    )
        .into_response()
}

/// Runs a ceremony in the background; its record is the client's way to follow it.
async fn spawn_ceremony<F, Fut, T>(
    state: &AppState,
    caller: &Caller,
    kind: &'static str,
    request: Value,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Node, Uuid) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, mpc_node::NodeError>> + Send + 'static,
    T: Send + 'static,
{
    let session = Uuid::new_v4();
    state.node.ceremony_started(session, kind, request).await?;
    let node = state.node.clone();
    let metrics = state.metrics.clone();
    let actor = caller.actor();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        // The node records the outcome (and logs failures) itself, in its audit log under
        // the caller's name.
        let outcome = mpc_node::audit::with_caller(actor, run(node, session)).await;
        metrics.ceremony_finished(kind, outcome.is_ok(), started.elapsed().as_secs_f64());
    });
    Ok(accepted(session))
}

// ---- liveness and health ------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Healthz {
    pub status: String,
    #[schema(value_type = u16)]
    pub node: NodeId,
}

/// Liveness of this node's API (unauthenticated).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Healthz)))]
pub async fn healthz(State(s): State<AppState>) -> Json<Healthz> {
    Json(Healthz {
        status: "ok".into(),
        node: s.node.id(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct ClusterHealth {
    #[schema(value_type = u16)]
    node: NodeId,
    version: &'static str,
    #[schema(value_type = String, example = "regtest")]
    network: mpc_bitcoin::Network,
    threshold: u16,
    #[schema(value_type = Vec<Object>)]
    nodes: Vec<mpc_node::health::PeerStatus>,
    live: usize,
    /// Whether this node holds the cluster's aux info (ECDSA wallets need it; a fresh cluster
    /// makes it by itself once every node has generated its safe primes).
    aux_info: bool,
    /// Connections and frames the mesh refused since start (`frames_over_quota`: those of
    /// them refused because their peer was over one of its quotas).
    #[schema(value_type = Object)]
    refused: Value,
}

/// Every node's liveness as this node sees it.
#[utoipa::path(get, path = "/api/v1/cluster/health", tag = "health",
    responses((status = 200, body = ClusterHealth), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cluster_health(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<ClusterHealth>, ApiError> {
    caller.require(READ)?;
    let nodes = s.node.health().statuses();
    let aux_info = s
        .node
        .store()
        .aux_info(&s.node.config().node_ids())
        .await
        .map_err(mpc_node::NodeError::from)?
        .is_some();
    let refused = s
        .node
        .mesh_stats()
        .map(|m| {
            use std::sync::atomic::Ordering::Relaxed;
            json!({
                "connections": m.connections_refused.load(Relaxed),
                "frames": m.frames_refused.load(Relaxed),
                "frames_over_quota": m.frames_over_quota.load(Relaxed),
                "frames_received": m.frames_received.load(Relaxed),
            })
        })
        .unwrap_or(Value::Null);
    Ok(Json(ClusterHealth {
        node: s.node.id(),
        version: mpc_node::VERSION,
        network: s.node.config().cluster.network,
        threshold: s.node.config().cluster.threshold,
        live: nodes.iter().filter(|n| n.live).count(),
        nodes,
        aux_info,
        refused,
    }))
}

// ---- ceremonies ---------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CeremonyAccepted {
    pub ceremony_id: Uuid,
    pub location: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuxInfoRequest {
    /// The nodes that will hold ECDSA wallets together (sorted node ids, this node among
    /// them); default: every node of the cluster.
    #[serde(default)]
    #[schema(value_type = Option<Vec<u16>>)]
    pub node_set: Option<Vec<NodeId>>,
}

/// Starts aux-info generation (minutes) for a node set: the whole cluster, or the nodes named
/// (an ECDSA wallet on part of the cluster needs its node set's aux info); poll the ceremony.
/// The body is optional.
#[utoipa::path(post, path = "/api/v1/aux-info", tag = "ceremonies",
    request_body(content = Option<AuxInfoRequest>),
    responses((status = 202, body = CeremonyAccepted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn aux_info(
    State(s): State<AppState>,
    caller: Caller,
    body: Option<ApiJson<AuxInfoRequest>>,
) -> Result<Response, ApiError> {
    caller.require(ADMIN)?;
    let node_set = body
        .and_then(|ApiJson(req)| req.node_set)
        .unwrap_or_else(|| s.node.config().node_ids());
    s.node.check_node_set(&node_set, "aux-info node set")?;
    spawn_ceremony(
        &s,
        &caller,
        "aux-info",
        json!({ "node_set": node_set }),
        |node, session| async move { node.run_aux_info_for(session, node_set).await },
    )
    .await
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeygenRequest {
    /// `cggmp24` (threshold ECDSA, P2WPKH) or `frost` (Schnorr, P2TR). Also accepted under
    /// its former name, `protocol`.
    #[serde(alias = "protocol")]
    #[schema(value_type = String, example = "frost")]
    pub scheme: Scheme,
    pub name: String,
    pub threshold: Option<u16>,
    /// Node ids; default: every node.
    #[schema(value_type = Option<Vec<u16>>)]
    pub participants: Option<Vec<NodeId>>,
    /// `mainnet`, `testnet`, `signet` or `regtest`; default: the cluster's.
    #[schema(value_type = Option<String>, example = "regtest")]
    pub network: Option<mpc_bitcoin::Network>,
}

impl KeygenRequest {
    /// A wallet of `scheme` over every node, at the cluster's threshold and network.
    pub fn new(scheme: Scheme, name: impl Into<String>) -> Self {
        Self {
            scheme,
            name: name.into(),
            threshold: None,
            participants: None,
            network: None,
        }
    }
}

/// Starts distributed key generation for a new wallet; poll the ceremony.
#[utoipa::path(post, path = "/api/v1/keygen", tag = "ceremonies", request_body = KeygenRequest,
    responses((status = 202, body = CeremonyAccepted), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start_keygen(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<KeygenRequest>,
) -> Result<Response, ApiError> {
    caller.require(ADMIN)?;
    let request = CreateWallet {
        name: req.name,
        scheme: req.scheme,
        threshold: req.threshold,
        participants: req.participants,
        network: req.network,
    };
    let json = serde_json::to_value(&request).map_err(|e| ApiError::internal(e.to_string()))?;
    spawn_ceremony(
        &s,
        &caller,
        "keygen",
        json,
        move |node, session| async move { node.create_wallet(session, request).await },
    )
    .await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ceremony {
    pub id: String,
    pub kind: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    #[schema(value_type = u16)]
    pub coordinator: NodeId,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    #[schema(value_type = Object)]
    pub request: Value,
    /// Once `succeeded`, what the ceremony made. While `running`, none, except once a
    /// two-phase ceremony's coordinator has decided to commit and is announcing it:
    /// `commit_decided: true` with what it commits.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// A ceremony's state and, once finished, its result or error.
#[utoipa::path(get, path = "/api/v1/ceremonies/{id}", tag = "ceremonies",
    params(("id" = Uuid, Path, description = "ceremony id")),
    responses((status = 200, body = Ceremony), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ceremony(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Ceremony>, ApiError> {
    caller.require(READ)?;
    let c = s
        .node
        .store()
        .ceremony(&id.to_string())
        .await
        .map_err(mpc_node::NodeError::from)?
        .ok_or_else(|| ApiError::not_found(format!("ceremony {id}")))?;
    Ok(Json(Ceremony {
        duration_ms: c.finished_at.map(|f| f - c.started_at),
        id: c.id,
        kind: c.kind,
        state: c.state,
        coordinator: c.coordinator,
        started_at_ms: c.started_at,
        finished_at_ms: c.finished_at,
        request: c.request,
        result: c.result,
        error: c.error,
    }))
}

// ---- wallets ------------------------------------------------------------------------------

/// Every wallet this node holds a share of.
#[utoipa::path(get, path = "/api/v1/wallets", tag = "wallets",
    responses((status = 200, body = Vec<Object>)), security(("bearer" = [])))]
pub async fn wallets(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<WalletInfo>>, ApiError> {
    caller.require(READ)?;
    Ok(Json(s.node.wallets().await?))
}

/// One wallet: keys, xpub, first address, descriptors.
#[utoipa::path(get, path = "/api/v1/wallets/{id}", tag = "wallets",
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn wallet(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
) -> Result<Json<WalletInfo>, ApiError> {
    caller.require(READ)?;
    Ok(Json(s.node.wallet(&id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AddressQuery {
    /// `receive` (m/0/i) or `change` (m/1/i); default receive.
    chain: Option<String>,
    /// First index; default 0.
    from: Option<u32>,
    /// How many (1 to 1000); default 10.
    count: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddressEntry {
    pub index: u32,
    pub path: String,
    pub address: String,
}

/// HD addresses of a wallet.
#[utoipa::path(get, path = "/api/v1/wallets/{id}/addresses", tag = "wallets",
    params(("id" = String, Path, description = "wallet id"), AddressQuery),
    responses((status = 200, body = Vec<AddressEntry>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn addresses(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    Query(q): Query<AddressQuery>,
) -> Result<Json<Vec<AddressEntry>>, ApiError> {
    caller.require(READ)?;
    let chain = parse_chain(q.chain.as_deref())?;
    let from = q.from.unwrap_or(0);
    let count = q.count.unwrap_or(10);
    if !(1..=1000).contains(&count) || from.checked_add(count).is_none_or(|end| end > 0x8000_0000) {
        return Err(ApiError::bad_request(
            "count must be 1 to 1000 and indices non-hardened".into(),
        ));
    }
    let key = wallet_key(&s, &id).await?;
    (from..from + count)
        .map(|i| {
            let path = chain
                .path(i)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(AddressEntry {
                index: i,
                address: key
                    .address(&path)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .to_string(),
                path: path.to_string(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()
        .map(Json)
}

/// `receive` (the default) or `change`.
fn parse_chain(text: Option<&str>) -> Result<Chain, ApiError> {
    text.unwrap_or("receive")
        .parse()
        .map_err(|e: mpc_bitcoin::WalletError| ApiError::bad_request(e.to_string()))
}

/// The public key of wallet `id` (404 if this node holds no share of it).
async fn wallet_key(s: &AppState, id: &WalletId) -> Result<mpc_bitcoin::WalletKey, ApiError> {
    let record = s
        .node
        .store()
        .wallet(id)
        .await
        .map_err(mpc_node::NodeError::from)?
        .ok_or_else(|| ApiError::not_found(format!("wallet {id}")))?;
    Ok(mpc_node::keys::wallet_key(&record)?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `receive` (m/0/i) or `change` (m/1/i); default receive.
    chain: Option<String>,
}

/// One address of a wallet as a QR code (SVG) of its BIP 21 URI, `bitcoin:ADDRESS` (the
/// console shows it).
#[utoipa::path(get, path = "/api/v1/wallets/{id}/addresses/{index}/qr", tag = "wallets",
    params(("id" = String, Path, description = "wallet id"),
        ("index" = u32, Path, description = "address index (non-hardened)"), QrQuery),
    responses((status = 200, description = "SVG image", content_type = "image/svg+xml"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn address_qr(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, index)): Path<(WalletId, u32)>,
    Query(q): Query<QrQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let chain = parse_chain(q.chain.as_deref())?;
    let path = chain
        .path(index)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let address = wallet_key(&s, &id)
        .await?
        .address(&path)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        address_qr_svg(&address.to_string())?,
    )
        .into_response())
}

/// The QR code (SVG, error correction level M) of `bitcoin:ADDRESS`.
pub fn address_qr_svg(address: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::with_error_correction_level(
        format!("bitcoin:{address}"),
        qrcode::EcLevel::M,
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Descriptors {
    pub receive: String,
    pub change: String,
}

/// Watch-only descriptors (with checksums).
#[utoipa::path(get, path = "/api/v1/wallets/{id}/descriptor", tag = "wallets",
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 200, body = Descriptors), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn descriptor(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
) -> Result<Json<Descriptors>, ApiError> {
    caller.require(READ)?;
    let w = s.node.wallet(&id).await?;
    Ok(Json(Descriptors {
        receive: w.receive_descriptor,
        change: w.change_descriptor,
    }))
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    /// Derivation path, e.g. `m/0/0`; default `m`.
    pub path: Option<String>,
    /// 1 to 100.
    pub count: u32,
    /// Node ids of the signer set; default: live nodes, this one first.
    #[schema(value_type = Option<Vec<u16>>)]
    pub signers: Option<Vec<NodeId>>,
}

impl PresignRequest {
    /// `count` presignatures for `path` with the default signer set.
    pub fn new(path: impl Into<String>, count: u32) -> Self {
        Self {
            path: Some(path.into()),
            count,
            signers: None,
        }
    }
}

/// Generates presignatures for (wallet, path, signer set); poll the ceremony.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/presignatures", tag = "wallets", request_body = PresignRequest,
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 202, body = CeremonyAccepted), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn presignatures(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    ApiJson(req): ApiJson<PresignRequest>,
) -> Result<Response, ApiError> {
    caller.require(ADMIN)?;
    let path: DerivationPath = req
        .path
        .as_deref()
        .unwrap_or("m")
        .parse()
        .map_err(|e: mpc_types::ParseError| ApiError::bad_request(e.to_string()))?;
    if !(1..=100).contains(&req.count) {
        return Err(ApiError::bad_request("count must be 1 to 100".into()));
    }
    s.node.active_wallet(&id).await?;
    let json = serde_json::to_value(&req).map_err(|e| ApiError::internal(e.to_string()))?;
    spawn_ceremony(
        &s,
        &caller,
        "presign",
        json,
        move |node, session| async move {
            node.generate_presignatures(session, &id, &path, req.count, req.signers, None)
                .await
        },
    )
    .await
}

/// Refreshes a wallet's key shares on every participant (same key, xpub, addresses and
/// descriptors; new shares, key epoch plus one); poll the ceremony. An ECDSA (CGGMP24) wallet
/// also gets new aux info (fresh Paillier keys) for its node set, which every other ECDSA
/// wallet of the node set then uses (its key epoch plus one, its presignatures retired); that
/// takes as long as the aux-info ceremony and a set of safe primes from each node's pool.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/refresh", tag = "wallets",
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 202, body = CeremonyAccepted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn refresh(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
) -> Result<Response, ApiError> {
    caller.require(ADMIN)?;
    s.node.active_wallet(&id).await?;
    let json = json!({ "wallet_id": id });
    spawn_ceremony(
        &s,
        &caller,
        "refresh",
        json,
        move |node, session| async move { node.refresh_wallet(session, &id).await },
    )
    .await
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReshareRequest {
    /// Node ids of the new committee (any order; a node's new index is its place in sorted
    /// order).
    #[schema(value_type = Vec<u16>)]
    pub participants: Vec<NodeId>,
    /// The new threshold, 2 to the number of participants.
    pub threshold: u16,
}

/// Reshares a wallet's key to another committee or threshold (same key, xpub, addresses and
/// descriptors; new shares for every new participant, key epoch plus one); poll the ceremony.
/// `t` live old participants deal (leaving ones first); a dealer that leaves deletes its share
/// at the commit and holds the wallet as `retired`. An ECDSA wallet needs aux info for the new
/// committee first (`POST /api/v1/aux-info`).
#[utoipa::path(post, path = "/api/v1/wallets/{id}/reshare", tag = "wallets", request_body = ReshareRequest,
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 202, body = CeremonyAccepted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reshare(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    ApiJson(req): ApiJson<ReshareRequest>,
) -> Result<Response, ApiError> {
    caller.require(ADMIN)?;
    s.node
        .check_reshare_request(&id, &req.participants, req.threshold)
        .await?;
    let json =
        json!({ "wallet_id": id, "participants": req.participants, "threshold": req.threshold });
    spawn_ceremony(
        &s,
        &caller,
        "reshare",
        json,
        move |node, session| async move {
            node.reshare_wallet(session, &id, req.participants, req.threshold)
                .await
        },
    )
    .await
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// The participant whose share is lost or corrupt.
    #[schema(value_type = u16)]
    pub node: NodeId,
}

/// Repairs one participant's lost share: a resharing to the same committee and threshold in
/// which that node only receives (it needs only the wallet's record); every share changes and
/// the key is never reconstructed. Poll the ceremony.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/repair", tag = "wallets", request_body = RepairRequest,
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 202, body = CeremonyAccepted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn repair(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    ApiJson(req): ApiJson<RepairRequest>,
) -> Result<Response, ApiError> {
    caller.require(ADMIN)?;
    let wallet = s.node.active_wallet(&id).await?;
    if !wallet.participants.contains(&req.node) {
        let e = mpc_node::NodeError::InvalidRequest(format!(
            "node {} is not a participant of wallet {id}",
            req.node
        ));
        return Err(e.into());
    }
    let json = json!({ "wallet_id": id, "node": req.node });
    spawn_ceremony(
        &s,
        &caller,
        "repair",
        json,
        move |node, session| async move { node.repair_wallet(session, &id, req.node).await },
    )
    .await
}

// ---- signing ------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The PSBT, base64 (BIP-174/371), with witness UTXOs and derivation records.
    pub psbt: String,
    /// Other wallets whose inputs the same PSBT spends (same node set and threshold).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub additional_wallets: Vec<WalletId>,
}

impl SignRequest {
    /// Signs `psbt` (base64) with the wallet named in the route alone.
    pub fn new(psbt: impl Into<String>) -> Self {
        Self {
            psbt: psbt.into(),
            additional_wallets: Vec::new(),
        }
    }
}

/// Signs a PSBT: every signer checks each input and recomputes its sighash; the result is
/// verified with libsecp256k1 and bitcoinconsensus before it is returned. A transaction the
/// node's approval rule covers is not signed: 202 with the pending request
/// (`/api/v1/requests/{id}`), signed once enough approvers approved it.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/psbt/sign", tag = "signing", request_body = SignRequest,
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 200, body = Object), (status = 202, body = Object, description = "waits for approvals"),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sign_psbt(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    ApiJson(req): ApiJson<SignRequest>,
) -> Result<Response, ApiError> {
    caller.require(SIGN)?;
    let mut wallets = vec![id];
    wallets.extend(req.additional_wallets);
    let submitted = mpc_node::audit::with_caller(
        caller.actor(),
        s.node.submit_psbt(Uuid::new_v4(), &wallets, &req.psbt),
    )
    .await?;
    let report = match submitted {
        Submitted::Signed(report) => report,
        Submitted::Pending(request) => return Ok(crate::approvals::pending(request)),
    };
    s.metrics.signed(&report);
    // Registered outputs this transaction spends are spent now; the signature stands even
    // if this bookkeeping fails.
    if let Err(e) = s.node.record_signed(&report).await {
        tracing::warn!(txid = %report.txid, error = %e, "could not mark registered outputs spent");
    }
    Ok(Json(report).into_response())
}

/// This document (OpenAPI 3.1, generated from the handlers).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.spec.get().cloned().unwrap_or_default(),
    )
        .into_response()
}

// ---- presignature pool --------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct PoolStats {
    #[schema(value_type = u16)]
    node: NodeId,
    /// One entry per ECDSA wallet: levels per (path, signer set), target, fill (ready over
    /// target), utilization (used over held), generated, held and used totals, last refill,
    /// generation-time percentiles, this node's CPU per presignature and the signer set's CPU
    /// per consumed presignature.
    #[schema(value_type = Vec<Object>)]
    wallets: Vec<mpc_node::pool::WalletPoolStats>,
}

/// Presignature pool levels and statistics of every ECDSA wallet, as this node sees them.
#[utoipa::path(get, path = "/api/v1/presignatures/stats", tag = "wallets",
    responses((status = 200, body = PoolStats), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn presignature_stats(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<PoolStats>, ApiError> {
    caller.require(READ)?;
    Ok(Json(PoolStats {
        node: s.node.id(),
        wallets: s.node.pool_stats().await?,
    }))
}
