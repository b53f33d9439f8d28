//! The log's Ed25519 signing key: created on first start (mode 0600) or loaded, refusing a key
//! file others can read.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tlog::Signer;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("couldn't read the log key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("couldn't create the log key {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the log key {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the log key {path} is not a signer key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "the log key {path} signs for origin {found:?} but audit.origin is {configured:?}; a log keeps its origin for life"
    )]
    OriginMismatch {
        path: PathBuf,
        found: String,
        configured: String,
    },
}

/// The verifier key file written next to a key: `<key>.pub`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Writes a new signing key to `path` (mode 0600, never overwriting) and its verifier key to
/// `path.pub`.
///
/// # Errors
/// [`KeyError::Write`], including when the file already exists.
pub fn create(path: &Path, origin: &str) -> Result<Signer, KeyError> {
    let signer =
        Signer::new(origin, rand::random::<[u8; 32]>()).map_err(|e| KeyError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        // A new directory for a key is the key owner's alone.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    writeln!(f, "{}", signer.to_key_string()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    // The verifier key is public: readable by all (0644) whatever the umask.
    let public = public_path(path);
    std::fs::write(&public, format!("{}\n", signer.verifier().to_key_string()))
        .map_err(write_err)?;
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).map_err(write_err)?;
    Ok(signer)
}

/// Loads the key at `path`, or creates one there if there is none. Returns the signer and
/// whether it was created.
///
/// # Errors
/// [`KeyError`] naming the file and the problem.
pub fn load_or_create(path: &Path, origin: Option<&str>) -> Result<(Signer, bool), KeyError> {
    if !path.exists() {
        let origin = origin.map_or_else(
            || format!("custody.local/{}", hex::encode(rand::random::<[u8; 4]>())),
            str::to_string,
        );
        return create(path, &origin).map(|s| (s, true));
    }
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let signer = Signer::from_key_string(&text).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(configured) = origin.filter(|o| *o != signer.name()) {
        return Err(KeyError::OriginMismatch {
            path: path.to_path_buf(),
            found: signer.name().to_string(),
            configured: configured.to_string(),
        });
    }
    Ok((signer, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_are_private_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let (signer, created) = load_or_create(&path, Some("ci.example/log")).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create(&path, None).unwrap();
        assert!(!created);
        assert_eq!(again.verifier(), signer.verifier());
        let public = std::fs::read_to_string(public_path(&path)).unwrap();
        assert_eq!(public.trim(), signer.verifier().to_key_string());
        let public_mode = std::fs::metadata(public_path(&path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            public_mode, 0o644,
            "the verifier key is public, whatever the umask"
        );
        assert!(matches!(
            load_or_create(&path, Some("other/log")),
            Err(KeyError::OriginMismatch { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(&path, None),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
        assert!(
            matches!(create(&path, "x/y"), Err(KeyError::Write { .. })),
            "never overwrites"
        );
    }
}
