//! Keys, signatures and the verifiable random beacon.

use serde::{Deserialize, Serialize};
use vrf_rfc9381::ec::edwards25519::tai::{EdVrfEdwards25519TaiPublicKey, EdVrfEdwards25519TaiSecretKey};
use vrf_rfc9381::{Proof as _, Prover as _, Verifier as _};

/// An ed25519 public key: the address of an account, node or committee member.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pubkey(pub [u8; 32]);

impl std::fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl Pubkey {
    /// First 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn hex(&self) -> String {
        to_hex(&self.0)
    }
    pub fn from_hex(s: &str) -> Option<Pubkey> {
        from_hex32(s).map(Pubkey)
    }
}

/// Lowercase hex of `bytes`: keys, hashes and commitments on the wire.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from exactly 64 lowercase hex digits (keys, BLAKE3 hashes), or
/// `None`. Only the canonical form [`to_hex`] writes is accepted, so one
/// value has one spelling (`+f`, `0F` and ` f` are refused).
pub fn from_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// A signing key. Created from 32 seed bytes so that tests and the simulator
/// derive every key from their seed.
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl Keypair {
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair(ed25519_dalek::SigningKey::from_bytes(&seed))
    }
    pub fn pubkey(&self) -> Pubkey {
        Pubkey(self.0.verifying_key().to_bytes())
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(msg).to_bytes()
    }
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

pub fn verify_signature(key: &Pubkey, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

/// Longest a signed blob request may stay valid: its expiry is at most this
/// far ahead of the ledger's clock.
pub const BLOB_REQUEST_TTL_MAX_MS: u64 = 10 * 60 * 1000;

/// The bytes a blob request (`PUT` or `GET` on a ledger's `/v1/blobs/{hash}`)
/// signs: a domain tag, the method, the blob's hash (64 hex digits) and the
/// expiry (ms since the Unix epoch), one per line. The tag keeps such a
/// signature from ever being a valid instruction signature, and the other way
/// round. Sent as `x-splitup-key` (signer, hex), `x-splitup-expires` (decimal)
/// and `x-splitup-signature` (hex).
pub fn blob_request_message(method: &str, hash: &str, expires_ms: u64) -> Vec<u8> {
    format!("splitup-blob-request-v1\n{method}\n{hash}\n{expires_ms}").into_bytes()
}

/// The seal a validator commits before it may see the result it checks:
/// BLAKE3 keyed by (domain tag, validator, execution, task) over its output
/// bytes. Producing it needs the bytes themselves, not their hash (which is
/// public once the asserter commits), and it differs per validator, so a
/// seal can be neither copied from the asserter nor from another validator.
pub fn validation_seal(validator: &Pubkey, execution: u64, task: u32, output_bytes: &[u8]) -> [u8; 32] {
    let mut h = validation_sealer(validator, execution, task);
    h.update(output_bytes);
    *h.finalize().as_bytes()
}

/// [`validation_seal`] as a hasher, to seal bytes that arrive in pieces.
pub fn validation_sealer(validator: &Pubkey, execution: u64, task: u32) -> blake3::Hasher {
    let key = blake3::hash(
        &[
            &b"splitup-validation-seal-v1"[..],
            &validator.0,
            &execution.to_le_bytes(),
            &task.to_le_bytes(),
        ]
        .concat(),
    );
    blake3::Hasher::new_keyed(key.as_bytes())
}

/// Whether every URI names the blob `commitment` (its last path segment is
/// the commitment's 64 hex digits), and there is at least one: a result's
/// location is bound to what was committed, so a reader can never be sent
/// to other bytes than the ones validated.
pub fn uris_name(uris: &[String], commitment: &[u8; 32]) -> bool {
    let hex = to_hex(commitment);
    !uris.is_empty()
        && uris
            .iter()
            .all(|u| u.rsplit('/').next() == Some(hex.as_str()) && !u.contains(['?', '#']))
}

/// 64 bytes from exactly 128 lowercase hex digits (a signature), or `None`.
pub fn from_hex64(s: &str) -> Option<[u8; 64]> {
    if s.len() != 128 || !s.is_char_boundary(64) {
        return None;
    }
    let (a, b) = s.split_at(64);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&from_hex32(a)?);
    out[32..].copy_from_slice(&from_hex32(b)?);
    Some(out)
}

/// A VRF proof (RFC 9381 ECVRF-EDWARDS25519-SHA512-TAI): 80 bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrfProof(pub Vec<u8>);

impl std::fmt::Debug for VrfProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VrfProof({}…)",
            self.0.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()
        )
    }
}

/// The source of challenge randomness. The ledger holds the secret key; the
/// state machine receives the beacon as an argument (it never owns secrets),
/// stores every proof, and anyone can check it with [`vrf_verify`].
pub trait Beacon {
    fn public_key(&self) -> Pubkey;
    /// Proves `alpha`: the proof and its 64-byte output (beta).
    fn prove(&self, alpha: &[u8]) -> (VrfProof, [u8; 64]);
}

/// The RFC 9381 beacon.
pub struct VrfBeacon {
    secret: EdVrfEdwards25519TaiSecretKey,
    public: Pubkey,
}

impl VrfBeacon {
    pub fn from_seed(seed: [u8; 32]) -> VrfBeacon {
        let secret = EdVrfEdwards25519TaiSecretKey::from_slice(&seed).expect("any 32 bytes are a key");
        let public = Keypair::from_seed(seed).pubkey();
        VrfBeacon { secret, public }
    }
}

impl Beacon for VrfBeacon {
    fn public_key(&self) -> Pubkey {
        self.public
    }
    fn prove(&self, alpha: &[u8]) -> (VrfProof, [u8; 64]) {
        let proof = self.secret.prove(alpha).expect("proving never fails for a valid key");
        let pi = proof.encode_to_pi();
        // beta = proof_to_hash(pi) (RFC 9381 §5.2); verifying one's own proof is not needed.
        let hash = proof
            .proof_to_hash(vrf_rfc9381::Ciphersuite::ECVRF_EDWARDS25519_SHA512_TAI)
            .expect("a fresh proof hashes");
        let mut beta = [0u8; 64];
        beta.copy_from_slice(&hash);
        (VrfProof(pi), beta)
    }
}

/// Verifies a VRF proof and returns its output, or `None` if it is invalid.
pub fn vrf_verify(key: &Pubkey, alpha: &[u8], proof: &VrfProof) -> Option<[u8; 64]> {
    let vk = EdVrfEdwards25519TaiPublicKey::from_slice(&key.0).ok()?;
    let p = <EdVrfEdwards25519TaiPublicKey as vrf_rfc9381::Verifier<_>>::Proof::decode_pi(&proof.0).ok()?;
    let beta = vk.verify(alpha, p).ok()?;
    let mut out = [0u8; 64];
    out.copy_from_slice(&beta);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_has_one_spelling() {
        let k = [0x0fu8; 32];
        assert_eq!(from_hex32(&to_hex(&k)), Some(k));
        for bad in ["+f", "0F", " f", "-0", "0x"] {
            let s = format!("{bad:0<64}");
            assert_eq!(from_hex32(&s[..64]), None, "{s:?}");
        }
        assert_eq!(from_hex32(&"é".repeat(32)), None);
        assert_eq!(from_hex32(&"0".repeat(63)), None);
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 9381 Appendix B.3 (ECVRF-EDWARDS25519-SHA512-TAI), Examples 16-18.
    #[test]
    fn rfc9381_vectors() {
        let vectors = [
            ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "", "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805", "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae"),
            ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72", "f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02", "eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031"),
            ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7", "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82", "9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf8096bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a2d41b00b05081ed0f58ee5e31b3a970e", "645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c452118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f"),
        ];
        for (sk, pk, alpha, pi, beta) in vectors {
            let b = VrfBeacon::from_seed(unhex(sk).try_into().unwrap());
            assert_eq!(b.public_key().hex(), pk);
            let (proof, out) = b.prove(&unhex(alpha));
            assert_eq!(hex::encode(&proof.0), pi);
            assert_eq!(hex::encode(out), beta);
            assert_eq!(
                vrf_verify(&b.public_key(), &unhex(alpha), &proof).map(hex::encode),
                Some(beta.to_string())
            );
        }
    }

    #[test]
    fn tampered_proofs_and_alphas_fail() {
        let b = VrfBeacon::from_seed([7; 32]);
        let (proof, _) = b.prove(b"execution 1 task 2");
        assert!(vrf_verify(&b.public_key(), b"execution 1 task 3", &proof).is_none());
        let mut bad = proof.clone();
        bad.0[40] ^= 1;
        assert!(vrf_verify(&b.public_key(), b"execution 1 task 2", &bad).is_none());
        assert!(vrf_verify(&b.public_key(), b"execution 1 task 2", &VrfProof(vec![0; 3])).is_none());
    }

    #[test]
    fn blob_requests_sign_method_hash_and_expiry() {
        let k = Keypair::from_seed([3; 32]);
        let h = "ab".repeat(32);
        let sig = k.sign(&blob_request_message("PUT", &h, 1000));
        assert_eq!(from_hex64(&to_hex(&sig)), Some(sig));
        assert!(verify_signature(
            &k.pubkey(),
            &blob_request_message("PUT", &h, 1000),
            &sig
        ));
        for other in [
            blob_request_message("GET", &h, 1000),
            blob_request_message("PUT", &"cd".repeat(32), 1000),
            blob_request_message("PUT", &h, 1001),
        ] {
            assert!(!verify_signature(&k.pubkey(), &other, &sig));
        }
        assert_eq!(from_hex64(&"0".repeat(127)), None);
        assert_eq!(from_hex64(&"é".repeat(64)), None);
    }

    #[test]
    fn signatures_bind_key_and_message() {
        let k = Keypair::from_seed([1; 32]);
        let sig = k.sign(b"hello");
        assert!(verify_signature(&k.pubkey(), b"hello", &sig));
        assert!(!verify_signature(&k.pubkey(), b"hellO", &sig));
        assert!(!verify_signature(&Keypair::from_seed([2; 32]).pubkey(), b"hello", &sig));
    }
}
