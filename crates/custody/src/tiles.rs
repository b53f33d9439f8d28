//! The log as C2SP `tlog-tiles`: served by the gateway at `/log/` (or `[audit] tiles_prefix`),
//! exported to a directory for write-once storage (`custody log export-tiles`), and verified
//! from either with nothing but tiles (`custody verify --url | --tiles`).
//!
//! Tiles hold what the tree hashes: leaf and node hashes, and the entries themselves. A
//! version-2 entry is its header and the commitments to its payloads; the payloads are never
//! in tiles. Version-1 entries hold whole messages (up to 64 MiB, over the 65,535 bytes a
//! tile entry can hold), so only version-2 logs are tiled.

mod export;
mod verify;

use tlog::tiles::{BundleError, HEIGHT, Tile, nodes_at, push_entry};

pub use export::{Exported, export};
pub use verify::{Source, Verified, verify};

use crate::store::{Reader, StoreError};

/// Why a tile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    #[error("{tile} is not in the published tree of {size} entries")]
    NotInTree { tile: String, size: u64 },
    #[error(
        "this log holds version-1 entries, which may exceed the 65,535 bytes a tile entry can hold: only version-2 logs are served as tiles (docs/audit.md \"Entry versions\")"
    )]
    Version1,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// The bytes of `tile` of the tree of `size` entries (a published checkpoint's size), read
/// from the store.
///
/// # Errors
/// [`TileError::NotInTree`] for a tile that tree does not have (yet); the store's errors.
pub fn read(reader: &Reader, tile: Tile, size: u64) -> Result<Vec<u8>, TileError> {
    let from = tile.index().saturating_mul(tlog::tiles::WIDTH);
    let to = from.saturating_add(u64::from(tile.width()));
    let available = match tile {
        Tile::Hashes { level, .. } => nodes_at(level, size),
        Tile::Entries { .. } => size,
    };
    if to > available {
        return Err(TileError::NotInTree {
            tile: tile.path(),
            size,
        });
    }
    match tile {
        Tile::Hashes { level: 0, .. } => Ok(concat(reader.leaves(from, to)?)),
        Tile::Hashes { level, .. } => {
            Ok(concat(reader.nodes(u32::from(level) * HEIGHT, from, to)?))
        }
        Tile::Entries { .. } => {
            let mut bundle = Vec::with_capacity(usize::from(tile.width()) * 512);
            reader.entries_in(from, to, |n, data| -> Result<(), TileError> {
                push_entry(&mut bundle, n, data)?;
                Ok(())
            })?;
            Ok(bundle)
        }
    }
}

fn concat(hashes: Vec<tlog::Hash>) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * 32);
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
    out
}
