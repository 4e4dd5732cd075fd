//! The mesh's TLS side: rustls configurations (TLS 1.3 only, the cluster CA on both sides),
//! QUIC's flow-control windows sized to frames, and who an accepted connection is.

use std::sync::Arc;

use quinn::{
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
    Connection, TransportConfig, VarInt,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{server::WebPkiClientVerifier, RootCertStore};

use super::{MeshConfig, PeerConfig};
use crate::{
    certs::{parse_certs, parse_key, TlsIdentity},
    node_name, NodeId, TransportError,
};

const ALPN: &[u8] = b"mpc-wallet/1";
pub(super) fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

pub(super) fn crypto_configs(
    identity: &TlsIdentity,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in parse_certs(&identity.ca_pem)? {
        roots.add(ca).map_err(tls_err)?;
    }
    let roots = Arc::new(roots);
    let chain = parse_certs(&identity.cert_pem)?;

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(tls_err)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), parse_key(&identity.key_pem)?)
        .map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, parse_key(&identity.key_pem)?)
        .map_err(tls_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(tls_err)?,
    ));
    let client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(tls_err)?,
    ));
    Ok((server, client))
}

pub(super) fn transport_config(
    config: &MeshConfig,
) -> Result<Arc<TransportConfig>, TransportError> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(config.keep_alive));
    t.max_idle_timeout(Some(config.idle_timeout.try_into().map_err(tls_err)?));
    // What a peer may send unread: one whole frame per stream, two per connection (quinn's
    // default connection window is unbounded). Every stream is read at once, so the windows
    // only pace a peer; they never hold up a frame.
    // (A window beyond QUIC's largest value is that value.)
    let window = |bytes: u64| VarInt::from_u64(bytes).unwrap_or(VarInt::MAX);
    let frame = (config.max_frame_bytes as u64).saturating_add(4);
    t.max_concurrent_uni_streams(VarInt::from_u32(config.max_streams_per_peer));
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.stream_receive_window(window(frame));
    t.receive_window(window(frame.saturating_mul(2)));
    Ok(Arc::new(t))
}

/// The peer's certificate (already chained to the CA by rustls): the key its envelopes must
/// be signed with.
pub(super) fn leaf_certificate(conn: &Connection) -> Result<CertificateDer<'static>, String> {
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no peer certificate")?;
    chain
        .first()
        .cloned()
        .ok_or_else(|| "empty certificate chain".into())
}

/// Which configured node an accepted connection is: the certificate (already chained to the
/// CA by rustls) must name exactly one configured lower-id peer, and the connection must come
/// from that peer's configured IP. Returns the node and its certificate.
pub(super) fn authenticate(
    config: &MeshConfig,
    conn: &Connection,
) -> Result<(NodeId, CertificateDer<'static>), String> {
    let leaf = leaf_certificate(conn)?;
    let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("certificate: {e}"))?;
    let named: Vec<&PeerConfig> = config
        .peers
        .iter()
        .filter(|p| {
            ServerName::try_from(node_name(p.id))
                .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
                .unwrap_or(false)
        })
        .collect();
    let peer = match named.as_slice() {
        [one] => *one,
        [] => return Err("certificate names no configured peer".into()),
        _ => return Err("certificate names several peers".into()),
    };
    if peer.id >= config.me {
        return Err(format!(
            "node {} must be dialed by this node (the lower id dials)",
            peer.id
        ));
    }
    let remote = conn.remote_address().ip();
    if remote.to_canonical() != peer.address.ip().to_canonical() {
        return Err(format!(
            "node {} connected from {remote}, configured at {}",
            peer.id,
            peer.address.ip()
        ));
    }
    Ok((peer.id, leaf))
}
