//! `custody-bench mask`: masking a 64 KiB tool result with every detector on, for both copies.

use std::time::Instant;

use custody::mask::{Action, MaskKey, Masker, PathRule, RuleSet};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use crate::load::percentile;

/// A tool result of about `size` bytes: rows of customer records as structured content and
/// again as JSON text, with a secret every few rows.
fn result(size: usize) -> Value {
    let mut rows = Vec::new();
    let mut i = 0;
    loop {
        let note = match i % 8 {
            0 => "rotated key AKIAIOSFODNN7EXAMPLE yesterday".to_string(),
            3 => "card on file 4111 1111 1111 1111".to_string(),
            5 => "password=correct-horse-battery".to_string(),
            _ => format!(
                "customer since {} with plan enterprise and region eu-west-1",
                2000 + i % 20
            ),
        };
        rows.push(json!({
            "id": format!("c-{i}"), "name": format!("Customer {i}"),
            "email": format!("customer{i}@example.com"), "note": note,
        }));
        i += 1;
        let text = serde_json::to_string(&rows).unwrap_or_default();
        if text.len() * 2 >= size {
            return json!({"jsonrpc": "2.0", "id": 1, "result": {
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"rows": rows},
            }});
        }
    }
}

pub fn run(size: usize, rounds: usize) -> anyhow::Result<()> {
    let msg = result(size);
    let bytes = msg.to_string().len();
    let rule = |p: &str, action| -> anyhow::Result<PathRule> {
        Ok(PathRule {
            source: p.into(),
            path: JsonPath::parse(p)?,
            action,
        })
    };
    let key = Some(std::sync::Arc::new(MaskKey::from_secret([9; 32])));
    let detectors_only = Masker {
        client: RuleSet {
            paths: Vec::new(),
            headers: Vec::new(),
            detectors: [true; 8],
        },
        audit: RuleSet {
            paths: Vec::new(),
            headers: Vec::new(),
            detectors: [true; 8],
        },
        credentials: vec!["sk-live-upstream-credential-0001".to_string()].into(),
        key: key.clone(),
        metrics: None,
    };
    let with_rules = Masker {
        client: RuleSet {
            paths: vec![rule("$..email", Action::Partial(4))?],
            headers: Vec::new(),
            detectors: [true; 8],
        },
        audit: RuleSet {
            paths: vec![rule("$..name", Action::Hmac)?],
            headers: Vec::new(),
            detectors: [true; 8],
        },
        credentials: vec!["sk-live-upstream-credential-0001".to_string()].into(),
        key,
        metrics: None,
    };
    println!(
        "custody masking benchmark: a {} KiB tool result (rows of customer records as structured content and again as JSON text), both copies",
        bytes / 1024
    );
    println!(
        "command: cargo run --release -p custody-bench -- mask --size {size} --rounds {rounds}"
    );
    for (name, masker) in [
        ("every detector on, credential scrubbing", &detectors_only),
        (
            "the same plus a partial rule on every email and an hmac rule on every name",
            &with_rules,
        ),
    ] {
        measure(name, masker, &msg, bytes, rounds)?;
    }
    Ok(())
}

fn measure(
    name: &str,
    masker: &Masker,
    msg: &Value,
    bytes: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let msg = msg.clone();
    let first = masker.copies(&msg);
    anyhow::ensure!(!first.marks.is_empty(), "nothing was masked");
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(masker.copies(&msg));
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let p50 = percentile(&times, 0.5);
    println!(
        "  {name}: {} masks; p50 {:.2} ms, p99 {:.2} ms; {:.0} MB/s",
        first.marks.len(),
        p50.as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        bytes as f64 / p50.as_secs_f64() / 1e6
    );
    Ok(())
}
