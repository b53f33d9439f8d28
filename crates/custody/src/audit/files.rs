//! The log's state outside the database: what survives when `log.sqlite` is edited, emptied,
//! deleted or loses its write-ahead log.
//!
//! * `log.head`: the latest checkpoint the log signed, with the compact range of the tree it
//!   signs (so a start can continue from it without trusting stored interior nodes). Replaced
//!   atomically (temporary file, fsync, rename, fsync of the directory) *before* the checkpoint
//!   is stored anywhere else or published.
//! * `checkpoints.jsonl`: every published checkpoint, one JSON object per line, appended and
//!   fsynced before the checkpoint is served. Operators ship it to write-once storage.
//! * `custody.lock`: held (an advisory `flock`) by the one process that writes the directory.
//!
//! Nothing read from these files is trusted before its signature is checked against the log's
//! key: an attacker who can write the directory can delete or replace them, never forge them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tlog::CompactRange;

use crate::config::Durability;
use crate::store::StoredCheckpoint;

pub const HEAD_FILE: &str = "log.head";
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
pub const LOCK_FILE: &str = "custody.lock";

/// The most a checkpoints file's last line may hold (a checkpoint with cosignatures is far
/// smaller); reading the tail never reads more than this.
const TAIL: u64 = 256 * 1024;

/// Why a file beside the database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("couldn't {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Damaged { path: PathBuf, why: String },
    #[error(
        "the data directory {} is in use by another custody process{}; stop it first, or give this one a [server] data_dir of its own",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io { what, path, source }
}

/// A checkpoint as `log.head` and `checkpoints.jsonl` hold it: the signed note and, in the head
/// file, the compact range of the tree it signs.
#[derive(Debug, Clone)]
pub struct Saved {
    pub checkpoint: StoredCheckpoint,
    /// The tree's compact range at the checkpoint's size (head file only).
    pub range: Option<CompactRange>,
}

/// The files of one data directory.
pub struct Files {
    dir: PathBuf,
    durability: Durability,
}

impl Files {
    pub fn new(dir: &Path, durability: Durability) -> Self {
        Self {
            dir: dir.to_path_buf(),
            durability,
        }
    }

    pub fn head_path(&self) -> PathBuf {
        self.dir.join(HEAD_FILE)
    }

    pub fn checkpoints_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINTS_FILE)
    }

    /// Replaces `log.head` atomically; durable on `Ok` (with fsync durability).
    ///
    /// # Errors
    /// [`FileError::Io`].
    pub fn write_head(&self, cp: &StoredCheckpoint, range: &CompactRange) -> Result<(), FileError> {
        let path = self.head_path();
        let tmp = self.dir.join(format!("{HEAD_FILE}.tmp"));
        let body = serde_json::json!({
            "size": cp.size,
            "signed_ns": cp.signed_ns,
            "range": B64.encode(range.to_bytes()),
            "note": cp.note,
        });
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        writeln!(f, "{body}").map_err(io("write", &tmp))?;
        if self.durability == Durability::Fsync {
            f.sync_all().map_err(io("fsync", &tmp))?;
        }
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        if self.durability == Durability::Fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync the directory of", &path))?;
        }
        Ok(())
    }

    /// The head file, if there is one.
    ///
    /// # Errors
    /// [`FileError::Io`] other than "not found"; [`FileError::Damaged`] when it does not parse.
    pub fn read_head(&self) -> Result<Option<Saved>, FileError> {
        let path = self.head_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        parse_line(&text, true)
            .map(Some)
            .map_err(|why| FileError::Damaged { path, why })
    }

    /// Appends a published checkpoint to `checkpoints.jsonl`; durable on `Ok` (with fsync
    /// durability). A line a crash left half-written is cut off first.
    ///
    /// # Errors
    /// [`FileError::Io`].
    pub fn append_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), FileError> {
        let path = self.checkpoints_path();
        let line =
            serde_json::json!({ "size": cp.size, "signed_ns": cp.signed_ns, "note": cp.note });
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        cut_torn_line(&mut f).map_err(io("repair", &path))?;
        writeln!(f, "{line}").map_err(io("append to", &path))?;
        if self.durability == Durability::Fsync {
            f.sync_data().map_err(io("fsync", &path))?;
        }
        Ok(())
    }

    /// The last complete line of `checkpoints.jsonl` (reading only its tail), if any. A last
    /// line without its line break is what a crash during an append leaves: it is skipped.
    ///
    /// # Errors
    /// [`FileError::Io`] other than "not found"; [`FileError::Damaged`] when the last complete
    /// line does not parse.
    pub fn last_checkpoint(&self) -> Result<Option<Saved>, FileError> {
        let path = self.checkpoints_path();
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", &path)(e)),
        };
        let len = f.metadata().map_err(io("read", &path))?.len();
        let start = len.saturating_sub(TAIL);
        f.seek(SeekFrom::Start(start)).map_err(io("read", &path))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).map_err(io("read", &path))?;
        let complete = match tail.iter().rposition(|b| *b == b'\n') {
            Some(end) => &tail[..end],
            None => return Ok(None),
        };
        let line = complete
            .rsplit(|b| *b == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace));
        let Some(line) = line else {
            return Ok(None);
        };
        if start > 0 && line.as_ptr() == complete.as_ptr() {
            return Err(FileError::Damaged {
                path,
                why: format!("its last line is longer than {TAIL} bytes"),
            });
        }
        let text = String::from_utf8_lossy(line);
        parse_line(&text, false)
            .map(Some)
            .map_err(|why| FileError::Damaged {
                path,
                why: format!("its last line does not parse: {why}"),
            })
    }
}

/// Parses one saved checkpoint (a head file or a checkpoints line).
fn parse_line(text: &str, head: bool) -> Result<Saved, String> {
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not JSON ({e})"))?;
    let size = v
        .get("size")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no \"size\"")?;
    let note = v
        .get("note")
        .and_then(serde_json::Value::as_str)
        .ok_or("no \"note\"")?
        .to_string();
    let signed_ns = v
        .get("signed_ns")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let range = if head {
        let b = v
            .get("range")
            .and_then(serde_json::Value::as_str)
            .ok_or("no \"range\"")?;
        let bytes = B64
            .decode(b)
            .map_err(|e| format!("\"range\" is not base64 ({e})"))?;
        Some(CompactRange::from_bytes(&bytes).map_err(|e| format!("\"range\": {e}"))?)
    } else {
        None
    };
    Ok(Saved {
        checkpoint: StoredCheckpoint {
            size,
            note,
            signed_ns,
        },
        range,
    })
}

/// Cuts a last line that lacks its line break (a crash during an append) so the next line
/// starts clean.
fn cut_torn_line(f: &mut File) -> std::io::Result<()> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let start = len.saturating_sub(TAIL);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = tail
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(start, |p| start + p as u64 + 1);
    tracing::warn!(
        cut = len - keep,
        "checkpoints.jsonl ended in a half-written line (a crash during an append); cut it off"
    );
    f.set_len(keep)
}

/// The data directory's lock, held while this process writes the directory; released when
/// dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, or names the process holding it.
    ///
    /// # Errors
    /// [`FileError::Locked`], or [`FileError::Io`].
    pub fn acquire(dir: &Path) -> Result<Self, FileError> {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("create the data directory", dir))?;
        }
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(FileError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
        file.set_len(0).map_err(io("write", &path))?;
        file.seek(SeekFrom::Start(0)).map_err(io("write", &path))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write", &path))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(size: u64) -> StoredCheckpoint {
        StoredCheckpoint {
            size,
            note: format!("note {size}\n"),
            signed_ns: size,
        }
    }

    #[test]
    fn the_last_checkpoint_skips_a_torn_line_and_the_next_append_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path(), Durability::None);
        assert!(files.last_checkpoint().unwrap().is_none());
        files.append_checkpoint(&cp(1)).unwrap();
        files.append_checkpoint(&cp(2)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(files.checkpoints_path())
            .unwrap();
        f.write_all(b"{\"size\":3,\"no").unwrap();
        assert_eq!(files.last_checkpoint().unwrap().unwrap().checkpoint.size, 2);
        files.append_checkpoint(&cp(4)).unwrap();
        let text = std::fs::read_to_string(files.checkpoints_path()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(files.last_checkpoint().unwrap().unwrap().checkpoint.size, 4);
    }

    #[test]
    fn a_damaged_last_line_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path(), Durability::None);
        std::fs::write(
            files.checkpoints_path(),
            "{\"size\":1,\"note\":\"x\"}\ngarbage\n",
        )
        .unwrap();
        let err = files.last_checkpoint().unwrap_err().to_string();
        assert!(
            err.contains("checkpoints.jsonl") && err.contains("does not parse"),
            "{err}"
        );
    }

    #[test]
    fn the_head_file_round_trips_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path(), Durability::Fsync);
        assert!(files.read_head().unwrap().is_none());
        let mut range = CompactRange::new();
        for i in 0..5u8 {
            range.append(tlog::leaf_hash(&[i]), |_| {});
        }
        files.write_head(&cp(5), &range).unwrap();
        let head = files.read_head().unwrap().unwrap();
        assert_eq!(head.checkpoint, cp(5));
        assert_eq!(head.range.unwrap().root(), range.root());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(files.head_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(files.head_path(), "{\"size\":5}").unwrap();
        assert!(matches!(files.read_head(), Err(FileError::Damaged { .. })));
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("in use"),
            "{err}"
        );
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }
}
