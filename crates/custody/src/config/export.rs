//! `[[export]]`: sinks that stream committed entries to a SIEM, a file or an HTTP collector.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::secret::SecretRef;
use super::{ConfigError, Resolver};

/// `[[export]]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    /// A name for the sink (letters, digits, `-`, `_`): its cursor file is
    /// `<data_dir>/export-NAME.cursor`.
    pub name: Option<String>,
    /// `"ocsf"` (default): one OCSF API Activity event per call. `"entries"`: every entry as
    /// `custody log` prints it.
    pub format: Option<String>,
    /// A file to append JSON lines to, rotated at `max_bytes`.
    pub file: Option<PathBuf>,
    /// Rotate the file when it would grow past this many bytes. Default 100 MiB.
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`FILE.1` … `FILE.N`). Default 5.
    pub keep: Option<u32>,
    /// An HTTP collector (Splunk HEC-style JSON) to POST batches to.
    pub url: Option<String>,
    /// Headers for the collector, values by reference (`"Splunk ${env:HEC_TOKEN}"`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Entries per batch. Default 500.
    pub batch: Option<u64>,
}

/// What a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Ocsf,
    Entries,
}

/// Where a sink writes.
#[derive(Debug, Clone)]
pub enum ExportTarget {
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    Http {
        url: url::Url,
        headers: Vec<(http::HeaderName, SecretRef)>,
    },
}

/// One `[[export]]`, validated.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub name: String,
    pub format: ExportFormat,
    pub target: ExportTarget,
    pub batch: u64,
}

impl Resolver<'_> {
    pub(super) fn exports(&self, raw: Vec<RawExport>) -> Result<Vec<ExportConfig>, ConfigError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new(""));
        let mut out: Vec<ExportConfig> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("export.{i}.{k}");
            let name = r.name.unwrap_or_default();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(self.err(
                    "export",
                    format!("[[export]] {i} needs a name of letters, digits, - and _ (at most 64), e.g. name = \"siem\"; got {name:?}"),
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(self.err("export", format!("two [[export]] sinks are named {name:?}")));
            }
            let format = match r.format.as_deref() {
                None | Some("ocsf") => ExportFormat::Ocsf,
                Some("entries") => ExportFormat::Entries,
                Some(other) => {
                    return Err(self.err(
                        &key("format"),
                        format!("{other:?} is not a format: use \"ocsf\" or \"entries\""),
                    ));
                }
            };
            let target = match (r.file, r.url) {
                (Some(file), None) => ExportTarget::File {
                    path: base.join(file),
                    max_bytes: r.max_bytes.unwrap_or(100 * 1024 * 1024).max(4096),
                    keep: r.keep.unwrap_or(5),
                },
                (None, Some(u)) => {
                    let url = url::Url::parse(&u)
                        .map_err(|e| self.err(&key("url"), format!("{u:?} is not a URL: {e}")))?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(self.err(&key("url"), "must be an http:// or https:// URL"));
                    }
                    let mut headers = Vec::new();
                    for (h, v) in &r.headers {
                        let name = http::HeaderName::try_from(h.as_str()).map_err(|_| {
                            self.err(&key("headers"), format!("{h:?} is not a header name"))
                        })?;
                        let value =
                            SecretRef::parse(v, base).map_err(|e| self.err(&key("headers"), e))?;
                        headers.push((name, value));
                    }
                    ExportTarget::Http { url, headers }
                }
                _ => {
                    return Err(self.err(
                        "export",
                        format!(
                            "[[export]] {name:?} needs exactly one of file = \"…\" or url = \"…\""
                        ),
                    ));
                }
            };
            let batch = r.batch.unwrap_or(500);
            if !(1..=10_000).contains(&batch) {
                return Err(self.err(&key("batch"), "must be 1 to 10000"));
            }
            out.push(ExportConfig {
                name,
                format,
                target,
                batch,
            });
        }
        Ok(out)
    }
}
