//! Helpers for the witness tests: a small log kept in memory and signed with a real key, the
//! built-in witness on loopback, policies, and witnesses that misbehave.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use custody::witness::client::{ConsistencyProofs, Options, Witnesses};
use custody::witness::{keys, server};
use tlog::cosignature::CosignatureSigner;
use tlog::policy::Policy;
use tlog::proof::{MemoryStore, consistency_proof};
use tlog::witness::AddCheckpoint;
use tlog::{Checkpoint, CompactRange, Hash, Note, Signer, Verifier, leaf_hash};
use tokio_util::sync::CancellationToken;

pub const ORIGIN: &str = "ci.example.com/custody";

/// A log: leaves in memory, checkpoints signed with a real Ed25519 key.
pub struct Log {
    /// The signer key string (`PRIVATE+KEY+origin+...`).
    key: String,
    pub leaves: Arc<Mutex<Vec<Hash>>>,
}

impl Log {
    pub fn new() -> Self {
        Self::with_key(&Signer::new(ORIGIN, [42; 32]).unwrap().to_key_string())
    }

    /// A log signing with this key (a `custody keygen` file's content); its origin is the
    /// key's name.
    pub fn with_key(key: &str) -> Self {
        Self {
            key: key.trim().to_string(),
            leaves: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn signer(&self) -> Signer {
        Signer::from_key_string(&self.key).unwrap()
    }

    pub fn origin(&self) -> String {
        self.signer().name().to_string()
    }

    pub fn verifier(&self) -> Verifier {
        self.signer().verifier()
    }

    pub fn size(&self) -> u64 {
        self.leaves.lock().unwrap().len() as u64
    }

    pub fn append(&self, n: usize) -> &Self {
        let mut l = self.leaves.lock().unwrap();
        for _ in 0..n {
            let i = l.len() as u64;
            l.push(leaf_hash(format!("entry {i}").as_bytes()));
        }
        self
    }

    /// The same key, the same size, one entry changed: what an operator with the key and the
    /// database can make.
    pub fn rewritten(&self, index: usize) -> Self {
        let mut leaves = self.leaves.lock().unwrap().clone();
        leaves[index] = leaf_hash(b"what the operator wishes had happened");
        Self {
            key: self.key.clone(),
            leaves: Arc::new(Mutex::new(leaves)),
        }
    }

    /// The first `n` entries only: a restore from an old backup.
    pub fn truncated(&self, n: usize) -> Self {
        let leaves = self.leaves.lock().unwrap()[..n].to_vec();
        Self {
            key: self.key.clone(),
            leaves: Arc::new(Mutex::new(leaves)),
        }
    }

    pub fn checkpoint_struct(&self) -> Checkpoint {
        let leaves = self.leaves.lock().unwrap();
        let mut c = CompactRange::new();
        for l in leaves.iter() {
            c.append(*l, |_| {});
        }
        Checkpoint {
            origin: self.origin(),
            size: leaves.len() as u64,
            root: c.root(),
            extensions: vec![],
        }
    }

    /// The current checkpoint, signed by the log.
    pub fn checkpoint(&self) -> String {
        self.checkpoint_struct().sign(&self.signer()).encode()
    }

    pub fn consistency(&self, old: u64, new: u64) -> Vec<Hash> {
        let leaves = self.leaves.lock().unwrap();
        consistency_proof(&MemoryStore(&leaves[..]), old, new).unwrap()
    }

    /// Proofs from this log's entries (as they are when asked).
    pub fn proofs(&self) -> Arc<dyn ConsistencyProofs> {
        let leaves = self.leaves.clone();
        Arc::new(move |old: u64, new: u64| {
            let leaves = leaves.lock().unwrap().clone();
            async move {
                consistency_proof(&MemoryStore(&leaves[..]), old, new).map_err(|e| e.to_string())
            }
        })
    }

    /// An add-checkpoint body for the current checkpoint from `old`.
    pub fn body(&self, old: u64) -> String {
        let proof = if old == 0 {
            Vec::new()
        } else {
            self.consistency(old, self.size())
        };
        AddCheckpoint {
            old,
            proof,
            checkpoint: self.checkpoint(),
        }
        .encode()
    }
}

/// A built-in witness running in this process.
pub struct TestWitness {
    pub url: String,
    pub vkey: String,
    pub dir: tempfile::TempDir,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestWitness {
    /// A new witness (new key) accepting `log`.
    pub async fn start(name: &str, log: &Log) -> Self {
        let dir = tempfile::tempdir().unwrap();
        keys::create(dir.path(), name).unwrap();
        Self::start_in(dir, log).await
    }

    /// The witness of an existing data directory.
    pub async fn start_in(dir: tempfile::TempDir, log: &Log) -> Self {
        Self::start_on(dir, log, "127.0.0.1:0").await
    }

    /// The witness of an existing data directory, on `addr` (to come back where a policy
    /// names it).
    pub async fn start_on(dir: tempfile::TempDir, log: &Log, addr: &str) -> Self {
        let w = Arc::new(server::Witness::open(dir.path(), vec![log.verifier()]).unwrap());
        let vkey = w.verifier().to_key_string();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, w, stop.clone()));
        Self {
            url,
            vkey,
            dir,
            stop,
            task,
        }
    }

    /// Stops it and hands back its data directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.stop.cancel();
        let _ = self.task.await;
        self.dir
    }

    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Option<String>, String) {
        let r = reqwest::Client::new()
            .post(format!("{}/add-checkpoint", self.url))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (status, ct, r.text().await.unwrap())
    }

    pub async fn monitor(&self, origin: &str) -> (u16, String) {
        let r = reqwest::get(format!(
            "{}/{}/checkpoint",
            self.url,
            tlog::witness::origin_hash(origin)
        ))
        .await
        .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// A policy of `witness NAME VKEY URL` lines and the rest (`group`, `quorum`) as given.
pub fn policy(witnesses: &[(&str, &str, &str)], rest: &str) -> Arc<Policy> {
    let mut text = String::new();
    for (name, vkey, url) in witnesses {
        text.push_str(&format!("witness {name} {vkey} {url}\n"));
    }
    text.push_str(rest);
    Arc::new(Policy::parse(text.as_bytes()).unwrap())
}

pub fn client(policy: Arc<Policy>, timeout: Duration) -> Witnesses {
    let n = policy.witnesses().len();
    Witnesses::new(
        policy,
        &Options {
            timeout,
            min_interval: vec![Duration::ZERO; n],
        },
    )
    .unwrap()
}

/// How a hostile or broken witness answers.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// 200 with HTML.
    Garbage,
    /// A well-formed cosignature by another key under the witness's name.
    WrongKey,
    /// A cosignature by the right key over another checkpoint.
    OtherCheckpoint,
    /// A cosignature by the right key over this checkpoint, dated a day ago.
    OldTimestamp,
    /// Waits this long, then answers garbage.
    Slow(Duration),
    /// A tlog-witness v1.0.0 witness refusing another root at the size it holds: 409 naming
    /// the old size sent (`true`), or 409 without a body (`false`).
    V1Conflict(bool),
}

/// A misbehaving witness on loopback; returns its URL and the key a policy lists for it.
pub async fn bad_witness(name: &str, how: Misbehaviour) -> (String, String) {
    let listed = Arc::new(CosignatureSigner::new(name, rand_seed()).unwrap());
    let other = Arc::new(CosignatureSigner::new(name, rand_seed()).unwrap());
    let vkey = listed.verifier().to_key_string();
    let handler = move |body: String| {
        use axum::response::IntoResponse as _;
        let listed = listed.clone();
        let other = other.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let req = AddCheckpoint::parse(body.as_bytes()).unwrap();
            let note = Note::parse(req.checkpoint.as_bytes()).unwrap();
            match how {
                Misbehaviour::Garbage => "<html>witness maintenance</html>\n".into_response(),
                Misbehaviour::WrongKey => other
                    .sign(&note.text, now)
                    .unwrap()
                    .to_line()
                    .into_response(),
                Misbehaviour::OtherCheckpoint => {
                    let mut cp = Checkpoint::from_text(&note.text).unwrap();
                    cp.size += 1;
                    listed
                        .sign(&cp.to_text(), now)
                        .unwrap()
                        .to_line()
                        .into_response()
                }
                Misbehaviour::OldTimestamp => listed
                    .sign(&note.text, now - 86_400)
                    .unwrap()
                    .to_line()
                    .into_response(),
                Misbehaviour::Slow(d) => {
                    tokio::time::sleep(d).await;
                    "late\n".into_response()
                }
                Misbehaviour::V1Conflict(with_size) => (
                    axum::http::StatusCode::CONFLICT,
                    [("content-type", "text/x.tlog.size")],
                    if with_size {
                        format!("{}\n", req.old)
                    } else {
                        String::new()
                    },
                )
                    .into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/add-checkpoint", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, vkey)
}

fn rand_seed() -> [u8; 32] {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    [NEXT.fetch_add(1, Ordering::Relaxed); 32]
}

/// A loopback URL nothing listens on.
pub async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}
