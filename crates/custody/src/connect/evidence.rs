//! The evidence a CI job keeps (`custody connect --evidence FILE`): every receipt of the job's
//! calls, and at the end of the session the latest (cosigned) checkpoint that covers them with an
//! inclusion proof of each entry in it. `custody verify --evidence` proves later, with a
//! consistency proof to the log as it is then, that every one of them is still there unchanged.
//!
//! The file is JSON:
//!
//! ```json
//! { "format": "custody-evidence/v1", "gateway": "https://…/mcp/deploy", "log": "origin",
//!   "verifier_key": "…(as the gateway claimed it; verify with a key kept elsewhere)",
//!   "written_ns": 0, "checkpoint": "…signed note with cosignatures…",
//!   "entries": [ { "index": 41, "leaf": "hex", "role": "request", "method": "tools/call",
//!                  "target": "deploy", "id": 7, "proof": "c2sp.org/tlog-proof@v1…" } ] }
//! ```

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FORMAT: &str = "custody-evidence/v1";

/// How long the end of a session waits for a checkpoint that covers its last entry.
const COVER_WAIT: Duration = Duration::from_secs(30);

/// One recorded message of the job, as its receipt names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    /// The entry's leaf hash, hex.
    pub leaf: String,
    /// `request` or `response`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// A tlog-proof of the entry in `checkpoint`.
    #[serde(default)]
    pub proof: String,
}

/// The evidence file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    pub format: String,
    pub gateway: String,
    pub log: String,
    pub verifier_key: String,
    pub written_ns: u64,
    pub checkpoint: String,
    pub entries: Vec<Entry>,
}

/// Receipts gathered while the session runs.
#[derive(Default)]
pub struct Collector {
    log: Mutex<Option<String>>,
    entries: Mutex<Vec<Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Collector {
    /// Takes the receipt of an answer (`result._meta["dev.custody/receipt"]`), if it has one.
    pub fn observe(&self, answer: &Value, method: Option<&str>, target: Option<&str>) {
        let Some(receipt) = answer
            .get("result")
            .and_then(|r| r.get("_meta"))
            .and_then(|m| m.get(crate::relay::RECEIPT_KEY))
        else {
            return;
        };
        if let Some(log) = receipt.get("log").and_then(Value::as_str) {
            lock(&self.log).get_or_insert_with(|| log.to_string());
        }
        let mut entries = lock(&self.entries);
        for role in ["request", "response"] {
            let Some(r) = receipt.get(role) else { continue };
            let (Some(index), Some(leaf)) = (
                r.get("index").and_then(Value::as_u64),
                r.get("leaf").and_then(Value::as_str),
            ) else {
                continue;
            };
            if entries.iter().any(|e| e.index == index) {
                continue;
            }
            entries.push(Entry {
                index,
                leaf: leaf.to_string(),
                role: role.to_string(),
                method: method.map(str::to_string),
                target: target.map(str::to_string),
                id: answer.get("id").cloned(),
                proof: String::new(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.entries).is_empty()
    }

    /// Fetches a checkpoint that covers every receipt and a proof of each entry in it, from the
    /// gateway's log API at `base` (`scheme://host:port`).
    ///
    /// # Errors
    /// What could not be fetched, in words.
    pub async fn finish(
        &self,
        gateway: &str,
        base: &str,
        http: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    ) -> Result<Evidence, String> {
        let mut entries = lock(&self.entries).clone();
        entries.sort_by_key(|e| e.index);
        let last = entries.last().map_or(0, |e| e.index);
        let deadline = tokio::time::Instant::now() + COVER_WAIT;
        let checkpoint = loop {
            let note = get(http, &format!("{base}/api/v1/log/checkpoint")).await?;
            let size = checkpoint_size(&note)?;
            if entries.is_empty() || size > last {
                break note;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "no checkpoint covering entry {last} was published within {}s (the latest covers {size})",
                    COVER_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let size = checkpoint_size(&checkpoint)?;
        for e in &mut entries {
            e.proof = get(
                http,
                &format!("{base}/api/v1/log/proof?index={}&size={size}", e.index),
            )
            .await?;
        }
        let verifier_key = get(http, &format!("{base}/api/v1/log/key"))
            .await?
            .trim()
            .to_string();
        Ok(Evidence {
            format: FORMAT.into(),
            gateway: gateway.into(),
            log: lock(&self.log).clone().unwrap_or_default(),
            verifier_key,
            written_ns: crate::audit::now_ns(),
            checkpoint,
            entries,
        })
    }
}

/// The size a checkpoint note signs.
///
/// # Errors
/// It is not a checkpoint.
pub fn checkpoint_size(note: &str) -> Result<u64, String> {
    let n = tlog::Note::parse(note.as_bytes()).map_err(|e| format!("not a signed note: {e}"))?;
    tlog::Checkpoint::from_text(&n.text)
        .map(|c| c.size)
        .map_err(|e| format!("not a checkpoint: {e}"))
}

/// A GET of the gateway's log API, as text.
///
/// # Errors
/// A failed request or a status other than 200, in words.
pub async fn get(
    http: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: &str,
) -> Result<String, String> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = http
        .request(req)
        .await
        .map_err(|e| format!("{url}: {}", crate::net::error_chain(&e)))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 4 * 1024 * 1024)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != StatusCode::OK {
        return Err(format!("{url}: HTTP {status}: {}", text.trim()));
    }
    Ok(text)
}

/// `scheme://authority` of an endpoint URL.
pub fn base_of(url: &http::Uri) -> String {
    format!(
        "{}://{}",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str())
    )
}
