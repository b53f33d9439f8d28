//! How `custody log` prints entries: JSON lines, a table for people, CSV for spreadsheets, or
//! OCSF events for a SIEM.

use std::io::Write as _;

use serde_json::Value;

use super::cli::{Format, clip, time};
use crate::store::{LogReader, Reader};

/// The CSV columns, in order.
const CSV_COLUMNS: [&str; 19] = [
    "time_utc",
    "index",
    "kind",
    "endpoint",
    "session",
    "jsonrpc_id",
    "method",
    "target",
    "principal",
    "issuer",
    "subject",
    "repository",
    "run_id",
    "decision",
    "policies",
    "masked",
    "answered_by",
    "duration_ms",
    "leaf",
];

/// A cell as a spreadsheet may show it: one that starts like a formula (`=`, `+`, `-`, `@`, a
/// tab or a carriage return) gets a leading `'`, so opening the file runs nothing a client or
/// an upstream wrote.
fn cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// The CSV row of entry `e` (as the explorer shows it).
fn csv_row(e: &Value) -> Vec<String> {
    let s = |p: &str| match e.pointer(p) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(v)) => v.clone(),
        Some(v) => v.to_string(),
    };
    // The masking report lists each masked value.
    let masked = e
        .pointer("/detail/mask")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let row = [
        time(e["time_ns"].as_u64().unwrap_or(0)),
        s("/index"),
        s("/kind"),
        s("/endpoint"),
        s("/session"),
        s("/id"),
        s("/method"),
        s("/target"),
        s("/caller/name"),
        s("/caller/issuer"),
        s("/caller/subject"),
        s("/caller/claims/repository"),
        s("/caller/claims/run_id"),
        s("/detail/policy/decision"),
        s("/detail/policy/policies"),
        masked.to_string(),
        s("/answered_by/index"),
        s("/answered_by/duration_ms"),
        s("/leaf"),
    ];
    row.iter().map(|c| cell(c)).collect()
}

pub struct Printer {
    format: Format,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    header: bool,
    origin: Option<String>,
}

impl Printer {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            header: false,
            origin: None,
        }
    }

    /// Prints one entry; `false` when the reader went away (a closed pipe). OCSF needs the
    /// local log `log` (the entry's bytes and the request it answers).
    ///
    /// # Errors
    /// Writing fails, or (OCSF) the log cannot be read.
    pub fn entry(&mut self, e: &Value, log: Option<&Reader>) -> anyhow::Result<bool> {
        let r = match self.format {
            Format::Jsonl => writeln!(self.out, "{e}"),
            Format::Table => self.table(e),
            Format::Csv => {
                // Every field quoted: a spreadsheet whose list separator is `;` cannot split
                // a field into a formula.
                let mut w = csv::WriterBuilder::new()
                    .quote_style(csv::QuoteStyle::Always)
                    .from_writer(Vec::new());
                if !self.header {
                    self.header = true;
                    w.write_record(CSV_COLUMNS)?;
                }
                w.write_record(csv_row(e))?;
                let bytes = w.into_inner().map_err(|err| anyhow::anyhow!("{err}"))?;
                self.out.write_all(&bytes)
            }
            Format::Ocsf => match self.ocsf(e, log)? {
                Some(event) => writeln!(self.out, "{event}"),
                None => Ok(()),
            },
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The OCSF event of `e`, or `None` for an entry that is no API activity.
    fn ocsf(&mut self, e: &Value, log: Option<&Reader>) -> anyhow::Result<Option<Value>> {
        let log =
            log.ok_or_else(|| anyhow::anyhow!("--format ocsf needs a local data directory"))?;
        let idx = e["index"].as_u64().unwrap_or(0);
        if self.origin.is_none() {
            self.origin = Some(
                log.latest_checkpoint()?
                    .and_then(|cp| cp.note.lines().next().map(str::to_string))
                    .unwrap_or_default(),
            );
        }
        let (leaf, bytes) = log.entry(idx)?;
        let entry = tlog::Entry::decode(&bytes)
            .map_err(|err| anyhow::anyhow!("entry {idx} cannot be decoded: {err}"))?;
        if !crate::export::ocsf::is_event(&entry) {
            return Ok(None);
        }
        let request = match entry.request {
            Some(r) => Some(log.entry(r)?.1),
            None => None,
        };
        let request = request.as_deref().and_then(|b| tlog::Entry::decode(b).ok());
        Ok(Some(crate::export::ocsf::event(
            &entry,
            &leaf.to_hex(),
            self.origin.as_deref().unwrap_or(""),
            request.as_ref(),
            env!("CARGO_PKG_VERSION"),
        )))
    }

    fn table(&mut self, e: &Value) -> std::io::Result<()> {
        if !self.header {
            self.header = true;
            writeln!(
                self.out,
                "{:<23}  {:>8}  {:<14}  {:<20}  {:<14}  {:<22}  {:<10}  ANSWER",
                "TIME (UTC)", "INDEX", "KIND", "PRINCIPAL", "METHOD", "TARGET", "DECISION"
            )?;
        }
        let s = |p: &str| {
            e.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let answer = match e.get("answered_by") {
            Some(a) => format!(
                "{} #{} after {:.1} ms",
                a["kind"].as_str().unwrap_or(""),
                a["index"],
                a["duration_ms"].as_f64().unwrap_or(0.0)
            ),
            None => e["request"]
                .as_u64()
                .map(|r| format!("answers #{r}"))
                .unwrap_or_default(),
        };
        writeln!(
            self.out,
            "{:<23}  {:>8}  {:<14}  {:<20}  {:<14}  {:<22}  {:<10}  {answer}",
            time(e["time_ns"].as_u64().unwrap_or(0)),
            e["index"],
            clip(&s("/kind"), 14),
            clip(&s("/caller/name"), 20),
            clip(&s("/method"), 14),
            clip(&s("/target"), 22),
            s("/detail/policy/decision")
        )
    }

    /// Flushes what is left.
    ///
    /// # Errors
    /// Writing fails (not a closed pipe).
    pub fn done(mut self) -> anyhow::Result<()> {
        match self.out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_start_like_formulas_are_defused() {
        assert_eq!(
            cell("=HYPERLINK(\"http://evil\")"),
            "'=HYPERLINK(\"http://evil\")"
        );
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("echo"), "echo");
        assert_eq!(cell(""), "");
    }

    #[test]
    fn a_row_has_every_column_and_quotes_what_needs_it() {
        let e = serde_json::json!({
            "index": 7, "kind": "request", "time_ns": 1_700_000_000_000_000_000u64,
            "endpoint": "demo", "method": "tools/call", "target": "=cmd|' /C calc'!A0",
            "caller": {"name": "acme/api@refs/heads/main", "claims": {"repository": "acme/api", "run_id": "42"}},
            "detail": {"policy": {"decision": "allow", "policies": ["p1"]}, "mask": [{"path": "$.a", "by": "hmac"}, {"path": "$.b", "by": "redact"}]},
            "answered_by": {"index": 8, "duration_ms": 1.5}, "leaf": "ab"
        });
        let row = csv_row(&e);
        assert_eq!(row.len(), CSV_COLUMNS.len());
        assert_eq!(row[7], "'=cmd|' /C calc'!A0");
        assert_eq!(row[11], "acme/api");
        assert_eq!(row[14], "[\"p1\"]");
        assert_eq!(row[15], "2");
        assert_eq!(row[16], "8");
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&row).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert!(text.contains("\"[\"\"p1\"\"]\""), "{text}");
    }
}
