//! The log as C2SP tlog-tiles: served at /log/, read by an independent implementation (the
//! `tlog_tiles` crate) to the same root, exported create-only, and verified from tiles alone
//! over HTTP and from a directory, with tampering caught.

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A gateway with a few hundred entries (more than one full tile), checkpointed.
async fn busy_gateway(server_extra: &str) -> (Gateway, u64) {
    let gw = Gateway::start(
        server_extra,
        &format!(
            "[audit]\ncheckpoint_interval = \"50ms\"\ntiles_public = true\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let mut c = gw.client("f");
    c.initialize().await;
    for _ in 0..140 {
        c.call(
            "tools/call",
            json!({"name": "test_simple_text", "arguments": {}}),
        )
        .await;
    }
    let size = wait_for_checkpoint(&gw, 280).await;
    (gw, size)
}

async fn wait_for_checkpoint(gw: &Gateway, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let note = get(gw, "/log/checkpoint").await.1;
        let size: u64 = String::from_utf8_lossy(&note)
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if size >= at_least {
            return size;
        }
        assert!(Instant::now() < deadline, "no checkpoint covers {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(gw: &Gateway, path: &str) -> (reqwest::StatusCode, Vec<u8>, Option<String>) {
    let resp = reqwest::get(format!("http://{}{path}", gw.addr))
        .await
        .unwrap();
    let status = resp.status();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.bytes().await.unwrap().to_vec(), cache)
}

async fn key(gw: &Gateway) -> String {
    String::from_utf8(get(gw, "/api/v1/log/key").await.1)
        .unwrap()
        .trim()
        .to_string()
}

fn custody(args: &[&str]) -> Output {
    Command::new(custody_bin()).args(args).output().unwrap()
}

/// `custody log export-tiles --data DATA --out OUT`, off the runtime.
async fn export_tiles(data: &std::path::Path, out: &std::path::Path) -> Output {
    let (data, out) = (data.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || {
        custody(&[
            "log",
            "export-tiles",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Tiles fetched for the oracle, by their C2SP path.
struct Fetched(HashMap<String, Vec<u8>>);

impl tlog_tiles::TileReader for Fetched {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                // The oracle's paths name the tile height (tile/8/L/N); C2SP's do not.
                let path = t.path().replacen("tile/8/", "tile/", 1);
                self.0
                    .get(&path)
                    .cloned()
                    .ok_or_else(|| tlog_tiles::Error::InvalidInput(format!("no {path}")))
            })
            .collect()
    }

    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

#[tokio::test]
async fn an_independent_reader_gets_the_same_root_from_the_served_tiles() {
    let (gw, size) = busy_gateway("").await;
    let (status, note, cache) = get(&gw, "/log/checkpoint").await;
    assert_eq!(status, 200);
    assert_eq!(cache.as_deref(), Some("no-cache"));
    let note = String::from_utf8(note).unwrap();
    let body: String = note.split("\n\n").next().unwrap().to_string() + "\n";
    let cp = tlog_tiles::Checkpoint::from_bytes(body.as_bytes()).expect("a C2SP checkpoint");
    assert_eq!(cp.size(), size);

    let mut fetched = HashMap::new();
    for tile in tlog::tiles::tiles_of(size) {
        let path = tile.path();
        let (status, bytes, cache) = get(&gw, &format!("/log/{path}")).await;
        assert_eq!(status, 200, "{path}");
        let want = if tile.is_full() {
            "public, max-age=31536000, immutable"
        } else {
            "public, max-age=3600"
        };
        assert_eq!(cache.as_deref(), Some(want), "{path}");
        fetched.insert(path, bytes);
    }
    assert!(fetched.contains_key("tile/0/000"), "a full tile");
    assert!(fetched.contains_key("tile/1/000.p/1"), "a level-1 tile");
    let reader = Fetched(fetched);
    let hashes = tlog_tiles::TileHashReader::new(size, *cp.hash(), &reader);
    let root = tlog_tiles::tree_hash(size, &hashes).expect("the oracle reads the tree");
    assert_eq!(&root, cp.hash(), "the same root");

    // Every entry in the bundles hashes, the oracle's way, to the leaf its tile holds, and
    // the oracle proves it in the tree.
    let bundle = &reader.0["tile/entries/000"];
    let entries = tlog::tiles::read_bundle(bundle, 256).unwrap();
    for n in [0u64, 1, 100, 255] {
        let h = tlog_tiles::record_hash(entries[n as usize]);
        assert_eq!(&h.0[..], &reader.0["tile/0/000"][n as usize * 32..][..32]);
        let proof = tlog_tiles::prove_record(size, n, &hashes).unwrap();
        tlog_tiles::check_record(&proof, size, root, n, h).expect("the oracle's proof checks");
    }
    // Payloads are not in tiles: the entries are headers and commitments.
    let decoded = tlog::Entry::decode(entries[3]).unwrap();
    assert_eq!(decoded.version, tlog::entry::V2);
    assert!(decoded.message.is_empty());

    // Paths that name no tile, and tiles past the published tree.
    for bad in [
        "/log/tile/0/5",
        "/log/tile/0/000.p/256",
        "/log/tile/x/000",
        // One tile has one spelling: percent-encoded ones name none.
        "/log/tile/0/%30%30%30",
        "/log/tile/entries/x001%2F000",
    ] {
        let (status, body, _) = get(&gw, bad).await;
        assert_eq!(status, 404, "{bad}");
        assert!(
            String::from_utf8_lossy(&body).contains("is not a tile path"),
            "{bad}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, body, _) = get(&gw, "/log/tile/0/x001/000").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("is not in the published tree"));
    gw.shutdown().await;
}

#[tokio::test]
async fn verify_from_tiles_over_http_and_from_an_export() {
    let (gw, _) = busy_gateway("").await;
    let key = key(&gw).await;
    let url = format!("http://{}/log/", gw.addr);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_path_buf();
    let data = gw.data.path().to_path_buf();
    let (k, u) = (key.clone(), url.clone());
    let (remote, no_key) = tokio::task::spawn_blocking(move || {
        let remote = custody(&["verify", "--url", &u, "--key", &k]);
        let no_key = custody(&["verify", "--url", &u]);
        (remote, no_key)
    })
    .await
    .unwrap();
    let export = export_tiles(&data, &out).await;
    let again = export_tiles(&data, &out).await;
    assert!(remote.status.success(), "{}", text(&remote));
    assert!(
        text(&remote).contains("custody verify: OK"),
        "{}",
        text(&remote)
    );
    assert!(!no_key.status.success());
    assert!(text(&no_key).contains("needs --key"), "{}", text(&no_key));
    assert!(export.status.success(), "{}", text(&export));
    assert!(text(&again).contains(" 0 written"), "{}", text(&again));
    let _kept = gw.shutdown().await;

    let local = custody(&["verify", "--tiles", out.to_str().unwrap(), "--key", &key]);
    assert!(local.status.success(), "{}", text(&local));

    // A changed byte in an exported entry bundle: the export refuses to overwrite it, and
    // verification names the tiles that disagree.
    let bundle = out.join("tile/entries/000");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let bad = custody(&["verify", "--tiles", out.to_str().unwrap(), "--key", &key]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("the tiles disagree"), "{}", text(&bad));
    let refused = export_tiles(&data, &out).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("exists with other bytes"),
        "{}",
        text(&refused)
    );

    // Another log's key: the checkpoint is refused.
    let other = "other.example/log+01234567+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let wrong = custody(&["verify", "--tiles", out.to_str().unwrap(), "--key", other]);
    assert!(!wrong.status.success(), "{}", text(&wrong));
}

#[tokio::test]
async fn tiles_can_require_a_token() {
    let gw = Gateway::start(
        "",
        &format!(
            "[audit]\ntiles_public = false\ntiles_prefix = \"/transparency\"\n{}",
            stdio_fixture("f", "")
        ),
    )
    .await;
    let (status, _, _) = get(&gw, "/transparency/checkpoint").await;
    // The test gateway's anonymous caller is no one: refused.
    assert_eq!(status, 401);
    let (status, _, _) = get(&gw, "/log/checkpoint").await;
    assert_eq!(status, 404, "served under the configured prefix only");
    gw.shutdown().await;
}

#[test]
fn a_bad_prefix_is_refused_with_the_reason() {
    for bad in ["log", "/log/", "/api/log", "/mcp", "/a b"] {
        let text = format!(
            "[server]\ndata_dir = \"/tmp/x\"\n[auth]\nanonymous = true\n[audit]\ntiles_prefix = \"{bad}\"\n{}",
            stdio_fixture("f", "")
        );
        let e = custody::config::Config::parse(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.tiles_prefix"), "{bad}: {e}");
    }
}

#[test]
fn tiles_are_public_by_default_unless_anonymous_calls_are_allowed() {
    let parse = |auth: &str, audit: &str| {
        let text = format!(
            "[server]\ndata_dir = \"/tmp/x\"\n{auth}\n[audit]\n{audit}\n{}",
            stdio_fixture("f", "")
        );
        custody::config::Config::parse(&text, "t.toml")
            .unwrap()
            .audit
            .tiles_public
    };
    let tokens = "[auth]\n[[auth.static]]\nname = \"ci\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"";
    assert!(parse(tokens, ""));
    // Every anonymous caller is one principal: a session id read from a tile would open
    // someone's session, so anonymous gateways keep tiles private unless told otherwise.
    assert!(!parse("[auth]\nanonymous = true", ""));
    assert!(parse("[auth]\nanonymous = true", "tiles_public = true"));
}

/// Tiles of another log in the directory: the second log's export is refused before it writes
/// anything, since its checkpoint beside the first log's tiles would read as a fork.
#[tokio::test]
async fn export_refuses_another_logs_directory() {
    let (first, _) = busy_gateway("").await;
    let (second, _) = busy_gateway("").await;
    let out_dir = tempfile::tempdir().unwrap();
    let ok = export_tiles(first.data.path(), out_dir.path()).await;
    assert!(ok.status.success(), "{}", text(&ok));
    let before = std::fs::read(out_dir.path().join("checkpoint")).unwrap();
    let refused = export_tiles(second.data.path(), out_dir.path()).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("refusing to export into another log's directory"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read(out_dir.path().join("checkpoint")).unwrap(),
        before,
        "the first log's checkpoint is left as it was"
    );
    first.shutdown().await;
    second.shutdown().await;
}

/// Entry bundles go out gzipped to a reader that takes gzip (tlog-tiles: SHOULD be
/// compressed), as they are to one that does not, with `Vary` either way; hash tiles never.
#[tokio::test]
async fn entry_bundles_are_gzipped_for_readers_that_take_gzip() {
    use std::io::Read as _;
    let (gw, _) = busy_gateway("").await;
    let fetch = |path: &'static str, encoding: &'static str| {
        let url = format!("http://{}{path}", gw.addr);
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("accept-encoding", encoding)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let (ce, vary) = (header("content-encoding"), header("vary"));
            (ce, vary, r.bytes().await.unwrap().to_vec())
        }
    };
    let (ce, vary, plain) = fetch("/log/tile/entries/000", "identity").await;
    assert_eq!((ce, vary.as_deref()), (None, Some("accept-encoding")));
    let (ce, vary, zipped) = fetch("/log/tile/entries/000", "gzip, identity").await;
    assert_eq!(
        (ce.as_deref(), vary.as_deref()),
        (Some("gzip"), Some("accept-encoding"))
    );
    assert!(
        zipped.len() < plain.len() / 2,
        "{} of {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    // A full bundle is compressed once; the second reader gets the same bytes.
    let (ce, _, again) = fetch("/log/tile/entries/000", "gzip").await;
    assert_eq!((ce.as_deref(), &again), (Some("gzip"), &zipped));
    let (ce, _, _) = fetch("/log/tile/0/000", "gzip").await;
    assert_eq!(ce, None, "hash tiles are not compressed");
    gw.shutdown().await;
}

/// A database whose stored tree no longer hashes to the published checkpoint's root (a tree
/// node changed): export writes nothing to write-once storage, and says why. (An entry or
/// leaf changed below a stored node is what `custody verify --tiles` finds in the export.)
#[tokio::test]
async fn export_refuses_a_tree_that_is_not_the_published_one() {
    let (gw, _) = busy_gateway("").await;
    let data = gw.shutdown().await;
    let conn = rusqlite::Connection::open(data.path().join("log.sqlite")).unwrap();
    let changed = conn
        .execute(
            "UPDATE nodes SET hash = zeroblob(32) WHERE level = 8 AND idx = 0",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let out = tempfile::tempdir().unwrap();
    let refused = export_tiles(data.path(), out.path()).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("the database was changed; nothing was exported"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
