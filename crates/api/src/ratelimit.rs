//! Rate limiting per client IP address and per token (GCRA, `governor`).
//!
//! It runs as middleware before routing reaches a handler, so a refused request never gets
//! to start a ceremony or a signing session. The address is checked first (cheap, and it
//! bounds the JWT verification an attacker can cause); then, if the request carries a valid
//! token, that token's own bucket. The verified caller is handed to the handler, which does
//! not verify the token again. `/healthz` is exempt: liveness probes must not be throttled.
//!
//! Behind a reverse proxy every client shares the proxy's address: raise the per-address
//! limit there, and rely on the per-token one.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};

use crate::{
    auth::{bearer_of, Caller},
    error::ApiError,
    AppState,
};

/// The two limiters; either may be off.
pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_token: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Ip,
    Token,
}

impl Limited {
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Ip => "ip",
            Limited::Token => "token",
        }
    }
}

impl RateLimits {
    /// Sustained rates per second and bursts; a rate of 0 turns that limit off.
    pub fn new(token_per_second: u32, token_burst: u32, ip_per_second: u32, ip_burst: u32) -> Self {
        Self {
            per_ip: quota(ip_per_second, ip_burst).map(RateLimiter::keyed),
            per_token: quota(token_per_second, token_burst).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// No limits (tests of other things).
    pub fn off() -> Self {
        Self::new(0, 0, 0, 0)
    }

    /// Whole seconds to wait (at least 1), as `Retry-After` says it.
    fn retry_after(&self, not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
        let wait: Duration = not_until.wait_time_from(self.clock.now());
        (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        match &self.per_ip {
            Some(l) => l.check_key(&ip).map_err(|n| self.retry_after(&n)),
            None => Ok(()),
        }
    }

    pub fn check_token(&self, token_key: &str) -> Result<(), u64> {
        match &self.per_token {
            Some(l) => l
                .check_key(&token_key.to_string())
                .map_err(|n| self.retry_after(&n)),
            None => Ok(()),
        }
    }

    /// Forgets buckets that are full again, so the key maps do not grow without bound.
    pub fn prune(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_token {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Prunes the limiters every minute until the state is dropped.
pub fn spawn_pruner(limits: &Arc<RateLimits>) {
    let weak = Arc::downgrade(limits);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(l) => l.prune(),
                None => return,
            }
        }
    });
}

fn refused(state: &AppState, which: Limited, retry_after: u64) -> Response {
    state.metrics.rate_limited(which);
    ApiError::rate_limited(retry_after)
        .with_details(serde_json::json!({"limit": which.as_str()}))
        .into_response()
}

/// The middleware.
pub async fn limit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip {
        if let Err(secs) = state.limits.check_ip(ip) {
            return refused(&state, Limited::Ip, secs);
        }
    }
    if let Some(token) = bearer_of(request.headers()) {
        // Only a valid token has a bucket: random strings would otherwise mint fresh ones.
        // An invalid token goes on to the handler, which answers 401.
        if let Ok(claims) = state.jwt.verify(token) {
            // Per token, not per subject: the signature part is unique to each token.
            let key = token.rsplit('.').next().unwrap_or(token);
            if let Err(secs) = state.limits.check_token(key) {
                return refused(&state, Limited::Token, secs);
            }
            request.extensions_mut().insert(Caller(claims));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_a_whole_second_retry() {
        let limits = RateLimits::new(1, 3, 0, 0);
        for _ in 0..3 {
            assert!(limits.check_token("a").is_ok());
        }
        let retry = limits.check_token("a").unwrap_err();
        assert!((1..=2).contains(&retry), "{retry}");
        // Another token has its own bucket; the address limit is off.
        assert!(limits.check_token("b").is_ok());
        assert!(limits.check_ip(IpAddr::from([127, 0, 0, 1])).is_ok());
        let limits = RateLimits::new(0, 0, 2, 2);
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(limits.check_ip(ip).is_ok());
        assert!(limits.check_ip(ip).is_ok());
        assert!(limits.check_ip(ip).is_err());
        assert!(limits.check_ip(IpAddr::from([10, 0, 0, 2])).is_ok());
        limits.prune();
    }
}
