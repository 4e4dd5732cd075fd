//! The cluster's certificates: one CA, one certificate per node named `node-<id>` (plus its
//! IP addresses). A node accepts only peers whose certificate chains to this CA.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::{node_name, NodeId, TransportError};

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The cluster certificate authority (its key signs node certificates; keep it offline).
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

/// A node's certificate and private key, PEM-encoded.
pub struct NodeCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClusterCa {
    /// A new CA valid for `days`.
    pub fn generate(name: &str, days: i64) -> Result<Self, TransportError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} cluster CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TransportError> {
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key: KeyPair::from_pem(key_pem).map_err(tls_err)?,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues node `id`'s certificate for `ips`, valid from `not_before` for `days`.
    pub fn issue_node(
        &self,
        id: NodeId,
        ips: &[IpAddr],
        not_before: OffsetDateTime,
        days: i64,
    ) -> Result<NodeCertificate, TransportError> {
        let mut params = CertificateParams::new(vec![node_name(id)]).map_err(tls_err)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_name(id));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is both a TLS server (accepting) and a client (dialing).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_before + Duration::days(days);
        let key = KeyPair::generate().map_err(tls_err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(tls_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
        Ok(NodeCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// File names inside a certificate directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca-key.pem")
}
pub fn node_cert_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.pem"))
}
pub fn node_key_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}-key.pem"))
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TransportError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(contents)?;
    Ok(())
}

/// `mpc-wallet certs init`: a CA and certificates for nodes `1..=nodes`, where node `i` has
/// the IP addresses `ips(i)`. Valid for `days`.
pub fn init_cluster(
    dir: &Path,
    nodes: u16,
    ips: impl Fn(NodeId) -> Vec<IpAddr>,
    days: i64,
) -> Result<(), TransportError> {
    std::fs::create_dir_all(dir)?;
    let ca = ClusterCa::generate("mpc-wallet", days)?;
    std::fs::write(ca_cert_path(dir), ca.cert_pem())?;
    write_private(&ca_key_path(dir), ca.key_pem().as_bytes())?;
    let now = OffsetDateTime::now_utc() - Duration::minutes(5);
    for id in (1..=nodes).filter_map(NodeId::new) {
        let cert = ca.issue_node(id, &ips(id), now, days)?;
        std::fs::write(node_cert_path(dir, id), &cert.cert_pem)?;
        write_private(&node_key_path(dir, id), cert.key_pem.as_bytes())?;
    }
    Ok(())
}

/// Parses every certificate in a PEM string.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_err)?;
    if certs.is_empty() {
        return Err(TransportError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// Parses a private key in PEM.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(tls_err)
}

/// A node's TLS identity and the CA it trusts, all PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsIdentity {
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| TransportError::Tls(format!("{}: {e}", p.display())))
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(<key omitted>)")
    }
}

/// The SHA-256 fingerprint (hex) of a certificate's DER encoding, as operators compare them
/// (`openssl x509 -noout -fingerprint -sha256`, without the colons).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(cert.as_ref()))
}
