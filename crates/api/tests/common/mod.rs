//! What the in-process API tests share: one node's router answered through
//! `tower::ServiceExt::oneshot`, a three-node in-memory cluster, and payments to spend.

#![allow(dead_code)] // each test binary uses its own part

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
    Router,
};
use mpc_api::{AppState, Jwt, Role};
use mpc_bitcoin::{
    bitcoin::{Amount, Network},
    build::{build_psbt, synthetic_funding, Payment},
    Chain, WalletKey,
};
use mpc_node::{
    config::{ApiConfig, NodeConfig},
    testing::{start, Cluster},
    Node,
};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

pub const ROLES: [Role; 3] = [Role::Viewer, Role::Signer, Role::Admin];
pub const SECRET: [u8; 32] = [42; 32];

/// One node's API, and a token for each role.
pub struct Api {
    pub router: Router,
    pub jwt: Arc<Jwt>,
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub location: Option<String>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    pub fn of(node: &Node) -> Self {
        Self::with_config(node, &node.config().api)
    }

    /// `node`'s API as `config` sets it up (rate limits, token issuer).
    pub fn with_config(node: &Node, config: &ApiConfig) -> Self {
        let jwt = Arc::new(mpc_api::jwt_from_config(&SECRET, config).unwrap());
        let state = AppState::new(node.clone(), jwt.clone(), config).unwrap();
        Self {
            router: mpc_api::router(state).0,
            jwt,
        }
    }

    pub fn token(&self, role: Role) -> String {
        self.jwt
            .issue("routes-test", role, Duration::from_secs(600))
            .unwrap()
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap().to_string())
        };
        let retry_after = header(header::RETRY_AFTER);
        let content_type = header(header::CONTENT_TYPE);
        let location = header(header::LOCATION);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            body,
            retry_after,
            content_type,
            location,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        role: Option<Role>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(role) = role {
            request = request.header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token(role)),
            );
        }
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// Polls a ceremony until it ends; returns its record.
    pub async fn ceremony(&self, id: &str) -> Value {
        for _ in 0..600 {
            let a = self
                .call(
                    Method::GET,
                    &format!("/api/v1/ceremonies/{id}"),
                    Some(Role::Viewer),
                    None,
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            if a.body["state"] != "running" {
                return a.body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ceremony {id} still running after 60 s");
    }
}

/// A cluster of three (threshold 2) with rate limits out of the way unless `adjust` sets them.
pub async fn cluster(adjust: impl Fn(&mut NodeConfig)) -> Cluster {
    start(3, 2, |cfg| {
        cfg.api.rate_limit_per_second = 10_000;
        cfg.api.rate_limit_burst = 10_000;
        adjust(cfg);
    })
    .await
}

/// A PSBT spending a synthetic output of `key` at m/0/0: `pay` sats to a stranger.
pub fn payment(key: &WalletKey, funded: u64, pay: u64) -> mpc_bitcoin::bitcoin::psbt::Psbt {
    let input = synthetic_funding(
        key,
        &"m/0/0".parse().unwrap(),
        Amount::from_sat(funded),
        &Uuid::new_v4().to_string(),
    )
    .unwrap();
    build_psbt(
        &[input],
        &[Payment {
            script_pubkey: stranger().script_pubkey(),
            amount: Amount::from_sat(pay),
            owner: None,
        }],
    )
    .unwrap()
}

pub fn stranger() -> mpc_bitcoin::bitcoin::Address {
    let (_, key) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    key.chain_address(Chain::Receive, 0).unwrap()
}

/// The samples of the Prometheus metric `name` in `text`, summed (0 if none).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
