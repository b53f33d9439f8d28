//! `custody token create`, and the embedded default's dev token.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::identity::{STATIC_PREFIX, new_static_token, token_hash};

/// Prints a new static token and the config lines that accept it.
pub fn create(name: &str) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '"') {
        bail!("NAME must be 1-128 printable characters without '\"'");
    }
    let token = new_static_token();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}")?;
    writeln!(
        out,
        "# The token above is shown once; custody keeps only its hash. Add this to the config:"
    )?;
    writeln!(out, "[[auth.static]]")?;
    writeln!(out, "name = \"{name}\"")?;
    writeln!(out, "sha256 = \"{}\"", hex::encode(token_hash(&token)))?;
    Ok(())
}

/// One of the embedded default's tokens (`dev-token`, `approver-token`): read from
/// `data_dir/FILE`, or created there (mode 0600).
pub fn local_token(data_dir: &Path, file: &str) -> anyhow::Result<String> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by other users (mode {:o}); run `chmod 600 {}` or delete it for a new one",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
            let token = text.trim().to_string();
            if !token.starts_with(STATIC_PREFIX) || token.len() < 40 {
                bail!(
                    "{} does not hold a custody token; delete it and a new one is made",
                    path.display()
                );
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_static_token();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
