//! The witness's own Ed25519 cosigning key, in its data directory: `witness.key` (mode 0600,
//! `PRIVATE+KEY+name+keyid+base64(0x04 || seed)`) and `witness.vkey`, its verifier key.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tlog::cosignature::CosignatureSigner;

pub const KEY_FILE: &str = "witness.key";
pub const VKEY_FILE: &str = "witness.vkey";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("couldn't create the witness key {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} already exists; a witness keeps its key for life (a new key is a new witness that every policy must list). Use another --data directory for a new witness"
    )]
    Exists { path: PathBuf },
    #[error(
        "couldn't read the witness key {path}: {source}; create one with `custody witness keygen --data DIR --name NAME`"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the witness key {path} is readable or writable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the witness key {path} is not a cosigner key: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Creates the data directory (0700) if needed and a new key in it, never overwriting one.
///
/// # Errors
/// [`KeyError::Exists`] when the directory already has a key; [`KeyError::Write`].
pub fn create(dir: &Path, name: &str) -> Result<CosignatureSigner, KeyError> {
    let path = dir.join(KEY_FILE);
    let write_err = |source| KeyError::Write {
        path: path.clone(),
        source,
    };
    let signer = CosignatureSigner::new(name, rand::random::<[u8; 32]>()).map_err(|e| {
        KeyError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err)?;
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists { path });
        }
        Err(e) => return Err(write_err(e)),
    };
    writeln!(f, "{}", signer.to_key_string()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    std::fs::write(
        dir.join(VKEY_FILE),
        format!("{}\n", signer.verifier().to_key_string()),
    )
    .map_err(write_err)?;
    super::state::sync_dir(dir).map_err(write_err)?;
    Ok(signer)
}

/// Loads the key of a data directory, refusing one that other users can read or write.
///
/// # Errors
/// [`KeyError`] naming the file and the problem.
pub fn load(dir: &Path) -> Result<CosignatureSigner, KeyError> {
    let path = dir.join(KEY_FILE);
    let read_err = |source| KeyError::Read {
        path: path.clone(),
        source,
    };
    let mode = std::fs::metadata(&path)
        .map_err(read_err)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path, mode });
    }
    let text = std::fs::read_to_string(&path).map_err(read_err)?;
    CosignatureSigner::from_key_string(&text).map_err(|e| KeyError::Invalid {
        path,
        reason: e.to_string(),
    })
}
