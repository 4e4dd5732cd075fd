//! Whole ceremonies run in one process over [`crate::sim`]: what the demo, the tests and the
//! baseline benchmarks use. Every party runs the same protocol function a node runs.

use rand_core::OsRng;
use uuid::Uuid;

use crate::{
    ecdsa::{self, AuxInfo, EcdsaKeyShare, Presignature, Primes, SighashPreimage},
    execution::{ExecutionId, ProtocolKind},
    refresh,
    schnorr::{self, SchnorrKeyShare, SchnorrSignatureShare},
    signature::{EcdsaSignature, SchnorrSignature},
    sim, DerivationPath, PartyIndex, ProtocolError,
};

fn eid(kind: ProtocolKind, wallet: &str, parties: &[PartyIndex], params: &[u8]) -> ExecutionId {
    ExecutionId::derive(kind, wallet, Uuid::new_v4(), parties, params)
}

fn all_parties(n: u16) -> Vec<PartyIndex> {
    PartyIndex::all(n)
}

fn collect<T>(results: Vec<Result<T, ProtocolError>>) -> Result<Vec<T>, ProtocolError> {
    results.into_iter().collect()
}

/// Aux info for `primes.len()` parties (one set of primes each).
pub fn aux_info(primes: Vec<Primes>) -> Result<Vec<AuxInfo>, ProtocolError> {
    let n = u16::try_from(primes.len())
        .map_err(|_| ProtocolError::InvalidParameters("too many parties".into()))?;
    let eid = eid(ProtocolKind::AuxInfo, "", &all_parties(n), &[]);
    let primes = std::sync::Mutex::new(primes.into_iter().map(Some).collect::<Vec<_>>());
    collect(sim::run(n, |i, party| {
        let mine = primes
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(usize::from(i)).and_then(Option::take));
        async move {
            let mine = mine.ok_or_else(|| ProtocolError::AuxInfo("primes missing".into()))?;
            ecdsa::generate_aux_info(&eid, PartyIndex::new(i), n, mine, party, &mut OsRng).await
        }
    }))
}

/// A `t`-of-`n` ECDSA wallet; `aux` is the node set's aux info (`n` entries).
pub fn ecdsa_keygen(t: u16, aux: &[AuxInfo]) -> Result<Vec<EcdsaKeyShare>, ProtocolError> {
    let n = u16::try_from(aux.len())
        .map_err(|_| ProtocolError::InvalidParameters("too many parties".into()))?;
    let eid = eid(
        ProtocolKind::EcdsaKeygen,
        "local",
        &all_parties(n),
        &t.to_be_bytes(),
    );
    let incomplete = collect(sim::run(n, |i, party| async move {
        ecdsa::keygen(&eid, PartyIndex::new(i), n, t, party, &mut OsRng).await
    }))?;
    incomplete
        .into_iter()
        .zip(aux.iter().cloned())
        .map(|(share, aux)| EcdsaKeyShare::from_parts(share, aux))
        .collect()
}

/// The shares of the signers in `signers` (key-generation indices), in that order.
fn select<'a, S>(shares: &'a [S], signers: &[PartyIndex]) -> Result<Vec<&'a S>, ProtocolError> {
    signers
        .iter()
        .map(|s| {
            shares
                .get(s.as_usize())
                .ok_or_else(|| ProtocolError::InvalidSignerSet {
                    signers: signers.to_vec(),
                    reason: format!("no share for party {s}"),
                })
        })
        .collect()
}

/// One presignature per signer, all bound to (`shares`' key, `path`, `signers`).
pub fn presign(
    shares: &[EcdsaKeyShare],
    signers: &[PartyIndex],
    path: &DerivationPath,
) -> Result<Vec<Presignature>, ProtocolError> {
    let mine = select(shares, signers)?;
    let t = signers.len() as u16;
    let eid = eid(
        ProtocolKind::EcdsaPresign,
        "local",
        signers,
        &path.to_bytes(),
    );
    collect(sim::run(t, |j, party| {
        let share = mine[usize::from(j)];
        async move { ecdsa::presign(&eid, share, signers, path, party, &mut OsRng).await }
    }))
}

/// Online signing: each signer issues its partial signature from its presignature; the
/// partials are combined and the result verified against the key at the bound path.
pub fn sign_with_presignatures(
    shares: &[EcdsaKeyShare],
    presignatures: Vec<Presignature>,
    message: &SighashPreimage,
) -> Result<EcdsaSignature, ProtocolError> {
    let first = presignatures
        .first()
        .ok_or_else(|| ProtocolError::Combine("no presignatures".into()))?;
    let binding = first.binding().clone();
    let public = first.public().clone();
    let mine = select(shares, &binding.signers)?;
    let child_key = mine[0].derive_public_key(&binding.path)?;
    let partials = presignatures
        .into_iter()
        .zip(&mine)
        .map(|(p, share)| {
            p.issue_partial_signature(share, &binding.path, &binding.signers, message)
        })
        .collect::<Result<Vec<_>, _>>()?;
    ecdsa::combine(&public, &binding, &partials, message, &child_key)
}

/// Full interactive ECDSA signing by `signers`.
pub fn ecdsa_sign(
    shares: &[EcdsaKeyShare],
    signers: &[PartyIndex],
    path: &DerivationPath,
    message: &SighashPreimage,
) -> Result<EcdsaSignature, ProtocolError> {
    let mine = select(shares, signers)?;
    let t = signers.len() as u16;
    let eid = eid(
        ProtocolKind::EcdsaSign,
        "local",
        signers,
        &message.sighash(),
    );
    let sigs = collect(sim::run(t, |j, party| {
        let share = mine[usize::from(j)];
        async move { ecdsa::sign(&eid, share, signers, path, message, party, &mut OsRng).await }
    }))?;
    sigs.into_iter()
        .next()
        .ok_or_else(|| ProtocolError::Signing("no signers".into()))
}

/// A `t`-of-`n` FROST wallet.
pub fn schnorr_keygen(t: u16, n: u16) -> Result<Vec<SchnorrKeyShare>, ProtocolError> {
    let eid = eid(
        ProtocolKind::SchnorrKeygen,
        "local",
        &all_parties(n),
        &t.to_be_bytes(),
    );
    collect(sim::run(n, |i, party| async move {
        schnorr::keygen(&eid, PartyIndex::new(i), n, t, party, &mut OsRng).await
    }))
}

/// FROST signing of a BIP-341 sighash by `signers`, for the key at `path`: every signer's
/// share, then the aggregation by the first signer (the coordinator's part).
pub fn schnorr_sign(
    shares: &[SchnorrKeyShare],
    signers: &[PartyIndex],
    path: &DerivationPath,
    sighash: &[u8; 32],
) -> Result<SchnorrSignature, ProtocolError> {
    let signature_shares = schnorr_signature_shares(shares, signers, path, sighash)?;
    let coordinator = select(shares, signers)?
        .first()
        .copied()
        .ok_or_else(|| ProtocolError::Signing("no signers".into()))?;
    let internal_key = coordinator.derive_public_key(path)?.x_only();
    schnorr::aggregate(coordinator, path, &internal_key, sighash, &signature_shares)
}

/// The signers' FROST signature shares, not yet aggregated.
pub fn schnorr_signature_shares(
    shares: &[SchnorrKeyShare],
    signers: &[PartyIndex],
    path: &DerivationPath,
    sighash: &[u8; 32],
) -> Result<Vec<SchnorrSignatureShare>, ProtocolError> {
    let mine = select(shares, signers)?;
    let t = signers.len() as u16;
    collect(sim::run(t, |j, party| {
        let share = mine[usize::from(j)];
        async move { schnorr::sign_share(share, signers, path, sighash, party, &mut OsRng).await }
    }))
}

/// Refreshes every party's FROST share (all `n` take part): same key, new shares.
pub fn schnorr_refresh(shares: &[SchnorrKeyShare]) -> Result<Vec<SchnorrKeyShare>, ProtocolError> {
    let (n, eid) = refresh_setup(shares.first().map(|s| (s.n(), s.threshold())))?;
    collect(sim::run(n, |i, party| {
        let share = shares.get(usize::from(i));
        async move {
            let share = share.ok_or_else(|| ProtocolError::Refresh("share missing".into()))?;
            refresh::refresh_schnorr(&eid, share, party, &mut OsRng).await
        }
    }))
}

/// Refreshes every party's ECDSA share and joins party `i`'s new share with `new_aux[i]`.
pub fn ecdsa_refresh(
    shares: &[EcdsaKeyShare],
    new_aux: &[AuxInfo],
) -> Result<Vec<EcdsaKeyShare>, ProtocolError> {
    let (n, eid) = refresh_setup(shares.first().map(|s| (s.n(), s.threshold())))?;
    collect(sim::run(n, |i, party| {
        let share = shares.get(usize::from(i));
        let aux = new_aux.get(usize::from(i)).cloned();
        async move {
            let (share, aux) = share
                .zip(aux)
                .ok_or_else(|| ProtocolError::Refresh("share or aux info missing".into()))?;
            refresh::refresh_ecdsa(&eid, share, aux, party, &mut OsRng).await
        }
    }))
}

/// `n` and a fresh refresh execution id for a `t`-of-`n` key.
fn refresh_setup(params: Option<(u16, u16)>) -> Result<(u16, ExecutionId), ProtocolError> {
    let (n, t) = params.ok_or_else(|| ProtocolError::InvalidParameters("no shares".into()))?;
    let eid = eid(
        ProtocolKind::KeyRefresh,
        "local",
        &all_parties(n),
        &t.to_be_bytes(),
    );
    Ok((n, eid))
}
