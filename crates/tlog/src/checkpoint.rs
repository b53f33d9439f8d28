//! C2SP checkpoints (<https://c2sp.org/tlog-checkpoint>): the signed note text naming a log's
//! origin, tree size and root hash.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::hash::Hash;
use crate::note::{Note, NoteError, Signer, Verifier};

/// A tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines (opaque; the spec discourages them).
    pub extensions: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("{0}")]
    Note(#[from] NoteError),
    #[error("not a checkpoint: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin { found: String, expected: String },
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, extension lines, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0)
        );
        for e in &self.extensions {
            t.push_str(e);
            t.push('\n');
        }
        t
    }

    /// Parses checkpoint note text.
    ///
    /// # Errors
    /// [`CheckpointError::Malformed`] naming the bad line.
    pub fn from_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed(
            "the text must end with a newline",
        ))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or(CheckpointError::Malformed("empty origin line"))?;
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("no size line"))?;
        if size.is_empty()
            || (size.len() > 1 && size.starts_with('0'))
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CheckpointError::Malformed(
                "the size is not a decimal without leading zeros",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("the size is out of range"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|b| Hash::from_slice(&b))
            .ok_or(CheckpointError::Malformed(
                "the root hash is not 32 bytes of base64",
            ))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("an extension line is empty"));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint into a note.
    pub fn sign(&self, signer: &Signer) -> Note {
        signer.sign(&self.to_text())
    }

    /// Parses a signed checkpoint, checks its signature and that its origin is the
    /// verifier's key name (as custody's logs sign).
    ///
    /// # Errors
    /// A malformed note or checkpoint, a bad or missing signature, a wrong origin.
    pub fn open(note: &[u8], verifier: &Verifier) -> Result<(Self, Note), CheckpointError> {
        let note = Note::parse(note)?;
        verifier.verify(&note)?;
        let cp = Self::from_text(&note.text)?;
        if cp.origin != verifier.name() {
            return Err(CheckpointError::WrongOrigin {
                found: cp.origin,
                expected: verifier.name().to_string(),
            });
        }
        Ok((cp, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn round_trip_and_open() {
        let signer = Signer::new("custody.example/log", [3; 32]).unwrap();
        let cp = Checkpoint {
            origin: "custody.example/log".into(),
            size: 42,
            root: leaf_hash(b"x"),
            extensions: vec![],
        };
        let note = cp.sign(&signer).encode();
        let (back, _) = Checkpoint::open(note.as_bytes(), &signer.verifier()).unwrap();
        assert_eq!(back, cp);
        let other = Signer::new("other.example/log", [3; 32]).unwrap();
        let foreign = Checkpoint {
            origin: "other.example/log".into(),
            ..cp.clone()
        }
        .sign(&other)
        .encode();
        assert!(matches!(
            Checkpoint::open(foreign.as_bytes(), &signer.verifier()),
            Err(CheckpointError::Note(NoteError::NoTrustedSignature))
        ));
    }

    #[test]
    fn malformed_texts() {
        for bad in [
            "",
            "origin\n",
            "origin\n01\nAAAA\n",
            "origin\n-1\nAAAA\n",
            "origin\n1\nnot base64\n",
            "origin\n1\nAAAA\n",
            "\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
        ] {
            assert!(Checkpoint::from_text(bad).is_err(), "{bad:?}");
        }
        let ok = Checkpoint::from_text("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n")
            .unwrap();
        assert_eq!(ok.size, 0);
        assert_eq!(ok.root, Hash::empty());
        assert_eq!(ok.extensions, ["ext"]);
    }
}
