//! The data directory holds the log, its signing key, the masking key and local tokens: it is
//! the gateway's user's alone (mode 0700). A new one is created so; an existing one that its
//! group or other users can enter or read is tightened to 0700 with a warning (refusing to
//! start would only make the operator run the same `chmod`); one that cannot be tightened (it
//! belongs to another user) stops the start.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("couldn't create the data directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "the data directory {path} is open to other users (mode {mode:o}) and couldn't be tightened ({source}); run `chmod 700 {path}` as its owner"
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    Created,
    /// It was open to others with this mode, and is 0700 now.
    Tightened(u32),
    AlreadyPrivate,
}

/// Creates `dir` with mode 0700, or makes an existing one 0700.
///
/// # Errors
/// [`DataDirError`] naming the directory and what to do.
pub fn prepare(dir: &Path) -> Result<Prepared, DataDirError> {
    let path = || dir.to_path_buf();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| DataDirError::Create {
                    path: path(),
                    source,
                })?;
            // The mode given at creation passes through the umask: set it outright.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| DataDirError::Create {
                    path: path(),
                    source,
                },
            )?;
            return Ok(Prepared::Created);
        }
        Err(source) => {
            return Err(DataDirError::Create {
                path: path(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory { path: path() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(Prepared::AlreadyPrivate);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        DataDirError::Permissions {
            path: path(),
            mode,
            source,
        }
    })?;
    tracing::warn!(
        "the data directory {} was open to other users (mode {mode:o}); it holds the log, its signing key and the masking key, so it is now 0700",
        dir.display()
    );
    Ok(Prepared::Tightened(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_private_and_an_open_one_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/data");
        assert_eq!(prepare(&dir).unwrap(), Prepared::Created);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(prepare(&dir).unwrap(), Prepared::AlreadyPrivate);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(prepare(&dir).unwrap(), Prepared::Tightened(0o755));
        assert_eq!(mode(&dir), 0o700);

        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            prepare(&file),
            Err(DataDirError::NotADirectory { .. })
        ));
    }
}
