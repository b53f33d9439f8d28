//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 signatures, and the key
//! formats of the Go `sumdb/note` package that the ecosystem shares: verifier keys
//! `name+keyid+base64(0x01 || public key)` and signer keys
//! `PRIVATE+KEY+name+keyid+base64(0x01 || seed)`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The largest note accepted: checked before anything else is looked at.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// The most signature lines accepted (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// The signature type byte of Ed25519 (signed-note §Signature types).
const ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note, key or signature was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("the note is larger than {MAX_NOTE_BYTES} bytes")]
    TooLarge,
    #[error("the note is not valid UTF-8")]
    NotUtf8,
    #[error("the note contains a control character other than newline")]
    ControlCharacter,
    #[error("the note has no signatures (no blank line before signature lines)")]
    Unsigned,
    #[error("a signature line is malformed: {0}")]
    BadSignatureLine(&'static str),
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    BadKeyName(String),
    #[error("invalid key: {0}")]
    BadKey(&'static str),
    #[error("the signature of {0} does not verify")]
    BadSignature(String),
    #[error("no signature from a trusted key")]
    NoTrustedSignature,
}

/// A key name: non-empty, no Unicode spaces, no `+`.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::BadKeyName(name.to_string()));
    }
    Ok(())
}

/// `SHA-256(key name || 0x0A || 0x01 || public key)[:4]` (signed-note §Ed25519 signatures).
pub fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    typed_key_id(name, ED25519, public)
}

/// `SHA-256(key name || 0x0A || signature type || public key)[:4]`, the key id that
/// signed-note §Signatures recommends for every signature type.
pub fn typed_key_id(name: &str, kind: u8, public: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one signature line, without its newline: `— <key name> base64(key ID || sig)`
    /// (signed-note §Format).
    ///
    /// # Errors
    /// [`NoteError::BadSignatureLine`] naming what is malformed.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::BadSignatureLine(
                "it must start with an em dash and a space",
            ))?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::BadSignatureLine(
            "no space between key name and signature",
        ))?;
        check_key_name(name).map_err(|_| NoteError::BadSignatureLine("invalid key name"))?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::BadSignatureLine("the signature is not base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::BadSignatureLine("the signature is too short"));
        }
        Ok(Self {
            name: name.to_string(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// Appends the signature line, with its newline, to `out`.
    pub fn write_line(&self, out: &mut String) {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        out.push_str(SIG_PREFIX);
        out.push_str(&self.name);
        out.push(' ');
        out.push_str(&B64.encode(raw));
        out.push('\n');
    }

    /// The signature line with its newline.
    pub fn to_line(&self) -> String {
        let mut out = String::with_capacity(self.name.len() + 110);
        self.write_line(&mut out);
        out
    }
}

/// A parsed note: its text (ending in a newline) and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note, bounding its size first.
    ///
    /// # Errors
    /// [`NoteError`] naming what is malformed.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge);
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::ControlCharacter);
        }
        // The text is separated from the signatures by the last empty line.
        let split = s.rfind("\n\n").ok_or(NoteError::Unsigned)?;
        let text = &s[..=split];
        let sigs = &s[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Unsigned);
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        Ok(Self {
            text: text.to_string(),
            signatures,
        })
    }

    /// The note in its wire form.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 128 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            s.write_line(&mut out);
        }
        out
    }
}

/// An Ed25519 note signer.
pub struct Signer {
    name: String,
    key: SigningKey,
    id: u32,
}

impl Signer {
    /// # Errors
    /// An invalid key name.
    pub fn new(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_string(),
            key,
            id,
        })
    }

    /// Parses `PRIVATE+KEY+name+keyid+base64(0x01 || seed)`.
    ///
    /// # Errors
    /// [`NoteError::BadKey`] naming the problem.
    pub fn from_key_string(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::BadKey("a signer key starts with PRIVATE+KEY+"))?;
        let (name, id, raw) = split_key(rest)?;
        let seed: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| NoteError::BadKey("an Ed25519 seed is 32 bytes"))?;
        let signer = Self::new(name, seed)?;
        if signer.id != id {
            return Err(NoteError::BadKey("the key id does not match the key"));
        }
        Ok(signer)
    }

    /// `PRIVATE+KEY+name+keyid+base64(0x01 || seed)`.
    pub fn to_key_string(&self) -> String {
        let mut raw = vec![ED25519];
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

    /// A 32-byte secret for `purpose`, derived from this signer's private key: whoever holds
    /// the key (and only they) can compute it, and it is never the key itself, nor usable as a
    /// signing key for notes.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"custody derived secret v1\0");
        h.update((purpose.len() as u64).to_be_bytes());
        h.update(purpose.as_bytes());
        h.update(self.key.to_bytes());
        h.finalize().into()
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) into a note.
    pub fn sign(&self, text: &str) -> Note {
        let sig: Signature = self.key.sign(text.as_bytes());
        Note {
            text: text.to_string(),
            signatures: vec![NoteSignature {
                name: self.name.clone(),
                key_id: self.id,
                signature: sig.to_bytes().to_vec(),
            }],
        }
    }
}

/// An Ed25519 note verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

/// Splits `name+keyid+base64(type || key)` into its name, key id, signature type byte and key
/// material (signed-note §Verifier keys), checking only the form.
///
/// # Errors
/// [`NoteError::BadKey`] or [`NoteError::BadKeyName`] naming the problem.
pub fn split_key_string(s: &str) -> Result<(&str, u32, u8, Vec<u8>), NoteError> {
    // The name has no '+'; the base64 key may.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::BadKey("a key has the form name+keyid+base64"));
    };
    check_key_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::BadKey("the key id is 8 hex digits"));
    }
    let id =
        u32::from_str_radix(id, 16).map_err(|_| NoteError::BadKey("the key id is 8 hex digits"))?;
    let raw = B64
        .decode(b64)
        .map_err(|_| NoteError::BadKey("the key is not base64"))?;
    match raw.split_first() {
        Some((&kind, rest)) => Ok((name, id, kind, rest.to_vec())),
        None => Err(NoteError::BadKey("the key is empty")),
    }
}

fn split_key(s: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    match split_key_string(s)? {
        (name, id, ED25519, raw) => Ok((name, id, raw)),
        _ => Err(NoteError::BadKey(
            "only Ed25519 keys (type 0x01) are supported",
        )),
    }
}

impl Verifier {
    /// Parses `name+keyid+base64(0x01 || public key)`.
    ///
    /// # Errors
    /// [`NoteError::BadKey`] naming the problem.
    pub fn from_key_string(s: &str) -> Result<Self, NoteError> {
        let (name, id, raw) = split_key(s.trim())?;
        let public: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| NoteError::BadKey("an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::BadKey("not an Ed25519 public key"))?;
        if key_id(name, &public) != id {
            return Err(NoteError::BadKey("the key id does not match the key"));
        }
        Ok(Self {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn to_key_string(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Checks the note's signatures. Signatures from other keys are ignored; a signature from
    /// this key must verify (strict Ed25519).
    ///
    /// # Errors
    /// [`NoteError::BadSignature`] or [`NoteError::NoTrustedSignature`].
    pub fn verify(&self, note: &Note) -> Result<(), NoteError> {
        let mut verified = false;
        for s in &note.signatures {
            if s.name != self.name || s.key_id != self.id {
                continue;
            }
            let sig = Signature::from_slice(&s.signature)
                .map_err(|_| NoteError::BadSignature(s.name.clone()))?;
            self.key
                .verify_strict(note.text.as_bytes(), &sig)
                .map_err(|_| NoteError::BadSignature(s.name.clone()))?;
            verified = true;
        }
        if verified {
            Ok(())
        } else {
            Err(NoteError::NoTrustedSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference vector of the Go sumdb/note package (golang.org/x/mod), which the C2SP
    // signed-note specification formalises.
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn reference_vector_signs_and_verifies() {
        let signer = Signer::from_key_string(SKEY).unwrap();
        assert_eq!(signer.verifier().to_key_string(), VKEY);
        assert_eq!(signer.to_key_string(), SKEY);
        assert_eq!(signer.sign(TEXT).encode(), SIGNED);
        let verifier = Verifier::from_key_string(VKEY).unwrap();
        let note = Note::parse(SIGNED.as_bytes()).unwrap();
        assert_eq!(note.text, TEXT);
        verifier.verify(&note).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let verifier = Verifier::from_key_string(VKEY).unwrap();
        let changed = SIGNED.replace("cryptography", "cryptographs");
        let note = Note::parse(changed.as_bytes()).unwrap();
        assert_eq!(
            verifier.verify(&note),
            Err(NoteError::BadSignature("PeterNeumann".into()))
        );
        // A signature from an unknown key is ignored, so nothing trusted remains.
        let other = Signer::new("Other", [7; 32]).unwrap();
        let note = other.sign(TEXT);
        assert_eq!(verifier.verify(&note), Err(NoteError::NoTrustedSignature));
    }

    #[test]
    fn malformed_notes_and_keys() {
        assert_eq!(Note::parse(b"no signatures\n"), Err(NoteError::Unsigned));
        assert_eq!(Note::parse(&[0xff, b'\n', b'\n']), Err(NoteError::NotUtf8));
        assert_eq!(
            Note::parse(b"a\tb\n\n\xe2\x80\x94 k AAAAAAA=\n"),
            Err(NoteError::ControlCharacter)
        );
        assert!(matches!(
            Note::parse(b"t\n\n- k AAAAAAA=\n"),
            Err(NoteError::BadSignatureLine(_))
        ));
        assert_eq!(
            Note::parse(&vec![b'a'; MAX_NOTE_BYTES + 1]),
            Err(NoteError::TooLarge)
        );
        assert!(
            Verifier::from_key_string(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            )
            .is_err()
        );
        assert!(Verifier::from_key_string("Peter Neumann+c74f20a3+ARpc").is_err());
        assert!(Signer::new("a+b", [0; 32]).is_err());
    }
}
