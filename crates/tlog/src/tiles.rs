//! The static layout of a log, as C2SP `tlog-tiles` defines it: a `checkpoint`, hash tiles
//! `tile/<L>/<N>[.p/<W>]` (at level `L`, the hashes of the tree's nodes of height `8·L`,
//! 256 per full tile) and entry bundles `tile/entries/<N>[.p/<W>]` (256 entries per full
//! bundle, each as a big-endian `u16` length and its bytes).
//!
//! A tile index `N` is written as 3-digit groups, every group but the last prefixed with `x`
//! (`1234067` is `x001/x234/067`). Paths are parsed strictly: a path that is not exactly what
//! [`Tile::path`] writes for the tile it names is refused, so two parsers never read one path
//! as two tiles.

use std::fmt;

/// Hashes (or entries) in a full tile.
pub const WIDTH: u64 = 256;
/// The tree levels one tile level spans.
pub const HEIGHT: u32 = 8;
/// The largest entry an entry bundle can hold.
pub const MAX_ENTRY: usize = u16::MAX as usize;

/// One tile of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    /// Hashes of the nodes of height `8·level`, `256·index ..`, `width` of them.
    Hashes { level: u8, index: u64, width: u16 },
    /// Entries `256·index ..`, `width` of them.
    Entries { index: u64, width: u16 },
}

/// A path that names no tile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a tile path: {why}")]
pub struct PathError {
    pub path: String,
    pub why: &'static str,
}

impl Tile {
    /// The tile's index `N`.
    pub fn index(&self) -> u64 {
        match self {
            Tile::Hashes { index, .. } | Tile::Entries { index, .. } => *index,
        }
    }

    /// How many hashes or entries it holds (1 to 256).
    pub fn width(&self) -> u16 {
        match self {
            Tile::Hashes { width, .. } | Tile::Entries { width, .. } => *width,
        }
    }

    /// Whether it is full (256 wide).
    pub fn is_full(&self) -> bool {
        u64::from(self.width()) == WIDTH
    }

    /// Its path under the log's prefix: `tile/0/x001/234`, `tile/entries/000.p/7`.
    pub fn path(&self) -> String {
        let kind = match self {
            Tile::Hashes { level, .. } => level.to_string(),
            Tile::Entries { .. } => "entries".to_string(),
        };
        let mut out = format!("tile/{kind}/{}", index_path(self.index()));
        if !self.is_full() {
            out.push_str(&format!(".p/{}", self.width()));
        }
        out
    }

    /// The tile a path names (relative to the log's prefix, without a leading `/`).
    ///
    /// # Errors
    /// [`PathError`] for anything but the exact path [`Tile::path`] writes for some tile.
    pub fn parse(path: &str) -> Result<Tile, PathError> {
        let bad = |why| PathError {
            path: path.chars().take(200).collect(),
            why,
        };
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad("it does not start with tile/"))?;
        let (kind, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no tile index"))?;
        let (index_part, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                let ok = !w.is_empty()
                    && w.bytes().all(|b| b.is_ascii_digit())
                    && !w.starts_with('0')
                    && w.len() <= 3;
                let w: u16 = if ok { w.parse().unwrap_or(0) } else { 0 };
                if w == 0 || u64::from(w) >= WIDTH {
                    return Err(bad("a partial tile's width is 1 to 255"));
                }
                (i, w)
            }
            None => (rest, WIDTH as u16),
        };
        let mut index = 0u64;
        let groups: Vec<&str> = index_part.split('/').collect();
        for (i, g) in groups.iter().enumerate() {
            let last = i + 1 == groups.len();
            let digits = if last {
                *g
            } else {
                g.strip_prefix('x')
                    .ok_or_else(|| bad("every index group but the last starts with x"))?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("index groups are three digits"));
            }
            index = index
                .checked_mul(1000)
                .and_then(|n| n.checked_add(digits.parse::<u64>().unwrap_or(0)))
                .ok_or_else(|| bad("the index is too large"))?;
        }
        let tile = if kind == "entries" {
            Tile::Entries { index, width }
        } else {
            if kind.is_empty()
                || !kind.bytes().all(|b| b.is_ascii_digit())
                || (kind.len() > 1 && kind.starts_with('0'))
            {
                return Err(bad(
                    "the level is a number without leading zeros, or entries",
                ));
            }
            let level: u8 = kind.parse().map_err(|_| bad("the level is at most 63"))?;
            if level > 63 {
                return Err(bad("the level is at most 63"));
            }
            Tile::Hashes {
                level,
                index,
                width,
            }
        };
        if tile.path() != path {
            return Err(bad("it is not written the canonical way"));
        }
        Ok(tile)
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// `N` as tlog-tiles writes it: `x001/x234/067`.
pub fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    while n >= 1000 {
        n /= 1000;
        groups.push(format!("x{:03}", n % 1000));
    }
    groups.reverse();
    groups.join("/")
}

/// The nodes of height `8·level` in a tree of `size` entries (the hashes level `level`'s
/// tiles hold in all).
pub fn nodes_at(level: u8, size: u64) -> u64 {
    let shift = u32::from(level) * HEIGHT;
    if shift >= 64 { 0 } else { size >> shift }
}

/// Every tile of a tree of `size` entries: the full ones and, at each level, the partial one at
/// the right edge; hash tiles level by level, then entry bundles. Made as they are taken, so a
/// tree of any size costs no memory up front.
pub fn tiles_of(size: u64) -> impl Iterator<Item = Tile> {
    let hashes = (0u8..)
        .map_while(move |level| Some((level, nodes_at(level, size))).filter(|(_, n)| *n > 0))
        .flat_map(|(level, nodes)| {
            spans(nodes).map(move |(index, width)| Tile::Hashes {
                level,
                index,
                width,
            })
        });
    hashes.chain(entry_tiles(size))
}

/// The entry bundles of a tree of `size` entries, in order.
pub fn entry_tiles(size: u64) -> impl Iterator<Item = Tile> {
    spans(size).map(|(index, width)| Tile::Entries { index, width })
}

/// The tiles over `count` items: (index, width).
fn spans(count: u64) -> impl Iterator<Item = (u64, u16)> {
    (0..count.div_ceil(WIDTH)).map(move |i| {
        let width = (count - i * WIDTH).min(WIDTH);
        (i, u16::try_from(width).unwrap_or(u16::MAX))
    })
}

/// Why an entry bundle could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("entry {0} is {1} bytes, over the {MAX_ENTRY} an entry bundle can hold")]
    TooLarge(u64, usize),
    #[error("the bundle ends inside entry {0} of it")]
    Truncated(usize),
    #[error("the bundle holds {found} entries where its tile says {want}")]
    Count { found: usize, want: u16 },
}

/// Appends `entry` (the `n`th of the log, for errors) to a bundle.
///
/// # Errors
/// [`BundleError::TooLarge`].
pub fn push_entry(bundle: &mut Vec<u8>, n: u64, entry: &[u8]) -> Result<(), BundleError> {
    let len = u16::try_from(entry.len()).map_err(|_| BundleError::TooLarge(n, entry.len()))?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// The entries of a bundle that must hold `width` of them.
///
/// # Errors
/// [`BundleError`]: it ends inside an entry, or holds another number of entries.
pub fn read_bundle(data: &[u8], width: u16) -> Result<Vec<&[u8]>, BundleError> {
    let mut out = Vec::with_capacity(usize::from(width));
    let mut rest = data;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(BundleError::Truncated(out.len()));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(BundleError::Truncated(out.len()));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    if out.len() != usize::from(width) {
        return Err(BundleError::Count {
            found: out.len(),
            want: width,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_written_and_read_as_the_spec_shows() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(1234067), "x001/x234/067");
        assert_eq!(index_path(1000), "x001/000");
        let t = Tile::Hashes {
            level: 0,
            index: 1234067,
            width: 256,
        };
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        assert_eq!(Tile::parse("tile/0/x001/x234/067"), Ok(t));
        let e = Tile::Entries { index: 5, width: 7 };
        assert_eq!(e.path(), "tile/entries/005.p/7");
        assert_eq!(Tile::parse("tile/entries/005.p/7"), Ok(e));
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        for p in [
            "tile/0/5",
            "tile/0/0005",
            "tile/0/x000/005",
            "tile/0/001/005",
            "tile/00/005",
            "tile/64/005",
            "tile/0/005.p/0",
            "tile/0/005.p/256",
            "tile/0/005.p/07",
            "tile/0/005/",
            "tile/data/005",
            "tiles/0/005",
            "tile/0/x99999999999999999999/000",
            "tile/entries/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(Tile::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn a_tree_has_the_tiles_its_size_implies() {
        let tiles: Vec<Tile> = tiles_of(256 * 256 + 3).collect();
        assert!(tiles.contains(&Tile::Hashes {
            level: 1,
            index: 0,
            width: 256
        }));
        assert!(tiles.contains(&Tile::Hashes {
            level: 0,
            index: 256,
            width: 3
        }));
        assert!(tiles.contains(&Tile::Hashes {
            level: 2,
            index: 0,
            width: 1
        }));
        assert!(tiles.contains(&Tile::Entries {
            index: 256,
            width: 3
        }));
        assert_eq!(tiles_of(0).count(), 0);
        // A tree of 2^40 entries: its first tiles come at once, nothing is built ahead.
        let mut huge = tiles_of(1 << 40);
        assert_eq!(
            huge.next(),
            Some(Tile::Hashes {
                level: 0,
                index: 0,
                width: 256
            })
        );
    }

    #[test]
    fn bundles_round_trip_and_refuse_what_does_not_fit() {
        let mut b = Vec::new();
        push_entry(&mut b, 0, b"one").unwrap();
        push_entry(&mut b, 1, b"").unwrap();
        assert_eq!(read_bundle(&b, 2).unwrap(), vec![&b"one"[..], &b""[..]]);
        assert_eq!(
            read_bundle(&b, 3),
            Err(BundleError::Count { found: 2, want: 3 })
        );
        assert_eq!(read_bundle(&b[..4], 2), Err(BundleError::Truncated(0)));
        assert_eq!(
            push_entry(&mut b, 9, &vec![0; MAX_ENTRY + 1]),
            Err(BundleError::TooLarge(9, MAX_ENTRY + 1))
        );
    }
}
