//! `mpc-wallet token issue`: a JWT for a role, signed offline with the cluster's secret.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Subcommand;
use mpc_api::auth::{self, Claims, Role};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a token for a role (offline: signs with the cluster's secret or a private key).
    Issue {
        /// admin, signer or viewer.
        #[arg(long)]
        role: Role,
        /// Lifetime: e.g. 30m, 1h, 7d, 3600s.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// File holding the HS256 secret (at least 32 bytes); else `JWT_SECRET`.
        #[arg(long, env = "JWT_SECRET_FILE")]
        secret_file: Option<PathBuf>,
        /// Sign with this RS256 or EdDSA private key (PEM) instead of the HS256 secret.
        #[arg(long, conflicts_with = "secret_file")]
        private_key: Option<PathBuf>,
        /// Algorithm of `--private-key`: RS256 or EdDSA.
        #[arg(long, default_value = "EdDSA", requires = "private_key")]
        algorithm: String,
        #[arg(long, default_value = "operator")]
        subject: String,
        #[arg(long, default_value = "mpc-wallet")]
        issuer: String,
        #[arg(long, default_value = "mpc-wallet-api")]
        audience: String,
        /// Print {"token", "expires_at", ...} as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `1h`, `30m`, `7d`, `90s` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m, h or d)")),
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err("the lifetime must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// `token issue`
pub fn token(command: &TokenCommand) -> Result<()> {
    let TokenCommand::Issue {
        role,
        ttl,
        secret_file,
        private_key,
        algorithm,
        subject,
        issuer,
        audience,
        json,
    } = command;
    let claims = Claims::new(subject, *role, issuer, audience, *ttl);
    let (token, alg) = match private_key {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (
                auth::issue_with_private_key(algorithm, &pem, &claims)?,
                algorithm.clone(),
            )
        }
        None => {
            let secret = match secret_file {
                Some(path) => std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim_ascii()
                    .to_vec(),
                None => std::env::var("JWT_SECRET")
                    .map(String::into_bytes)
                    .map_err(|_| {
                        anyhow::anyhow!("no secret: pass --secret-file or set JWT_SECRET")
                    })?,
            };
            (
                auth::issue_with_secret(&secret, &claims)?,
                "HS256".to_string(),
            )
        }
    };
    if *json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "token": token,
                "role": role.as_str(),
                "subject": subject,
                "algorithm": alg,
                "issued_at": claims.iat,
                "expires_at": claims.exp,
            }))?
        );
    } else {
        println!("{token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86_400));
        for bad in ["", "h", "1y", "0s", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
