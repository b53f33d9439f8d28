//! C2SP tlog-cosignature (<https://c2sp.org/tlog-cosignature>): Ed25519 `cosignature/v1`, the
//! timestamped statement of a witness that a checkpoint is the largest consistent tree it has
//! seen for the log.
//!
//! A cosignature is a signed-note signature line on the checkpoint
//! (tlog-cosignature §Format):
//!
//! * key id: `SHA-256(name || "\n" || 0x04 || public key)[:4]`;
//! * signature: `u64 timestamp (big-endian) || Ed25519 signature` (`timestamped_signature`);
//! * signed message (§Ed25519 signed message): `cosignature/v1\ntime <timestamp>\n` followed by
//!   the checkpoint's note text (with its final newline, without signature lines);
//! * verifier key (§Format, signed-note §Verifier keys): `name+keyid+base64(0x04 || key)`.
//!
//! The ML-DSA-44 type (0x06) is out of scope: no vetted ML-DSA crate is used here yet.
//! Time is a parameter: this crate reads no clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::note::{Note, NoteError, NoteSignature, check_key_name, split_key_string, typed_key_id};

/// The signature type byte of Ed25519 cosignatures (signed-note §Signature types).
pub const COSIGNATURE_V1: u8 = 0x04;
/// The largest timestamp a cosignature may carry (tlog-cosignature §Format: "MUST NOT exceed
/// 2^63 - 1").
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;
/// 8 bytes of timestamp and 64 of Ed25519 signature.
const SIGNATURE_LEN: usize = 8 + 64;

/// Why a cosignature, or a cosigner key, was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CosignatureError {
    #[error("invalid cosigner key: {0}")]
    BadKey(&'static str),
    #[error("{0}")]
    Note(#[from] NoteError),
    #[error("the note carries no cosignature from {0}")]
    NotCosigned(String),
    #[error("the cosignature of {name} is malformed: {reason}")]
    Malformed { name: String, reason: &'static str },
    #[error("the cosignature of {0} does not verify for this checkpoint")]
    BadSignature(String),
    #[error("a cosignature timestamp must be between 1 and 2^63-1, got {0}")]
    BadTimestamp(u64),
}

/// The message a `cosignature/v1` signs (tlog-cosignature §Ed25519 signed message):
///
/// ```text
/// cosignature/v1
/// time <timestamp>
/// <checkpoint note text>
/// ```
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(40 + checkpoint_text.len());
    m.extend_from_slice(b"cosignature/v1\ntime ");
    m.extend_from_slice(timestamp.to_string().as_bytes());
    m.push(b'\n');
    m.extend_from_slice(checkpoint_text.as_bytes());
    m
}

/// `SHA-256(name || "\n" || 0x04 || public key)[:4]` (tlog-cosignature §Format).
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    typed_key_id(name, COSIGNATURE_V1, public)
}

/// A witness's signing key for Ed25519 cosignatures.
pub struct CosignatureSigner {
    name: String,
    key: SigningKey,
    id: u32,
}

impl CosignatureSigner {
    /// # Errors
    /// An invalid key name (signed-note §Format: non-empty, no spaces, no `+`).
    pub fn new(name: &str, seed: [u8; 32]) -> Result<Self, CosignatureError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_string(),
            key,
            id,
        })
    }

    /// Parses `PRIVATE+KEY+name+keyid+base64(0x04 || seed)`: the signer-key form of the Go
    /// `sumdb/note` package with the cosignature type byte.
    ///
    /// # Errors
    /// [`CosignatureError::BadKey`] naming the problem.
    pub fn from_key_string(s: &str) -> Result<Self, CosignatureError> {
        let rest = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(CosignatureError::BadKey(
                "a signer key starts with PRIVATE+KEY+",
            ))?;
        let (name, id, kind, raw) = split_key_string(rest)?;
        if kind != COSIGNATURE_V1 {
            return Err(CosignatureError::BadKey(
                "a cosigner key has type 0x04 (Ed25519 cosignature/v1)",
            ));
        }
        let seed: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CosignatureError::BadKey("an Ed25519 seed is 32 bytes"))?;
        let signer = Self::new(name, seed)?;
        if signer.id != id {
            return Err(CosignatureError::BadKey(
                "the key id does not match the key",
            ));
        }
        Ok(signer)
    }

    /// `PRIVATE+KEY+name+keyid+base64(0x04 || seed)`.
    pub fn to_key_string(&self) -> String {
        let mut raw = vec![COSIGNATURE_V1];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(raw)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Cosigns a checkpoint's note text (ending in a newline) as of `timestamp` (POSIX
    /// seconds): the signature line to append to the checkpoint.
    ///
    /// # Errors
    /// [`CosignatureError::BadTimestamp`] for 0 (tlog-witness: the timestamp "MUST NOT be
    /// zero") or a value above 2^63-1.
    pub fn sign(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<NoteSignature, CosignatureError> {
        if timestamp == 0 || timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::BadTimestamp(timestamp));
        }
        let sig: Signature = self.key.sign(&signed_message(checkpoint_text, timestamp));
        let mut signature = Vec::with_capacity(SIGNATURE_LEN);
        signature.extend_from_slice(&timestamp.to_be_bytes());
        signature.extend_from_slice(&sig.to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.id,
            signature,
        })
    }
}

/// A witness's verifier key for Ed25519 cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses `name+keyid+base64(0x04 || public key)`.
    ///
    /// # Errors
    /// [`CosignatureError::BadKey`] naming the problem.
    pub fn from_key_string(s: &str) -> Result<Self, CosignatureError> {
        let (name, id, kind, raw) = split_key_string(s.trim())?;
        if kind != COSIGNATURE_V1 {
            return Err(CosignatureError::BadKey(
                "a witness key has type 0x04 (Ed25519 cosignature/v1); this one is of another type",
            ));
        }
        let public: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CosignatureError::BadKey("an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| CosignatureError::BadKey("not an Ed25519 public key"))?;
        if key.is_weak() {
            return Err(CosignatureError::BadKey(
                "a small-order Ed25519 key, under which anyone can forge signatures",
            ));
        }
        if key_id(name, &public) != id {
            return Err(CosignatureError::BadKey(
                "the key id does not match the key",
            ));
        }
        Ok(Self {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn to_key_string(&self) -> String {
        let mut raw = vec![COSIGNATURE_V1];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The raw public key: two verifier keys wrapping the same key are duplicates
    /// (tlog-policy §Public key representation).
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Is this line this cosigner's (same key name and key id)? signed-note §Signatures:
    /// lines that match in only one of the two are someone else's and ignored.
    pub fn is_mine(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name && sig.key_id == self.id
    }

    /// Verifies one signature line of this cosigner over `checkpoint_text` and returns its
    /// timestamp.
    ///
    /// # Errors
    /// [`CosignatureError::NotCosigned`] when the line is someone else's; `Malformed`,
    /// `BadTimestamp` or `BadSignature` otherwise.
    pub fn verify_line(
        &self,
        checkpoint_text: &str,
        sig: &NoteSignature,
    ) -> Result<u64, CosignatureError> {
        if !self.is_mine(sig) {
            return Err(CosignatureError::NotCosigned(self.name.clone()));
        }
        if sig.signature.len() != SIGNATURE_LEN {
            return Err(CosignatureError::Malformed {
                name: self.name.clone(),
                reason: "a cosignature/v1 is 8 bytes of timestamp and 64 of signature",
            });
        }
        let (time, ed) = sig.signature.split_at(8);
        let mut t = [0u8; 8];
        t.copy_from_slice(time);
        let timestamp = u64::from_be_bytes(t);
        if timestamp == 0 || timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::BadTimestamp(timestamp));
        }
        let ed = Signature::from_slice(ed).map_err(|_| CosignatureError::Malformed {
            name: self.name.clone(),
            reason: "not an Ed25519 signature",
        })?;
        self.key
            .verify_strict(&signed_message(checkpoint_text, timestamp), &ed)
            .map_err(|_| CosignatureError::BadSignature(self.name.clone()))?;
        Ok(timestamp)
    }

    /// Verifies this cosigner's signature(s) on the note and returns the latest timestamp.
    /// Lines of other keys are ignored; any line of this key that does not verify fails the
    /// whole check (signed-note §Signatures: "clients SHOULD reject the whole note").
    ///
    /// # Errors
    /// [`CosignatureError::NotCosigned`] when the note has no line of this key, or the first
    /// failure of one of its lines.
    pub fn verify(&self, note: &Note) -> Result<u64, CosignatureError> {
        let mut latest = None;
        for sig in note.signatures.iter().filter(|s| self.is_mine(s)) {
            let t = self.verify_line(&note.text, sig)?;
            latest = Some(latest.map_or(t, |l: u64| l.max(t)));
        }
        latest.ok_or_else(|| CosignatureError::NotCosigned(self.name.clone()))
    }
}

#[cfg(test)]
mod tests;
