//! Verifying a log from its tiles alone: a gateway's `/log/` over HTTP, or an exported
//! directory. No database, no trust in whoever serves the tiles: the checkpoint must carry the
//! pinned verifier key's signature (and, with a policy, its witnesses' cosignatures), every
//! entry must hash to the leaf its hash tile holds, every higher tile must hold the subtree
//! roots those leaves make, the whole tree must hash to the checkpoint's root and extend every
//! `--trusted` checkpoint, and every entry must pass the checks `custody verify` makes of a
//! stored log (index, order, pairing, erasures), payloads aside: tiles hold none.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Empty;
use tlog::check::{LogCheck, Problem, Summary};
use tlog::tiles::{HEIGHT, Tile, WIDTH, entry_tiles, read_bundle, tiles_of};
use tlog::{CompactRange, Hash, Verifier, leaf_hash};

use crate::audit::verify::{Leaf, Source as Trusted};

/// Tiles fetched at once over HTTP.
const PARALLEL: usize = 16;
/// The largest checkpoint read (a signed note with its cosignatures).
const MAX_CHECKPOINT: usize = 64 * 1024;

/// The most bytes `tile` may hold: exactly its hashes, or its entries at the version-2 cap.
/// Whoever serves the tiles cannot make the verifier buffer more.
fn limit(tile: &Tile) -> usize {
    match tile {
        Tile::Hashes { width, .. } => usize::from(*width) * 32,
        Tile::Entries { width, .. } => usize::from(*width) * (2 + tlog::entry::MAX_HEADER_BYTES),
    }
}

/// Where the tiles are.
#[derive(Debug, Clone)]
pub enum Source {
    /// A base URL ending in `/` (`https://custody.example.com/log/`).
    Url(String),
    /// An exported directory.
    Dir(PathBuf),
}

impl Source {
    /// The place a path names, for messages.
    fn place(&self, path: &str) -> String {
        match self {
            Source::Url(base) => format!("{base}{path}"),
            Source::Dir(dir) => dir.join(path).display().to_string(),
        }
    }
}

/// What fetches tiles.
enum Fetcher {
    Http(
        Box<
            hyper_util::client::legacy::Client<
                hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
                Empty<Bytes>,
            >,
        >,
        String,
    ),
    Dir(PathBuf),
}

impl Fetcher {
    async fn get(&self, path: &str, limit: usize) -> Result<Bytes, String> {
        match self {
            Fetcher::Http(client, base) => {
                let url = format!("{base}{path}");
                // tlog-tiles: a log may gzip entry bundles without being asked; say so.
                let req = http::Request::get(&url)
                    .header(http::header::ACCEPT_ENCODING, "gzip, identity")
                    .body(Empty::new())
                    .map_err(|e| format!("{url}: {e}"))?;
                let (parts, body) = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    // Compressed, a bundle is smaller than its limit but for gzip's own few
                    // bytes on incompressible input.
                    crate::net::exchange_parts(client, req, &url, limit + 1024),
                )
                .await
                .map_err(|_| {
                    format!("{url} did not answer within {} s", FETCH_TIMEOUT.as_secs())
                })??;
                if !parts.status.is_success() {
                    return Err(format!(
                        "{url} answered HTTP {}: {}",
                        parts.status,
                        String::from_utf8_lossy(&body).trim()
                    ));
                }
                decode(&parts.headers, body, limit).map_err(|e| format!("{url}: {e}"))
            }
            Fetcher::Dir(dir) => {
                let file = dir.join(path);
                tokio::task::spawn_blocking(move || read_bounded(&file, limit))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// The body of an answer with the `Content-Encoding` it names undone: none, `identity` or
/// `gzip`, decoded to at most `limit` bytes (a small answer cannot expand into a large one).
fn decode(headers: &http::HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, String> {
    use std::io::Read as _;
    // Every Content-Encoding field, every coding in each, in the order applied.
    let mut codings = Vec::new();
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| "the answer's Content-Encoding is not text".to_string())?;
        codings.extend(
            v.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    match codings.as_slice() {
        [] if body.len() <= limit => Ok(body),
        [] => Err(format!("the answer is over {limit} bytes")),
        [one] if one == "gzip" || one == "x-gzip" => {
            let mut out = Vec::new();
            // Every member of the gzip stream, not only the first.
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("its gzip encoding cannot be decoded: {e}"))?;
            if out.len() > limit {
                return Err(format!("the answer decompresses to over {limit} bytes"));
            }
            Ok(Bytes::from(out))
        }
        other => Err(format!(
            "the answer has Content-Encoding {:?}, which was not asked for (gzip or identity)",
            other.join(", ")
        )),
    }
}

/// How long one tile may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a regular file of at most `limit` bytes (checked on the open file, and by reading no
/// more than one byte past the limit).
fn read_bounded(file: &std::path::Path, limit: usize) -> Result<Bytes, String> {
    use std::io::Read as _;
    let shown = file.display();
    let f = std::fs::File::open(file).map_err(|e| format!("reading {shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("reading {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mut out = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("reading {shown}: {e}"))?;
    if out.len() > limit {
        return Err(format!(
            "{shown} holds more than the {limit} bytes it can hold"
        ));
    }
    Ok(Bytes::from(out))
}

/// What verifying from tiles found.
pub struct Verified {
    pub summary: Summary,
    /// The checkpoint the tiles were checked against.
    pub checkpoint: String,
    /// Tiles fetched.
    pub tiles: u64,
}

/// Verifies the log at `source` against `verifier`, the `trusted` checkpoints and `leaves`.
///
/// # Errors
/// The first problem found, or a tile that could not be fetched (as a problem naming it).
pub async fn verify(
    source: &Source,
    verifier: Verifier,
    trusted: &[Trusted],
    leaves: &[Leaf],
    progress: bool,
) -> Result<Verified, Problem> {
    let fail = |message: String| Problem {
        index: None,
        message,
    };
    let fetcher = match source {
        Source::Url(base) => {
            let base = if base.ends_with('/') {
                base.clone()
            } else {
                format!("{base}/")
            };
            Fetcher::Http(Box::new(crate::net::client(Duration::from_secs(10))), base)
        }
        Source::Dir(dir) => Fetcher::Dir(dir.clone()),
    };
    let note = fetcher
        .get("checkpoint", MAX_CHECKPOINT)
        .await
        .map_err(fail)?;
    let mut check = LogCheck::new(verifier).without_payloads();
    let checkpoint = check.add_checkpoint(&note, &source.place("checkpoint"), false)?;
    for t in trusted {
        check.add_checkpoint(t.note.as_bytes(), &t.label, t.trusted)?;
    }
    for l in leaves {
        check.expect_leaf(l.index, l.leaf, &l.label);
    }
    let size = checkpoint.size;
    let mut bar = Progress::new(size, progress && std::io::stderr().is_terminal());

    // Level 0 and the entries, bundle by bundle, fetched ahead in parallel.
    let pairs = entry_tiles(size).filter_map(|t| match t {
        Tile::Entries { index, width } => Some((
            t,
            Tile::Hashes {
                level: 0,
                index,
                width,
            },
        )),
        Tile::Hashes { .. } => None,
    });
    let fetcher = &fetcher;
    let mut fetched = futures_util::stream::iter(pairs)
        .map(|(entries, hashes)| async move {
            let (ep, hp) = (entries.path(), hashes.path());
            let (e, h) = tokio::join!(
                fetcher.get(&ep, limit(&entries)),
                fetcher.get(&hp, limit(&hashes))
            );
            (entries, hashes, e, h)
        })
        .buffered(PARALLEL);
    let mut range = CompactRange::new();
    // The roots of the subtrees of height 8·L, for the tiles of level L ≥ 1.
    let mut subtrees: BTreeMap<u32, Vec<Hash>> = BTreeMap::new();
    let mut tiles = 1u64;
    while let Some((entries_tile, hashes_tile, e, h)) = fetched.next().await {
        tiles += 2;
        let e = e.map_err(fail)?;
        let h = h.map_err(fail)?;
        let width = entries_tile.width();
        let bundle = read_bundle(&e, width)
            .map_err(|why| fail(format!("{}: {why}", source.place(&entries_tile.path()))))?;
        if h.len() != usize::from(width) * 32 {
            return Err(fail(format!(
                "{} holds {} bytes where {width} hashes take {}",
                source.place(&hashes_tile.path()),
                h.len(),
                usize::from(width) * 32
            )));
        }
        let first = entries_tile.index() * WIDTH;
        for (k, (entry, held)) in bundle.iter().zip(h.chunks_exact(32)).enumerate() {
            let i = first + k as u64;
            let leaf = leaf_hash(entry);
            if leaf.0 != held {
                return Err(Problem {
                    index: Some(i),
                    message: format!(
                        "{} holds leaf hash {} but the entry in {} hashes to {leaf}: the tiles disagree",
                        hashes_tile.path(),
                        hex::encode(held),
                        entries_tile.path()
                    ),
                });
            }
            check.push(i, entry, None)?;
            range.append(leaf, |node| {
                if node.level > 0 && node.level % HEIGHT == 0 {
                    subtrees
                        .entry(node.level / HEIGHT)
                        .or_default()
                        .push(node.hash);
                }
            });
        }
        bar.set(first + u64::from(width));
    }
    drop(fetched);

    // The higher tiles must hold exactly the subtree roots the leaves make.
    let higher = tiles_of(size).filter(|t| matches!(t, Tile::Hashes { level, .. } if *level > 0));
    let mut fetched = futures_util::stream::iter(higher)
        .map(|t| async move { (t, fetcher.get(&t.path(), limit(&t)).await) })
        .buffered(PARALLEL);
    while let Some((tile, bytes)) = fetched.next().await {
        tiles += 1;
        let bytes = bytes.map_err(fail)?;
        let Tile::Hashes {
            level,
            index,
            width,
        } = tile
        else {
            continue;
        };
        let from = usize::try_from(index * WIDTH).unwrap_or(usize::MAX);
        let want = subtrees
            .get(&u32::from(level))
            .and_then(|v| v.get(from..from + usize::from(width)));
        let matches = want.is_some_and(|want| {
            bytes.len() == want.len() * 32
                && want
                    .iter()
                    .zip(bytes.chunks_exact(32))
                    .all(|(w, b)| w.0 == b)
        });
        if !matches {
            return Err(fail(format!(
                "{} does not hold the roots of the subtrees below it: the tiles disagree",
                source.place(&tile.path())
            )));
        }
    }
    bar.finish();
    let summary = check.finish()?;
    Ok(Verified {
        summary,
        checkpoint: String::from_utf8_lossy(&note).into_owned(),
        tiles,
    })
}

/// A progress bar on stderr, when it is a terminal.
struct Progress {
    total: u64,
    shown: bool,
    last: u64,
}

impl Progress {
    fn new(total: u64, shown: bool) -> Self {
        Self {
            total,
            shown,
            last: u64::MAX,
        }
    }

    fn set(&mut self, done: u64) {
        if !self.shown || self.total == 0 {
            return;
        }
        let percent = done * 100 / self.total;
        if percent == self.last {
            return;
        }
        self.last = percent;
        let filled = usize::try_from(percent * 30 / 100).unwrap_or(30);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {percent:3}% {done}/{} entries",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            self.total
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.shown && self.last != u64::MAX {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    fn encoding(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, value.parse().unwrap());
        h
    }

    fn gzip(bytes: &[u8]) -> Bytes {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn gzip_and_identity_are_read_and_bounded() {
        let plain = Bytes::from_static(b"\x00\x03abc");
        let none = http::HeaderMap::new();
        assert_eq!(decode(&none, plain.clone(), 5).unwrap(), plain);
        assert_eq!(
            decode(&encoding("identity"), plain.clone(), 5).unwrap(),
            plain
        );
        assert_eq!(decode(&encoding("gzip"), gzip(&plain), 5).unwrap(), plain);
        assert!(
            decode(&none, plain.clone(), 4)
                .unwrap_err()
                .contains("over 4 bytes")
        );
        // A small answer that would expand past the tile's limit is refused, not inflated.
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 64 * 1024);
        let e = decode(&encoding("gzip"), bomb, 1 << 20).unwrap_err();
        assert!(e.contains("decompresses to over 1048576 bytes"), "{e}");
        let e = decode(&encoding("gzip"), plain.clone(), 5).unwrap_err();
        assert!(e.contains("cannot be decoded"), "{e}");
        let e = decode(&encoding("br"), plain.clone(), 5).unwrap_err();
        assert!(e.contains("\"br\", which was not asked for"), "{e}");
        let e = decode(&encoding("gzip, gzip"), plain.clone(), 5).unwrap_err();
        assert!(e.contains("\"gzip, gzip\""), "{e}");
        // Two gzip members are one answer.
        let mut two = gzip(b"\x00\x03a").to_vec();
        two.extend_from_slice(&gzip(b"bc"));
        assert_eq!(
            decode(&encoding("gzip"), Bytes::from(two), 5).unwrap(),
            plain
        );
    }
}
