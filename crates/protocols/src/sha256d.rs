//! Double SHA-256 as a `digest::Digest`, so that Bitcoin's legacy/segwit-v0 sighash is computed
//! *by cggmp24* from the preimage (`DataToSign::digest::<Sha256d>(preimage)`), never accepted
//! as a bare hash.

use digest::{
    consts::U32, core_api::BlockSizeUser, FixedOutput, HashMarker, Output, OutputSizeUser, Reset,
    Update,
};
use sha2::{Digest as _, Sha256};

/// SHA-256 applied twice: `sha256(sha256(data))`.
#[derive(Clone, Default)]
pub struct Sha256d(Sha256);

impl HashMarker for Sha256d {}

impl OutputSizeUser for Sha256d {
    type OutputSize = U32;
}

impl BlockSizeUser for Sha256d {
    type BlockSize = <Sha256 as BlockSizeUser>::BlockSize;
}

impl Update for Sha256d {
    fn update(&mut self, data: &[u8]) {
        Update::update(&mut self.0, data);
    }
}

impl FixedOutput for Sha256d {
    fn finalize_into(self, out: &mut Output<Self>) {
        let once = self.0.finalize();
        out.copy_from_slice(&Sha256::digest(once));
    }
}

impl Reset for Sha256d {
    fn reset(&mut self) {
        Reset::reset(&mut self.0);
    }
}

/// `sha256(sha256(data))` as bytes.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&<Sha256d as digest::Digest>::digest(data));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_two_rounds_of_sha256() {
        // sha256d("") is a well-known constant.
        assert_eq!(
            hex::encode(sha256d(b"")),
            "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
        );
        let data = b"mpc-wallet";
        assert_eq!(sha256d(data)[..], Sha256::digest(Sha256::digest(data))[..]);
    }
}
