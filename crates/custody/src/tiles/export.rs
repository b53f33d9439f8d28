//! `custody log export-tiles`: the log's tiles written to a directory, for write-once storage.
//!
//! Incremental and create-only: a tile already present with the same bytes is left alone; one
//! present with other bytes is an error (the directory holds another log, or this log was
//! forked), never overwritten. Each tile is written to a temporary file and linked into place,
//! which fails if the name exists. The file system is synced once, after the tiles and before
//! the `checkpoint`, which is written last, replaced atomically, and never by one of a smaller
//! tree: a checkpoint is only ever next to complete tiles. A tile a crashed export left empty
//! or cut short (a prefix of its bytes) is completed by the next export.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tlog::tiles::{Tile, tiles_of};

use crate::store::{Location, Reader};

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// The size of the checkpoint exported.
    pub size: u64,
    /// Tiles written by this export.
    pub written: u64,
    /// Tiles that were already there with the same bytes.
    pub present: u64,
}

/// Exports the log in `data` (its latest published checkpoint and the tiles of that tree) to
/// `out`.
///
/// # Errors
/// The log cannot be read or is version 1, a tile present in `out` differs, or `out` cannot
/// be written.
pub fn export(data: &Path, out: &Path) -> anyhow::Result<Exported> {
    let reader = Reader::open(&Location::dir(data))
        .with_context(|| format!("opening the log in {}", data.display()))?;
    if reader.entry_version()? != tlog::entry::V2 {
        return Err(super::TileError::Version1.into());
    }
    // The checkpoint the log published (the checkpoints file's last line), not the database's
    // latest: that one is stored as soon as it is signed, before its witnesses cosign it, and
    // may be one they withheld.
    let files = crate::audit::files::Files::new(data, crate::config::Durability::None);
    let published = files
        .last_checkpoint()
        .with_context(|| format!("reading {}", files.checkpoints_path().display()))?;
    let published = published.map(|saved| saved.checkpoint);
    let Some(cp) = published else {
        bail!(
            "the log in {} has published no checkpoint yet ({} is missing or empty): nothing to export",
            data.display(),
            files.checkpoints_path().display()
        );
    };
    let size = cp.size;
    // What goes to write-once storage cannot be taken back: the stored tree (its nodes, and
    // the leaves below the smallest stored subtree) must hash to the root the checkpoint signs
    // before a tile is written. Entries and leaves under a stored node are checked by
    // `custody verify --tiles` of the export, as by `--data` of the database.
    let ours = signed_by(cp.note.as_bytes()).with_context(|| {
        format!(
            "the last line of {} is not a checkpoint",
            files.checkpoints_path().display()
        )
    })?;
    let nodes = tlog::CompactRange::subtrees(size)
        .map(|(level, index)| tlog::proof::HashStore::node(&reader, level, index))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the stored tree at size {size}"))?;
    let stored = tlog::CompactRange::from_parts(size, nodes)
        .map_err(|e| anyhow::anyhow!("the stored tree at size {size}: {e}"))?;
    if stored.root() != ours.root {
        bail!(
            "the log's stored tree of {size} entries has root {} but its published checkpoint signs root {}: the database was changed; nothing was exported (run `custody verify --data {}`)",
            stored.root(),
            ours.root,
            data.display()
        );
    }
    let checkpoint_path = out.join("checkpoint");
    if let Some(old) = existing(&checkpoint_path)? {
        // Another log's tiles would stay beside this one's checkpoint, and a reader holding
        // one of this log's smaller checkpoints would take them for a fork.
        if old.log != ours.log {
            bail!(
                "{} is a checkpoint of another log ({}), not of this one ({}): refusing to export into another log's directory",
                checkpoint_path.display(),
                old.log,
                ours.log
            );
        }
        if old.size > size {
            bail!(
                "{} covers {} entries, more than this log's latest checkpoint ({size}): refusing to go back",
                checkpoint_path.display(),
                old.size
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut done = Exported {
        size,
        written: 0,
        present: 0,
    };
    for tile in tiles_of(size) {
        let bytes = super::read(&reader, tile, size)
            .with_context(|| format!("reading {tile} from the log"))?;
        if put(out, tile, &bytes)? {
            done.written += 1;
        } else {
            done.present += 1;
        }
    }
    // Every tile on stable storage before the checkpoint that names them.
    let root = std::fs::File::open(out).with_context(|| format!("opening {}", out.display()))?;
    nix::unistd::syncfs(&root).with_context(|| format!("syncing {}", out.display()))?;
    replace(&checkpoint_path, cp.note.as_bytes())?;
    Ok(done)
}

/// A checkpoint's size, root and the log that signed it.
struct Signed {
    size: u64,
    root: tlog::Hash,
    /// The origin and the ID of the origin's key that signed it (`origin+id`).
    log: String,
}

fn signed_by(bytes: &[u8]) -> anyhow::Result<Signed> {
    let note = tlog::Note::parse(bytes)?;
    let cp = tlog::Checkpoint::from_text(&note.text)?;
    let id = note
        .signatures
        .iter()
        .find(|s| s.name == cp.origin)
        .map_or_else(|| "unsigned".to_string(), |s| format!("{:08x}", s.key_id));
    Ok(Signed {
        size: cp.size,
        root: cp.root,
        log: format!("{}+{id}", cp.origin),
    })
}

/// The checkpoint at `path`, if there is one.
fn existing(path: &Path) -> anyhow::Result<Option<Signed>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    signed_by(&bytes)
        .map(Some)
        .with_context(|| format!("{} is not a signed checkpoint", path.display()))
}

/// Writes `bytes` as `tile` under `out` unless it is there; `Ok(false)` when it was there
/// with the same bytes.
fn put(out: &Path, tile: Tile, bytes: &[u8]) -> anyhow::Result<bool> {
    let path = out.join(tile.path());
    // A link where a tile belongs is not a tile this export wrote: never follow one.
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
        bail!(
            "{} exists and is not a regular file; refusing to write through it",
            path.display()
        );
    }
    match std::fs::read(&path) {
        Ok(existing) if existing == bytes => return Ok(false),
        // Cut short by a crash before the export's sync: completed, not an error.
        Ok(existing) if existing.len() < bytes.len() && bytes.starts_with(&existing) => {
            std::fs::remove_file(&path)
                .with_context(|| format!("replacing the incomplete {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists with other bytes than this log's {tile}: the directory holds another log, or this log's history changed; refusing to overwrite it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let dir = path.parent().unwrap_or(out);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = temp_name(&path);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // Linking fails if the name exists: create-only even against a concurrent export.
        std::fs::hard_link(&tmp, &path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another export wrote it meanwhile: fine if the bytes agree.
            put(out, tile, bytes)
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Replaces the file at `path` with `bytes` atomically.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A fresh name beside `path` (random, so nobody can prepare it in advance).
fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    path.with_file_name(name)
}
