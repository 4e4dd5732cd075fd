//! JWT authentication and roles.
//!
//! Tokens are HS256 with a shared secret of at least 32 bytes, and optionally also RS256 or
//! EdDSA tokens from one configured public key (an external identity provider). Each key has
//! exactly one algorithm: the token header's `alg` picks the key, and that key's validation
//! accepts only its own algorithm, so `alg: none` and algorithm confusion (an RS256 header on
//! the HMAC key, or HS256 signed with the public key as the HMAC secret) are refused.
//! Expiry, issuer and audience are checked with 5 s of leeway.
//!
//! Roles separate duties: `viewer` reads; `signer` also signs and spends; `admin` also runs
//! ceremonies (aux info, keygen, presignatures). An admin does not sign and a signer does not
//! create wallets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Smallest accepted HS256 secret.
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated on `exp` (and `nbf`), in seconds.
pub const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Signer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Signer => "signer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "signer" => Ok(Role::Signer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (admin, signer or viewer)")),
        }
    }
}

/// The token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    #[serde(default)]
    pub iat: u64,
    pub exp: u64,
    /// Token id; tokens of external issuers may lack it.
    #[serde(default)]
    pub jti: String,
}

impl Claims {
    /// Claims for `subject` with `role`, valid from now for `ttl`.
    pub fn new(subject: &str, role: Role, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            sub: subject.into(),
            role,
            iss: issuer.into(),
            aud: audience.into(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// One verification key and the single algorithm it accepts.
#[derive(Clone)]
struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    fn new(algorithm: Algorithm, key: DecodingKey, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = LEEWAY_SECONDS;
        // jsonwebtoken ignores `nbf` unless asked; a token is not valid before it.
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            algorithm,
            key,
            validation,
        }
    }
}

/// Issuing and checking tokens.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    hmac: Verifier,
    public: Option<Verifier>,
    issuer: String,
    audience: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes (got {0})")]
    ShortSecret(usize),
    #[error("JWT public key algorithm {0:?}: expected RS256 or EdDSA")]
    Algorithm(String),
    #[error("JWT key: {0}")]
    Key(String),
}

/// Parses `RS256` or `EdDSA` (the asymmetric algorithms a node accepts besides HS256).
pub fn public_algorithm(name: &str) -> Result<Algorithm, JwtConfigError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" | "Ed25519" => Ok(Algorithm::EdDSA),
        other => Err(JwtConfigError::Algorithm(other.into())),
    }
}

impl Jwt {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Result<Self, JwtConfigError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(JwtConfigError::ShortSecret(secret.len()));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            hmac: Verifier::new(
                Algorithm::HS256,
                DecodingKey::from_secret(secret),
                issuer,
                audience,
            ),
            public: None,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// Also accepts tokens signed with the private key of `pem` under `algorithm` (RS256 or
    /// EdDSA), and only under that algorithm.
    pub fn with_public_key(mut self, algorithm: &str, pem: &[u8]) -> Result<Self, JwtConfigError> {
        let algorithm = public_algorithm(algorithm)?;
        let key = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            _ => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|e| JwtConfigError::Key(e.to_string()))?;
        self.public = Some(Verifier::new(algorithm, key, &self.issuer, &self.audience));
        Ok(self)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// An HS256 token for `subject` with `role`, valid for `ttl`.
    pub fn issue(&self, subject: &str, role: Role, ttl: Duration) -> Result<String, ApiError> {
        let claims = Claims::new(subject, role, &self.issuer, &self.audience, ttl);
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("token encoding: {e}")))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid =
            |e: jsonwebtoken::errors::Error| ApiError::unauthorized(format!("invalid token: {e}"));
        // The header only chooses the key; each key then accepts its one algorithm.
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let verifier = if header.alg == self.hmac.algorithm {
            &self.hmac
        } else {
            match &self.public {
                Some(v) if v.algorithm == header.alg => v,
                _ => {
                    return Err(ApiError::unauthorized(format!(
                        "invalid token: algorithm {:?} is not accepted",
                        header.alg
                    )))
                }
            }
        };
        jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation)
            .map(|data| data.claims)
            .map_err(invalid)
    }
}

/// Signs `claims` with a private key (PEM) under RS256 or EdDSA, for operators whose nodes
/// trust the matching public key (`mpc-wallet token issue --private-key`).
pub fn issue_with_private_key(
    algorithm: &str,
    pem: &[u8],
    claims: &Claims,
) -> Result<String, JwtConfigError> {
    let algorithm = public_algorithm(algorithm)?;
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        _ => EncodingKey::from_ed_pem(pem),
    }
    .map_err(|e| JwtConfigError::Key(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key)
        .map_err(|e| JwtConfigError::Key(e.to_string()))
}

/// Signs `claims` with an HS256 secret (at least [`MIN_SECRET_BYTES`]).
pub fn issue_with_secret(secret: &[u8], claims: &Claims) -> Result<String, JwtConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(JwtConfigError::ShortSecret(secret.len()));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| JwtConfigError::Key(e.to_string()))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// The caller as the audit log names it: its token's role and subject.
    pub fn actor(&self) -> mpc_store::Actor {
        mpc_store::Actor::Caller {
            role: self.0.role.as_str().into(),
            subject: self.0.sub.clone(),
        }
    }

    /// Refuses with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this (needs {})",
                self.0.role.as_str(),
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }
}

/// Roles allowed to read.
pub const READ: &[Role] = &[Role::Viewer, Role::Signer, Role::Admin];
/// Roles allowed to sign and spend.
pub const SIGN: &[Role] = &[Role::Signer];
/// Roles allowed to run ceremonies.
pub const ADMIN: &[Role] = &[Role::Admin];

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl FromRequestParts<crate::AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        // The rate limiter may already have verified the token.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token".into()))?;
        Ok(Caller(state.jwt.verify(token)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa-private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/keys/rsa-public.pem");
    const ED_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519-private.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../tests/keys/ed25519-public.pem");

    fn jwt() -> Jwt {
        Jwt::hs256(SECRET, "iss", "aud").unwrap()
    }

    fn claims(role: Role) -> Claims {
        Claims::new("alice", role, "iss", "aud", Duration::from_secs(60))
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with any header, signed (or not) by hand.
    fn forged(header: &str, claims: &Claims, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(header.as_bytes()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let signature = sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Jwt::hs256(&SECRET[..31], "i", "a"),
            Err(JwtConfigError::ShortSecret(31))
        ));
        assert!(issue_with_secret(b"short", &claims(Role::Admin)).is_err());
    }

    #[test]
    fn hs256_round_trips_and_checks_every_claim() {
        let jwt = jwt();
        let token = jwt
            .issue("alice", Role::Signer, Duration::from_secs(60))
            .unwrap();
        assert_eq!(jwt.verify(&token).unwrap().role, Role::Signer);
        // Hand-signed with the right secret: the forging helper is right.
        let ok = forged(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &claims(Role::Viewer),
            |d| hmac(SECRET, d),
        );
        assert!(jwt.verify(&ok).is_ok());
        for (what, c) in [
            ("expired", {
                let mut c = claims(Role::Admin);
                c.exp = c.iat - 60;
                c
            }),
            ("issuer", {
                let mut c = claims(Role::Admin);
                c.iss = "evil".into();
                c
            }),
            ("audience", {
                let mut c = claims(Role::Admin);
                c.aud = "other-api".into();
                c
            }),
        ] {
            let token = issue_with_secret(SECRET, &c).unwrap();
            assert!(jwt.verify(&token).is_err(), "{what} accepted");
        }
        // Within the leeway an expired token still passes; beyond it, not.
        let mut c = claims(Role::Admin);
        c.exp = c.iat - 2;
        assert!(jwt.verify(&issue_with_secret(SECRET, &c).unwrap()).is_ok());
    }

    #[test]
    fn tokens_are_refused_before_not_before() {
        let jwt = jwt();
        let mut c = serde_json::to_value(claims(Role::Viewer)).unwrap();
        let now = c["iat"].as_u64().unwrap();
        let sign = |c: &serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                c,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        c["nbf"] = (now + 3600).into();
        assert!(jwt.verify(&sign(&c)).is_err());
        // Within the leeway, and in the past, it passes.
        c["nbf"] = (now + 2).into();
        assert!(jwt.verify(&sign(&c)).is_ok());
        c["nbf"] = (now - 60).into();
        assert!(jwt.verify(&sign(&c)).is_ok());
    }

    #[test]
    fn none_tampered_and_other_secret_are_refused() {
        let jwt = jwt();
        let none = forged(
            r#"{"alg":"none","typ":"JWT"}"#,
            &claims(Role::Admin),
            |_| Vec::new(),
        );
        assert!(jwt.verify(&none).is_err());
        let other = issue_with_secret(
            b"another secret of at least 32 bytes!",
            &claims(Role::Admin),
        )
        .unwrap();
        assert!(jwt.verify(&other).is_err());
        // Role changed after signing.
        let token = jwt
            .issue("alice", Role::Viewer, Duration::from_secs(60))
            .unwrap();
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut c = claims(Role::Admin);
        c.sub = "alice".into();
        parts[1] = b64(&serde_json::to_vec(&c).unwrap());
        assert!(jwt.verify(&parts.join(".")).is_err());
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // An RS256 header on an HS256-only node, HMAC'd with the secret.
        let jwt = jwt();
        let rs_header = forged(
            r#"{"alg":"RS256","typ":"JWT"}"#,
            &claims(Role::Admin),
            |d| hmac(SECRET, d),
        );
        let err = jwt.verify(&rs_header).unwrap_err();
        assert!(err.message.contains("not accepted"), "{}", err.message);
        // A real RS256 token on an HS256-only node.
        let rs = issue_with_private_key("RS256", RSA_PRIVATE, &claims(Role::Admin)).unwrap();
        assert!(jwt.verify(&rs).is_err());
        // With the RSA key configured: the real RS256 token passes, but HS256 signed with the
        // public key as the HMAC secret (the classic confusion) does not, and neither does an
        // EdDSA token.
        let jwt = jwt.with_public_key("RS256", RSA_PUBLIC).unwrap();
        assert_eq!(jwt.verify(&rs).unwrap().role, Role::Admin);
        let confused = forged(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &claims(Role::Admin),
            |d| hmac(RSA_PUBLIC, d),
        );
        assert!(jwt.verify(&confused).is_err());
        let ed = issue_with_private_key("EdDSA", ED_PRIVATE, &claims(Role::Admin)).unwrap();
        assert!(jwt.verify(&ed).is_err());
        // HS256 tokens keep working beside the public key.
        let hs = jwt
            .issue("bob", Role::Viewer, Duration::from_secs(60))
            .unwrap();
        assert!(jwt.verify(&hs).is_ok());
    }

    #[test]
    fn eddsa_key_accepts_only_eddsa() {
        let jwt = jwt().with_public_key("EdDSA", ED_PUBLIC).unwrap();
        let ed = issue_with_private_key("EdDSA", ED_PRIVATE, &claims(Role::Signer)).unwrap();
        assert_eq!(jwt.verify(&ed).unwrap().role, Role::Signer);
        let rs = issue_with_private_key("RS256", RSA_PRIVATE, &claims(Role::Admin)).unwrap();
        assert!(jwt.verify(&rs).is_err());
        assert!(matches!(
            jwt.clone().with_public_key("ES256", ED_PUBLIC),
            Err(JwtConfigError::Algorithm(_))
        ));
        assert!(jwt.clone().with_public_key("RS256", b"not a pem").is_err());
    }
}
