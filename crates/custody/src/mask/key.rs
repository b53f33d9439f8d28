//! The masking key: the HMAC-SHA256 key of `hmac` rules, separate from the log signing key, so
//! equal values stay linkable in the log without the log holding them. 32 random bytes, hex, in
//! a file of mode 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A loaded masking key.
pub struct MaskKey {
    /// The first 4 bytes of SHA-256 of the key, hex: names the key in every tag.
    pub id: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskKey({})", self.id)
    }
}

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
}

impl MaskKey {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let digest = Sha256::digest(secret);
        Self {
            id: hex::encode(&digest[..4]),
            secret,
        }
    }

    /// Reads the key at `path`, or creates it (mode 0600) when `create` and it is missing.
    ///
    /// # Errors
    /// The file cannot be read or written, is readable by others, or is not 64 hex digits.
    pub fn load(path: &Path, create: bool) -> Result<Self, KeyError> {
        let bad = |message: String| KeyError::Bad {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| bad(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(bad(format!(
                        "the masking key is readable by other users (mode {:o}); run chmod 600 on it",
                        mode & 0o777
                    )));
                }
                let mut secret = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut secret)
                    .map_err(|_| bad("not a masking key (64 hex digits)".into()))?;
                Ok(Self::from_secret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let secret: [u8; 32] = rand::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| bad(format!("cannot create the masking key: {e}")))?;
                writeln!(f, "{}", hex::encode(secret))
                    .map_err(|e| bad(format!("cannot write the masking key: {e}")))?;
                Ok(Self::from_secret(secret))
            }
            Err(e) => Err(bad(format!("cannot read the masking key: {e}"))),
        }
    }

    /// `hmac-sha256:<keyid>:<hex>` of `value`.
    pub fn tag(&self, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value.as_bytes());
        format!(
            "hmac-sha256:{}:{}",
            self.id,
            hex::encode(mac.finalize().into_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_per_key_and_differ_between_keys() {
        let a = MaskKey::from_secret([1; 32]);
        let b = MaskKey::from_secret([2; 32]);
        assert_eq!(a.tag("x"), a.tag("x"));
        assert_ne!(a.tag("x"), a.tag("y"));
        assert_ne!(a.tag("x"), b.tag("x"));
        assert!(a.tag("x").starts_with(&format!("hmac-sha256:{}:", a.id)));
        assert_eq!(a.tag("x").len(), "hmac-sha256:".len() + 8 + 1 + 64);
    }

    #[test]
    fn keys_are_created_private_and_refused_when_others_can_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.key");
        let made = MaskKey::load(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(MaskKey::load(&path, false).unwrap().id, made.id);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            MaskKey::load(&path, false)
                .unwrap_err()
                .to_string()
                .contains("readable by other users")
        );
        assert!(MaskKey::load(&dir.path().join("none"), false).is_err());
    }
}
