//! The sequencer against a store that fails like production: before persisting, and after.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tlog::compact::Node;
use tlog::{CompactRange, Signer};

use super::*;
use crate::store::Row;
use bytes::Bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// The commit fails and nothing was written.
    NotPersisted,
    /// The commit reports failure but the data reached the disk.
    Persisted,
    /// The commit fails, and the database now holds a tree the log never built (someone
    /// changed it underneath).
    Diverged,
}

#[derive(Default)]
struct Inner {
    rows: Vec<Vec<u8>>,
    state: CompactRange,
    faults: Vec<Fault>,
    commits: usize,
}

#[derive(Clone, Default)]
struct FaultyStore(Arc<Mutex<Inner>>);

impl Store for FaultyStore {
    fn append(
        &mut self,
        first: u64,
        rows: &[Row],
        _nodes: &[Node],
        state: &CompactRange,
    ) -> Result<(), StoreError> {
        let mut s = self.0.lock().unwrap();
        assert_eq!(
            first,
            s.rows.len() as u64,
            "the sequencer appends at the end"
        );
        s.commits += 1;
        let fault = if s.faults.is_empty() {
            Fault::None
        } else {
            s.faults.remove(0)
        };
        if fault == Fault::Diverged {
            s.state.append(tlog::leaf_hash(b"forged"), |_| {});
        } else if fault != Fault::NotPersisted {
            s.rows.extend(rows.iter().map(|r| r.data.clone()));
            s.state = state.clone();
        }
        match fault {
            Fault::None => Ok(()),
            _ => Err(StoreError::Inconsistent(format!("injected {fault:?}"))),
        }
    }

    fn state(&mut self) -> Result<CompactRange, StoreError> {
        Ok(self.0.lock().unwrap().state.clone())
    }

    fn put_checkpoint(&mut self, _: &StoredCheckpoint) -> Result<(), StoreError> {
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(None)
    }

    fn entry_version(&mut self) -> Result<Option<u8>, StoreError> {
        Ok(Some(tlog::entry::V2))
    }

    fn set_entry_version(&mut self, _: u8) -> Result<(), StoreError> {
        Ok(())
    }

    fn scan(
        &mut self,
        from: u64,
        to: u64,
        _: bool,
        f: &mut crate::store::ScanFn<'_>,
    ) -> Result<(), StoreError> {
        let s = self.0.lock().unwrap();
        for i in from..to {
            let data = s.rows.get(i as usize).ok_or(StoreError::NotFound(i))?;
            f(i, tlog::leaf_hash(data), Some(data))?;
        }
        Ok(())
    }
}

/// A log's settings for a unit test: fsync, checkpoints every 50 ms, the key in `dir`.
pub(crate) fn config(dir: &std::path::Path) -> AuditConfig {
    AuditConfig {
        durability: Durability::Fsync,
        origin: None,
        key_file: dir.join("log.key"),
        checkpoint_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_secs(60),
        scrub_interval: None,
        retention: None,
        erasers: Vec::new(),
        tiles_prefix: "/log".into(),
        tiles_public: true,
        tiles_public_set: false,
        predecessor: None,
        store: None,
    }
}

fn draft(n: u32) -> Draft {
    let mut d = Draft::gateway(Kind::Notification, "ep", "{}".into());
    d.message = Bytes::from(format!("{{\"n\":{n}}}"));
    d
}

fn open(store: FaultyStore) -> (Arc<Audit>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("test/log", [5; 32]).unwrap();
    let opened = Audit::with_store(store, signer, true, dir.path(), &config(dir.path())).unwrap();
    (opened.audit, dir)
}

#[tokio::test]
async fn concurrent_appends_get_distinct_contiguous_indexes_in_few_commits() {
    let store = FaultyStore::default();
    let (audit, _dir) = open(store.clone());
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let a = audit.clone();
            tokio::spawn(async move { a.append(draft(n)).await.unwrap() })
        })
        .collect();
    let mut indexes: Vec<u64> = Vec::new();
    for t in tasks {
        indexes.push(t.await.unwrap().index);
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (0..200).collect::<Vec<_>>());
    let inner = store.0.lock().unwrap();
    assert!(
        inner.commits < 200,
        "group commit: {} commits for 200 entries",
        inner.commits
    );
    for (i, row) in inner.rows.iter().enumerate() {
        assert_eq!(
            tlog::Entry::decode(row).unwrap().index,
            i as u64,
            "each entry names its index"
        );
    }
    assert_eq!(audit.head().size, 200);
}

#[tokio::test]
async fn a_failed_commit_refuses_every_entry_of_the_batch_and_the_log_goes_on() {
    let store = FaultyStore::default();
    store.0.lock().unwrap().faults = vec![Fault::NotPersisted];
    let (audit, _dir) = open(store.clone());
    let err = audit.append(draft(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    assert_eq!(audit.head().size, 0);
    let ok = audit.append(draft(2)).await.unwrap();
    assert_eq!(
        ok.index, 0,
        "nothing was persisted, so the next entry takes index 0"
    );
}

#[tokio::test]
async fn a_commit_that_failed_after_persisting_is_not_overwritten() {
    let store = FaultyStore::default();
    store.0.lock().unwrap().faults = vec![Fault::Persisted];
    let (audit, _dir) = open(store.clone());
    assert!(
        audit.append(draft(1)).await.is_err(),
        "the caller was told it failed"
    );
    let next = audit.append(draft(2)).await.unwrap();
    assert_eq!(next.index, 1, "the persisted entry keeps index 0");
    let inner = store.0.lock().unwrap();
    let mut range = CompactRange::new();
    for row in &inner.rows {
        range.append(tlog::leaf_hash(row), |_| {});
    }
    assert_eq!(
        range.root(),
        audit.head().root,
        "the head matches what is stored"
    );
}

#[tokio::test]
async fn a_store_that_diverged_from_the_tree_halts_entries_and_signing() {
    let store = FaultyStore::default();
    let (audit, _dir) = open(store.clone());
    audit.append(draft(1)).await.unwrap();
    audit.checkpoint().await.unwrap().unwrap();
    store.0.lock().unwrap().faults = vec![Fault::Diverged];
    assert!(audit.append(draft(2)).await.is_err());
    let report = audit.health();
    assert!(!report.ready);
    assert!(
        report.reasons[0].contains("neither the tree before the batch"),
        "{report:?}"
    );
    let err = audit.append(draft(3)).await.unwrap_err().to_string();
    assert!(err.contains("halted by an integrity alarm"), "{err}");
    let err = audit.checkpoint().await.unwrap_err().to_string();
    assert!(err.contains("signing is halted"), "{err}");
    assert_eq!(
        audit.head().size,
        1,
        "the tree in memory never took the forged state"
    );
}

#[tokio::test]
async fn checkpoints_cover_the_head_and_verify() {
    let store = FaultyStore::default();
    let (audit, _dir) = open(store.clone());
    for n in 0..5 {
        audit.append(draft(n)).await.unwrap();
    }
    let cp = audit.checkpoint().await.unwrap().unwrap();
    let (parsed, _) = tlog::Checkpoint::open(cp.note.as_bytes(), audit.verifier()).unwrap();
    assert_eq!(parsed.size, 5);
    assert_eq!(parsed.root, audit.head().root);
    assert!(
        audit.checkpoint().await.unwrap().is_none(),
        "nothing new to sign"
    );
}

/// A gateway over a store that fails on demand, in front of an upstream that counts calls.
mod fail_closed {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::Config;

    async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(move |body: String| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let req: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let reply = serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": {"tools": []}});
                    ([("content-type", "application/json")], reply.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/mcp"), calls)
    }

    async fn call(addr: std::net::SocketAddr, id: u64) -> serde_json::Value {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
        reqwest::Client::new()
            .post(format!("http://{addr}/mcp/up"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_call_that_cannot_be_recorded_is_not_forwarded() {
        let (url, calls) = counting_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[endpoints.up.upstream]\ntransport = \"http\"\nurl = \"{url}\"\n",
            dir.path().display()
        );
        let config = Config::parse(&text, "t.toml").unwrap();
        let store = FaultyStore::default();
        let signer = Signer::new("test/log", [5; 32]).unwrap();
        let opened =
            Audit::with_store(store.clone(), signer, true, dir.path(), &config.audit).unwrap();
        let running = crate::http::start_with(&config, opened).await.unwrap();
        let addr = running.addr;

        let ok = call(addr, 1).await;
        assert!(ok["result"].is_object(), "{ok}");
        assert!(
            ok["result"]["_meta"][crate::relay::RECEIPT_KEY]["response"]["index"].is_u64(),
            "{ok}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The request's entry cannot be made durable: the upstream never sees the call.
        store.0.lock().unwrap().faults = vec![Fault::NotPersisted];
        let refused = call(addr, 2).await;
        assert_eq!(refused["error"]["code"], -32015, "{refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("audit log is unavailable"),
            "{refused}"
        );
        assert_eq!(refused["id"], 2);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing was forwarded");

        // The request is recorded but its answer cannot be: the client does not get it.
        store.0.lock().unwrap().faults = vec![Fault::None, Fault::NotPersisted];
        let withheld = call(addr, 3).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the recorded request went upstream"
        );
        assert_eq!(
            withheld["error"]["code"], -32015,
            "the unrecorded answer is withheld: {withheld}"
        );
        assert!(withheld.get("result").is_none());

        // And the log goes on once storage works again.
        let again = call(addr, 4).await;
        assert!(again["result"].is_object(), "{again}");
        running.shutdown().await;
    }
}

#[tokio::test]
async fn an_entry_the_verifier_would_refuse_is_never_written() {
    let store = FaultyStore::default();
    let (audit, _dir) = open(store.clone());
    let mut d = draft(1);
    for version in [tlog::entry::V1, tlog::entry::V2] {
        let exact = d.encode(0, version).0.len();
        let estimate = d.encoded_len(version);
        assert!(estimate >= exact && estimate <= exact + 8, "v{version}");
    }
    d.message = Bytes::from(vec![b' '; tlog::entry::MAX_ENTRY_BYTES + 1]);
    let err = audit.append(d).await.unwrap_err();
    assert!(matches!(err, AuditError::TooLarge(_)), "{err}");
    // A version-2 header over its cap is refused where it is made, never truncated.
    let mut d = draft(1);
    d.detail = format!(
        "{{\"big\":\"{}\"}}",
        "x".repeat(tlog::entry::MAX_HEADER_BYTES)
    );
    let err = audit.append(d).await.unwrap_err();
    assert!(matches!(err, AuditError::HeaderTooLarge(_)), "{err}");
    assert!(store.0.lock().unwrap().rows.is_empty());
    assert_eq!(audit.append(draft(2)).await.unwrap().index, 0);
}
