//! Threshold ECDSA on secp256k1 by CGGMP24.
//!
//! Flow: [`Primes::generate`] (slow, once per node) → [`generate_aux_info`] (once per node set)
//! → [`keygen`] (once per wallet) → [`EcdsaKeyShare::from_parts`] → either [`presign`] then
//! [`Presignature::issue_partial_signature`] + [`combine`], or [`sign`] (interactive).
//!
//! The message is always a sighash *preimage* ([`SighashPreimage`]); cggmp24 hashes it with
//! double SHA-256 itself, so no signer ever signs a hash it did not compute (design invariant 2).

use cggmp24::{key_share::AnyKeyShare, DataToSign};
use paillier_zk::backend::Integer;
use rand_core::{CryptoRng, RngCore};
use round_based::Mpc;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    encoding,
    execution::ExecutionId,
    hd::DerivationPath,
    sha256d::{sha256d, Sha256d},
    signature::{public_key_of, EcdsaSignature, PublicKey},
    PartyIndex, ProtocolError,
};

mod presignature;
pub use presignature::{
    combine, presign, PartialSignature, Presignature, PresignatureBinding, PresignaturePublic,
};

/// The curve every key here lives on.
pub type Curve = cggmp24::supported_curves::Secp256k1;
/// Security level of the Paillier/ZK parameters (128-bit, 1536-bit safe primes).
pub type Level = cggmp24::security_level::SecurityLevel128;
/// Hash used *inside* the protocols (commitments, Fiat-Shamir), not the signed message.
type ProtocolDigest = sha2::Sha256;

/// Message type of the aux-info protocol.
pub type AuxInfoMsg = cggmp24::key_refresh::msg::Msg<ProtocolDigest, Level>;
/// Message type of threshold key generation.
pub type KeygenMsg = cggmp24::keygen::msg::threshold::Msg<Curve, Level, ProtocolDigest>;
/// Message type of presignature generation and interactive signing.
pub type SigningMsg = cggmp24::signing::msg::Msg<Curve, ProtocolDigest>;

/// Largest cluster the product supports (bounded so aux info stays within a few minutes).
pub const MAX_PARTIES: u16 = 15;

/// Checks `2 <= t <= n <= MAX_PARTIES` and `i < n`.
pub fn check_parameters(i: PartyIndex, n: u16, t: u16) -> Result<(), ProtocolError> {
    if !(2..=MAX_PARTIES).contains(&n) {
        return Err(ProtocolError::InvalidParameters(format!(
            "n = {n}: need 2 <= n <= {MAX_PARTIES}"
        )));
    }
    if !(2..=n).contains(&t) {
        return Err(ProtocolError::InvalidParameters(format!(
            "t = {t}: need 2 <= t <= n = {n}"
        )));
    }
    if i.get() >= n {
        return Err(ProtocolError::InvalidParameters(format!(
            "party index {i} out of range for n = {n}"
        )));
    }
    Ok(())
}

/// Checks that `signers` is a valid signer set for a `t`-of-`n` key and returns the position
/// of `me` in it (the index the signing protocol uses).
pub fn position_in_signer_set(
    signers: &[PartyIndex],
    me: PartyIndex,
    n: u16,
    t: u16,
) -> Result<PartyIndex, ProtocolError> {
    let bad = |reason: String| ProtocolError::InvalidSignerSet {
        signers: signers.to_vec(),
        reason,
    };
    if signers.len() != usize::from(t) {
        return Err(bad(format!("need exactly t = {t} signers")));
    }
    if !signers.windows(2).all(|w| w[0] < w[1]) {
        return Err(bad(
            "must be strictly increasing (sorted, no duplicates)".into()
        ));
    }
    if signers.iter().any(|s| s.get() >= n) {
        return Err(bad(format!("index out of range for n = {n}")));
    }
    let pos = signers
        .iter()
        .position(|s| *s == me)
        .ok_or_else(|| bad(format!("party {me} is not in the set")))?;
    // `pos < t <= MAX_PARTIES`, so it fits.
    Ok(PartyIndex::new(pos as u16))
}

/// Party indices as the protocol libraries take them.
pub(crate) fn raw_indices(indices: &[PartyIndex]) -> Vec<u16> {
    indices.iter().map(|i| i.get()).collect()
}

/// The BIP-143 (segwit v0) sighash preimage of one input. The signed value is its double
/// SHA-256, computed by cggmp24 through [`DataToSign::digest`].
#[derive(Clone, PartialEq, Eq)]
pub struct SighashPreimage(Vec<u8>);

impl SighashPreimage {
    /// Wraps the serialized preimage (not a hash).
    pub fn new(preimage: Vec<u8>) -> Self {
        Self(preimage)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The sighash: `sha256d(preimage)`.
    pub fn sighash(&self) -> [u8; 32] {
        sha256d(&self.0)
    }

    fn data_to_sign(&self) -> DataToSign<Curve> {
        DataToSign::digest::<Sha256d>(&self.0)
    }
}

impl std::fmt::Debug for SighashPreimage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SighashPreimage(sighash {})",
            hex::encode(self.sighash())
        )
    }
}

/// Four 1536-bit safe primes for one node's Paillier and ring-Pedersen moduli. Secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Primes(cggmp24::PregeneratedPrimes<Level>);

impl Primes {
    /// Generates fresh safe primes. Slow: 30 s to several minutes on a 2-core machine.
    pub fn generate<R: RngCore>(rng: &mut R) -> Self {
        Self(cggmp24::PregeneratedPrimes::generate(rng))
    }

    /// Generates fresh safe primes as [`Primes::generate`] does (the library's
    /// `generate_safe_prime`, one prime at a time), the four primes on up to `threads` threads
    /// at once: the calling thread and `threads - 1` others (at most 4 in all). `on_thread` runs
    /// first on each of them; what it returns is held until that thread's share is done (a
    /// priority guard, say).
    pub fn generate_parallel<G>(
        threads: usize,
        on_thread: impl Fn() -> G + Sync,
    ) -> Result<Self, ProtocolError> {
        use cggmp24::security_level::SecurityLevel;
        Self::from_primes(safe_primes_parallel(
            Level::RSA_PRIME_BITLEN,
            threads,
            on_thread,
        )?)
    }

    /// Four safe primes as a set, checked by the library (each at least the security level's
    /// 1536 bits; that they are safe primes is the generator's word, as in cggmp24).
    pub fn from_primes(primes: [Integer; 4]) -> Result<Self, ProtocolError> {
        cggmp24::PregeneratedPrimes::try_from(primes)
            .map(Self)
            .map_err(|_| {
                ProtocolError::InvalidKeyMaterial(
                    "safe primes shorter than the security level asks".into(),
                )
            })
    }

    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        encoding::encode_secret(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(bytes)
    }
}

/// Four safe primes of `bits` bits from the library's `generate_safe_prime`, made by up to
/// `threads` threads (the caller's included) that take the next missing prime until there are
/// four. A worker that cannot be started leaves its share to the others.
fn safe_primes_parallel<G>(
    bits: u32,
    threads: usize,
    on_thread: impl Fn() -> G + Sync,
) -> Result<[Integer; 4], ProtocolError> {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };
    let next = AtomicUsize::new(0);
    let made: [Mutex<Option<Integer>>; 4] = Default::default();
    let work = || {
        let _guard = on_thread();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = made.get(k) else { break };
            let prime = Integer::generate_safe_prime(&mut rand_core::OsRng, bits);
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(prime);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.clamp(1, made.len()) {
            // On failure the other threads (the caller's at least) take its primes.
            let _ = std::thread::Builder::new()
                .name("safe-primes".into())
                .spawn_scoped(scope, work);
        }
        work();
    });
    match made.map(|slot| slot.into_inner().ok().flatten()) {
        [Some(a), Some(b), Some(c), Some(d)] => Ok([a, b, c, d]),
        _ => Err(ProtocolError::InvalidKeyMaterial(
            "a safe-prime thread failed".into(),
        )),
    }
}

impl std::fmt::Debug for Primes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Primes(<secret>)")
    }
}

/// One node's aux info for a node set: its Paillier secret key and everyone's public
/// parameters. Serves every ECDSA key of that node set. Secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct AuxInfo(cggmp24::key_share::AuxInfo<Level>);

impl AuxInfo {
    /// Number of parties the aux info was generated for.
    pub fn n(&self) -> usize {
        self.0.N.len()
    }

    /// SHA-256 over every party's Paillier modulus: equal at every party of one run, so
    /// the coordinator can check that all parties hold the same public parameters.
    pub fn public_digest(&self) -> Result<[u8; 32], ProtocolError> {
        paillier_digest(&self.0.N)
    }

    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        encoding::encode_secret(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(bytes)
    }
}

impl std::fmt::Debug for AuxInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuxInfo(n = {}, <secret>)", self.n())
    }
}

/// Runs aux-info generation for party `i` of `n`. CPU-heavy (tens of seconds).
pub async fn generate_aux_info<M, R>(
    eid: &ExecutionId,
    i: PartyIndex,
    n: u16,
    primes: Primes,
    party: M,
    rng: &mut R,
) -> Result<AuxInfo, ProtocolError>
where
    M: Mpc<ProtocolMessage = AuxInfoMsg>,
    R: RngCore + CryptoRng,
{
    check_parameters(i, n, 2)?;
    let aux = cggmp24::aux_info_gen(eid.cggmp24(), i.get(), n, primes.0)
        .start(rng, party)
        .await
        .map_err(|e| ProtocolError::AuxInfo(ProtocolError::chain(&e)))?;
    Ok(AuxInfo(aux))
}

/// SHA-256 over the CBOR of every party's Paillier modulus.
fn paillier_digest(moduli: &[paillier_zk::backend::Integer]) -> Result<[u8; 32], ProtocolError> {
    use sha2::Digest;
    Ok(sha2::Sha256::digest(encoding::encode(&moduli)?).into())
}

/// A key share from key generation, before it is joined with aux info. Secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct IncompleteEcdsaShare(pub(crate) cggmp24::IncompleteKeyShare<Curve>);

impl IncompleteEcdsaShare {
    pub fn public_key(&self) -> PublicKey {
        public_key_of(&self.0.shared_public_key())
    }

    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        encoding::encode_secret(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(bytes)
    }
}

impl std::fmt::Debug for IncompleteEcdsaShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IncompleteEcdsaShare(pk {}, <secret>)",
            self.public_key()
        )
    }
}

/// Runs threshold key generation (HD-enabled) for party `i` of `n` with threshold `t`.
pub async fn keygen<M, R>(
    eid: &ExecutionId,
    i: PartyIndex,
    n: u16,
    t: u16,
    party: M,
    rng: &mut R,
) -> Result<IncompleteEcdsaShare, ProtocolError>
where
    M: Mpc<ProtocolMessage = KeygenMsg>,
    R: RngCore + CryptoRng,
{
    check_parameters(i, n, t)?;
    let share = cggmp24::keygen::<Curve>(eid.cggmp24(), i.get(), n)
        .set_threshold(t)
        .hd_wallet(true)
        .start(rng, party)
        .await
        .map_err(|e| ProtocolError::Keygen(ProtocolError::chain(&e)))?;
    Ok(IncompleteEcdsaShare(share))
}

/// A complete ECDSA key share (key generation output + aux info). Secret; its secret scalar
/// is zeroized on drop by `generic-ec`.
#[derive(Clone, Serialize, Deserialize)]
pub struct EcdsaKeyShare(pub(crate) cggmp24::KeyShare<Curve, Level>);

impl EcdsaKeyShare {
    /// Joins a key share with the node's aux info; fails if they belong to different node sets.
    pub fn from_parts(share: IncompleteEcdsaShare, aux: AuxInfo) -> Result<Self, ProtocolError> {
        cggmp24::KeyShare::from_parts((share.0, aux.0))
            .map(Self)
            .map_err(|e| ProtocolError::InvalidKeyMaterial(ProtocolError::chain(&e)))
    }

    /// This party's index at key generation.
    pub fn index(&self) -> PartyIndex {
        PartyIndex::new(self.0.core.i)
    }

    pub fn n(&self) -> u16 {
        self.0.n()
    }

    pub fn threshold(&self) -> u16 {
        self.0.min_signers()
    }

    /// The wallet's master public key (compressed, 33 bytes).
    pub fn public_key(&self) -> PublicKey {
        public_key_of(&self.0.shared_public_key())
    }

    /// [`AuxInfo::public_digest`] of the aux info this share was joined with.
    pub fn aux_public_digest(&self) -> Result<[u8; 32], ProtocolError> {
        paillier_digest(&self.0.aux.N)
    }

    /// Every party's public share `X_j = x_j·G`, in key-generation order.
    pub fn public_shares(&self) -> Vec<PublicKey> {
        self.0
            .core
            .public_shares
            .iter()
            .map(|x| public_key_of(x))
            .collect()
    }

    /// Splits the share into its key-generation part and its aux info.
    pub fn into_parts(self) -> Result<(IncompleteEcdsaShare, AuxInfo), ProtocolError> {
        use cggmp24::key_share::Validate;
        let invalid =
            |e: &dyn std::error::Error| ProtocolError::InvalidKeyMaterial(ProtocolError::chain(e));
        let cggmp24::key_share::DirtyKeyShare { core, aux } = self.0.into_inner();
        let core = core.validate().map_err(|e| invalid(&e.into_error()))?;
        let aux = aux.validate().map_err(|e| invalid(&e.into_error()))?;
        Ok((IncompleteEcdsaShare(core), AuxInfo(aux)))
    }

    /// The master chain code (for the wallet's xpub).
    pub fn chain_code(&self) -> Result<[u8; 32], ProtocolError> {
        self.0
            .core
            .chain_code
            .ok_or_else(|| ProtocolError::InvalidKeyMaterial("key was generated without HD".into()))
    }

    /// The public side of the key, for a party without a share in a resharing.
    pub fn key_info(&self) -> crate::reshare::KeyInfo {
        crate::reshare::KeyInfo(self.0.core.key_info.clone())
    }

    /// Public key of the child at `path` (SLIP-10, equal to BIP-32 for non-hardened steps).
    pub fn derive_public_key(&self, path: &DerivationPath) -> Result<PublicKey, ProtocolError> {
        let child = self
            .0
            .derive_child_public_key::<cggmp24::hd_wallet::Slip10, _>(
                path.indices().iter().copied(),
            )
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))?;
        Ok(public_key_of(&child.public_key))
    }

    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        encoding::encode_secret(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(bytes)
    }

    /// `raw` is `signers` as the library takes them; the caller keeps it alive for the builder.
    fn signing<'r>(
        &'r self,
        eid: &'r ExecutionId,
        signers: &[PartyIndex],
        raw: &'r [u16],
        path: &DerivationPath,
    ) -> Result<cggmp24::signing::SigningBuilder<'r, Curve, Level, ProtocolDigest>, ProtocolError>
    {
        let i = position_in_signer_set(signers, self.index(), self.n(), self.threshold())?;
        let builder = cggmp24::signing(eid.cggmp24(), i.get(), raw, &self.0);
        if path.is_root() {
            return Ok(builder);
        }
        builder
            .set_derivation_path(path.indices().iter().copied())
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))
    }
}

impl std::fmt::Debug for EcdsaKeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EcdsaKeyShare(i {}, {}-of-{}, pk {}, <secret>)",
            self.index(),
            self.threshold(),
            self.n(),
            self.public_key()
        )
    }
}

/// Full interactive signing (presignature + online signing in one run). CPU-heavy.
pub async fn sign<M, R>(
    eid: &ExecutionId,
    share: &EcdsaKeyShare,
    signers: &[PartyIndex],
    path: &DerivationPath,
    message: &SighashPreimage,
    party: M,
    rng: &mut R,
) -> Result<EcdsaSignature, ProtocolError>
where
    M: Mpc<ProtocolMessage = SigningMsg>,
    R: RngCore + CryptoRng,
{
    let raw = raw_indices(signers);
    let sig = share
        .signing(eid, signers, &raw, path)?
        .sign(rng, party, &message.data_to_sign())
        .await
        .map_err(|e| ProtocolError::Signing(ProtocolError::chain(&e)))?;
    let sig = EcdsaSignature::from_lib(&sig);
    sig.verify(&share.derive_public_key(path)?, &message.sighash())?;
    Ok(sig)
}

/// A file of pregenerated primes, one set per node, as written by `mpc-wallet primes generate`.
/// Test fixtures and the local devnet use one so nobody waits minutes for safe primes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrimesFile {
    /// What the file is and how it was made.
    pub note: String,
    /// One set of four safe primes per node.
    pub primes: Vec<Primes>,
}

/// A file of aux info for one node set, one entry per party, as written by
/// `mpc-wallet aux-info generate`. Test fixture only (it holds every party's Paillier secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuxInfoFile {
    pub note: String,
    pub aux_info: Vec<AuxInfo>,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use paillier_zk::backend::IsPrime;

    use super::*;

    fn is_prime(n: &Integer) -> bool {
        matches!(
            n.is_probably_prime(25, &mut rand_core::OsRng),
            IsPrime::Yes | IsPrime::Probably
        )
    }

    /// The parallel path at a small size (the library makes any size; only the set checks
    /// 1536 bits): four distinct safe primes of that size, made on the threads asked for.
    #[test]
    fn parallel_safe_primes_are_safe_primes_of_the_size() {
        for threads in [1, 3, 8] {
            let started = AtomicUsize::new(0);
            let primes = safe_primes_parallel(256, threads, || {
                started.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(started.load(Ordering::Relaxed), threads.min(4));
            for (k, p) in primes.iter().enumerate() {
                assert_eq!(p.significant_bits(), 256);
                assert!(is_prime(p), "prime {k} of {threads} threads");
                let q = p.clone() >> 1u32;
                assert!(is_prime(&q), "(p - 1) / 2 of prime {k}");
                assert!(primes[..k].iter().all(|o| o != p), "prime {k} repeated");
            }
        }
    }

    /// A set assembled from four integers is the library's: the fixture's primes make the
    /// same set again, and primes below the security level are refused.
    #[test]
    fn a_set_from_integers_is_checked_by_the_library() {
        let fixture = Primes::from_bytes(&mpc_testkit::primes()[0].to_bytes().unwrap()).unwrap();
        let again = Primes::from_primes(fixture.0.primes_ref().clone()).unwrap();
        assert_eq!(*again.to_bytes().unwrap(), *fixture.to_bytes().unwrap());
        let small = safe_primes_parallel(256, 2, || ()).unwrap();
        assert!(Primes::from_primes(small).is_err());
    }
}
