//! Every modular exponentiation one signer does for one CGGMP24 presignature (cggmp24
//! 0.7.0-alpha.3 `signing_n_out_of_n`, rounds 1 to 3; proofs from paillier-zk 0.7.0-alpha.3;
//! Paillier from fast-paillier 0.3.2), counted from the sources, as a function of
//! m = t - 1 (the other signers). Security level 128: Paillier and ring-Pedersen moduli of
//! 3072 bits, ell = 256, ell' = 1280, epsilon = 512 (`cggmp24::security_level`).

/// The modulus of an exponentiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modulus {
    /// N_j^2 of another signer's Paillier key (6144 bits): no factors, no CRT.
    OtherNn,
    /// p^2 or q^2 of one's own Paillier key (3072 bits): one half of a CRT exponentiation
    /// mod N_i^2 (fast-paillier `CrtExp`), so every own-key operation counts twice.
    OwnPp,
    /// A Paillier modulus N (3072 bits), without CRT: one's own N_i (where CRT could
    /// apply) or another's N_j.
    PlainN,
    /// A ring-Pedersen modulus N-hat (3072 bits): the other signer's when proving, one's own
    /// when verifying; no CRT either way (aux info keeps no factors of N-hat).
    NHat,
}

impl Modulus {
    pub fn bits(self) -> u32 {
        match self {
            Modulus::OtherNn => 6144,
            _ => 3072,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Modulus::OtherNn => "N_j^2",
            Modulus::OwnPp => "p^2, q^2 (CRT)",
            Modulus::PlainN => "N_i, N_j",
            Modulus::NHat => "N-hat",
        }
    }
}

/// One line of the count: `per_m * m + fixed` exponentiations of `exp_bits` mod `modulus`.
pub struct Site {
    pub what: &'static str,
    /// Where it happens, file:line in the crates' sources (~/.cargo/registry/src/*/).
    pub source: &'static str,
    pub modulus: Modulus,
    pub exp_bits: u32,
    pub fixed: u32,
    pub per_m: u32,
}

impl Site {
    pub fn count(&self, m: u32) -> u32 {
        self.fixed + self.per_m * m
    }
}

/// The three source files, for [`site!`].
macro_rules! source_file {
    (SIGN) => {
        "cggmp24/src/signing.rs"
    };
    (ENC) => {
        "paillier-zk/src/paillier_encryption_in_range_with_el_gamal.rs"
    };
    (AFF) => {
        "paillier-zk/src/paillier_affine_operation_in_range.rs"
    };
}

macro_rules! site {
    ($what:expr, $file:ident, $lines:literal, $modulus:ident, $bits:expr, $fixed:expr, $per_m:expr) => {
        Site {
            what: $what,
            source: concat!(source_file!($file), ":", $lines),
            modulus: Modulus::$modulus,
            exp_bits: $bits,
            fixed: $fixed,
            per_m: $per_m,
        }
    };
}

/// Sizes of the exponents: Paillier encryption raises the nonce to N (3072 bits); a CRT
/// half reduces the exponent mod p(p-1) (3072 bits); scalars and challenges are below the
/// curve order (256); the range-proof masks are (ell + epsilon) = 768, (ell' + epsilon) =
/// 1792 and N-hat * 2^(ell + epsilon) = 3840 bits, N-hat * 2^ell = 3328 (signed: one bit
/// less in magnitude, counted at the nominal size).
#[rustfmt::skip]
pub fn sites() -> Vec<Site> {
    vec![
        // Round 1.
        site!("Paillier enc G_i, K_i (own key)", SIGN, "835,838", OwnPp, 3072, 4, 0),
        site!("pi_enc-elg prove: D = enc_i(alpha) (own key), x2m proofs", ENC, "236", OwnPp, 3072, 0, 4),
        site!("pi_enc-elg prove: S = s^k t^mu (mod N-hat_j)", ENC, "234", NHat, 256, 0, 2),
        site!("pi_enc-elg prove: S = s^k t^mu (mod N-hat_j)", ENC, "234", NHat, 3328, 0, 2),
        site!("pi_enc-elg prove: T = s^alpha t^gamma (mod N-hat_j)", ENC, "235", NHat, 768, 0, 2),
        site!("pi_enc-elg prove: T = s^alpha t^gamma (mod N-hat_j)", ENC, "235", NHat, 3840, 0, 2),
        site!("pi_enc-elg prove: z2 = rho^e mod N_i", ENC, "263", PlainN, 256, 0, 2),
        // Round 2: the others' pi_enc-elg proofs (psi0, psi1), against one's own N-hat.
        site!("pi_enc-elg verify: enc_j(z1, z2)", ENC, "303", OtherNn, 3072, 0, 2),
        site!("pi_enc-elg verify: e * K_j (omul)", ENC, "308", OtherNn, 256, 0, 2),
        site!("pi_enc-elg verify: s^z1 t^z3 (mod own N-hat)", ENC, "327", NHat, 768, 0, 2),
        site!("pi_enc-elg verify: s^z1 t^z3 (mod own N-hat)", ENC, "327", NHat, 3840, 0, 2),
        site!("pi_enc-elg verify: S^e (mod own N-hat)", ENC, "329", NHat, 256, 0, 2),
        // Round 2: the MtA for each other signer j.
        site!("gamma_i * K_j, x_i * K_j (omul, j's key)", SIGN, "1095,1114", OtherNn, 256, 0, 2),
        site!("enc_j(-beta), enc_j(-beta-hat) (j's key)", SIGN, "1098,1117", OtherNn, 3072, 0, 2),
        site!("F, F-hat = enc_i(-beta) (own key)", SIGN, "1107,1127", OwnPp, 3072, 0, 4),
        site!("pi_aff-g prove: A = alpha * K_j + enc_j(beta)", AFF, "311", OtherNn, 3072, 0, 2),
        site!("pi_aff-g prove: A = alpha * K_j + enc_j(beta)", AFF, "312", OtherNn, 768, 0, 2),
        site!("pi_aff-g prove: B_y = enc_i(beta) (own key)", AFF, "316", OwnPp, 3072, 0, 4),
        site!("pi_aff-g prove: E = s^alpha t^gamma, F = s^beta t^delta", AFF, "317,319", NHat, 3840, 0, 4),
        site!("pi_aff-g prove: E = s^alpha t^gamma", AFF, "317", NHat, 768, 0, 2),
        site!("pi_aff-g prove: F = s^beta t^delta", AFF, "319", NHat, 1792, 0, 2),
        site!("pi_aff-g prove: S = s^x t^m, T = s^y t^mu", AFF, "318,320", NHat, 3328, 0, 4),
        site!("pi_aff-g prove: S = s^x t^m", AFF, "318", NHat, 256, 0, 2),
        site!("pi_aff-g prove: T = s^y t^mu", AFF, "320", NHat, 1280, 0, 2),
        site!("pi_aff-g prove: w = r rho^e mod N_j", AFF, "350", PlainN, 256, 0, 2),
        site!("pi_aff-g prove: w_y = r_y rho_y^e mod N_i", AFF, "356", PlainN, 256, 0, 2),
        // Round 3: the others' pi_aff-g proofs (psi, psi-hat) over one's own K_i.
        site!("pi_aff-g verify: z1 * K_i (omul, own key)", AFF, "414", OwnPp, 768, 0, 4),
        site!("pi_aff-g verify: enc_i(z2, w) (own key)", AFF, "418", OwnPp, 3072, 0, 4),
        site!("pi_aff-g verify: e * D (omul, own key)", AFF, "427", OwnPp, 256, 0, 4),
        site!("pi_aff-g verify: enc_j(z2, w_y) (j's key)", AFF, "443", OtherNn, 3072, 0, 2),
        site!("pi_aff-g verify: e * F (omul, j's key)", AFF, "448", OtherNn, 256, 0, 2),
        site!("pi_aff-g verify: s^z1 t^z3, s^z2 t^z4 (own N-hat)", AFF, "457,463", NHat, 3840, 0, 4),
        site!("pi_aff-g verify: s^z1 t^z3 (own N-hat)", AFF, "457", NHat, 768, 0, 2),
        site!("pi_aff-g verify: s^z2 t^z4 (own N-hat)", AFF, "463", NHat, 1792, 0, 2),
        site!("pi_aff-g verify: S^e, T^e (own N-hat)", AFF, "458,464", NHat, 256, 0, 4),
        site!("decrypt D, D-hat (own key, c^lambda)", SIGN, "1309,1319", OwnPp, 3072, 0, 4),
    ]
}

/// The distinct (modulus, exponent) sizes of [`sites`], in a fixed order.
pub fn sizes() -> Vec<(Modulus, u32)> {
    let mut out: Vec<(Modulus, u32)> = Vec::new();
    for s in sites() {
        if !out.contains(&(s.modulus, s.exp_bits)) {
            out.push((s.modulus, s.exp_bits));
        }
    }
    out
}

/// Modular exponentiations per party of `(modulus, exp_bits)` for m other signers.
pub fn count(modulus: Modulus, exp_bits: u32, m: u32) -> u32 {
    sites()
        .iter()
        .filter(|s| s.modulus == modulus && s.exp_bits == exp_bits)
        .map(|s| s.count(m))
        .sum()
}

/// The `s^x t^y mod N-hat` pairs (one `Aux::combine` each, two exponentiations without a
/// table), per party for m others: (x bits, y bits, on one's own N-hat?, count).
pub fn combines(m: u32) -> Vec<(u32, u32, bool, u32)> {
    vec![
        (256, 3328, false, 4 * m),  // enc-elg S, aff S
        (768, 3840, false, 4 * m),  // enc-elg T, aff E
        (1792, 3840, false, 2 * m), // aff F
        (1280, 3328, false, 2 * m), // aff T
        (768, 3840, true, 4 * m),   // enc-elg and aff verify, s^z1 t^z3
        (1792, 3840, true, 2 * m),  // aff verify, s^z2 t^z4
    ]
}
