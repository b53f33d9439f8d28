//! Where an export's batches go: a rotated file of JSON lines, or an HTTP collector that takes
//! Splunk HEC-style JSON (`{"time", "source", "sourcetype", "event"}` objects, one per line).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::config::{ExportConfig, ExportFormat, ExportTarget};

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

pub(super) enum Sink {
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    Http {
        client: Box<Client>,
        url: url::Url,
        headers: Vec<(http::HeaderName, crate::config::SecretRef)>,
        sourcetype: &'static str,
    },
}

impl Sink {
    pub(super) fn new(config: &ExportConfig) -> Self {
        match &config.target {
            ExportTarget::File {
                path,
                max_bytes,
                keep,
            } => Sink::File {
                path: path.clone(),
                max_bytes: *max_bytes,
                keep: *keep,
            },
            ExportTarget::Http { url, headers } => Sink::Http {
                client: Box::new(crate::net::client(Duration::from_secs(5))),
                url: url.clone(),
                headers: headers.clone(),
                sourcetype: match config.format {
                    ExportFormat::Ocsf => "custody:ocsf",
                    ExportFormat::Entries => "custody:entry",
                },
            },
        }
    }

    /// Delivers `lines`; `Err` says why not (the caller retries the same batch).
    pub(super) async fn deliver(&mut self, lines: &[Value]) -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        match self {
            Sink::File {
                path,
                max_bytes,
                keep,
            } => {
                let mut body = Vec::new();
                for l in lines {
                    body.extend_from_slice(l.to_string().as_bytes());
                    body.push(b'\n');
                }
                let (path, max, keep) = (path.clone(), *max_bytes, *keep);
                tokio::task::spawn_blocking(move || append(&path, &body, max, keep))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Sink::Http {
                client,
                url,
                headers,
                sourcetype,
            } => {
                let mut body = Vec::new();
                for l in lines {
                    let time = l
                        .get("time")
                        .and_then(Value::as_u64)
                        .or_else(|| {
                            l.get("time_ns")
                                .and_then(Value::as_u64)
                                .map(|t| t / 1_000_000)
                        })
                        .unwrap_or(0);
                    let ev = json!({
                        "time": time as f64 / 1000.0,
                        "source": "custody",
                        "sourcetype": *sourcetype,
                        "event": l,
                    });
                    body.extend_from_slice(ev.to_string().as_bytes());
                    body.push(b'\n');
                }
                let mut req = http::Request::post(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/json");
                for (name, value) in headers.iter() {
                    let v = value
                        .resolve()
                        .map_err(|e| format!("the header {name}: {e}"))?;
                    req = req.header(name, v);
                }
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| format!("building the request: {e}"))?;
                let shown = format!(
                    "{}://{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default()
                );
                let (status, answer) = tokio::time::timeout(
                    Duration::from_secs(30),
                    crate::net::exchange(client, req, &shown, 64 * 1024),
                )
                .await
                .map_err(|_| format!("{shown} did not answer within 30 s"))??;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{shown} answered HTTP {status}: {}",
                        String::from_utf8_lossy(&answer)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ))
                }
            }
        }
    }
}

/// Appends `body` to `path` (synced), rotating first when it would pass `max` bytes.
fn append(path: &Path, body: &[u8], max: u64, keep: u32) -> Result<(), String> {
    let shown = path.display();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + body.len() as u64 > max {
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(path, n + 1))
                    .map_err(|e| format!("rotating {}: {e}", from.display()))?;
            }
        }
        if keep == 0 {
            std::fs::remove_file(path).map_err(|e| format!("rotating {shown}: {e}"))?;
        } else {
            std::fs::rename(path, rotated(path, 1))
                .map_err(|e| format!("rotating {shown}: {e}"))?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {shown}: {e}"))?;
    f.write_all(body)
        .and_then(|()| f.sync_data())
        .map_err(|e| format!("writing {shown}: {e}"))
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}
