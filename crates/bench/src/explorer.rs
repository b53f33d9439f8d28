//! `custody-bench explorer`: fills a log with CI traffic (requests and their answers from
//! 5,000 runs of 50 repositories, ten tools, a denial every 97th call, masking every fifth),
//! builds the search index, and times filtered queries as the API runs them (index query and
//! the page's entries read from the log): p50, p95, max.

use std::time::{Duration, Instant};

use bytes::Bytes;
use custody::audit::{Direction, Draft, Kind, now_ns};
use custody::explorer::{Filter, Open, Order, Scope, query, view};
use serde_json::json;

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const TOOLS: [&str; 10] = [
    "echo", "add", "deploy", "search", "read", "write", "list", "query", "build", "test",
];
/// Entries of one run.
const PER_RUN: u64 = 200;

fn repo(run: u64) -> String {
    format!("acme/service-{}", run % 50)
}

fn caller(run: u64) -> String {
    let r = repo(run);
    json!({
        "kind": "oidc", "verified": true, "issuer": ISSUER,
        "subject": format!("repo:{r}:ref:refs/heads/main"), "name": format!("{r}@refs/heads/main"),
        "claims": { "repository": r, "ref": "refs/heads/main", "workflow": "ci",
                    "run_id": (100_000 + run).to_string(), "run_attempt": "1",
                    "actor": format!("dev{}", run % 17) },
    })
    .to_string()
}

fn draft(size: usize, n: u64) -> Draft {
    let run = n / PER_RUN;
    let call = n / 2;
    let tool = TOOLS[usize::try_from(call % 10).unwrap_or(0)];
    let denied = call.is_multiple_of(97);
    let pad = "x".repeat(size.saturating_sub(160));
    let (kind, direction, request, detail, message) = if n.is_multiple_of(2) {
        let mut detail = json!({ "policy": { "decision": if denied { "deny" } else { "allow" },
                                              "policies": [if denied { "no" } else { "ci" }] } });
        if call.is_multiple_of(5) {
            detail["mask"] = json!([{ "path": "$.params.arguments.text", "by": "audit" }]);
        }
        let message = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{n},\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\",\"arguments\":{{\"text\":\"{pad}\"}}}}}}"
        );
        let kind = if denied {
            Kind::Rejected
        } else {
            Kind::Request
        };
        (
            kind,
            Direction::ClientToUpstream,
            None,
            detail.to_string(),
            message,
        )
    } else {
        let message = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"content\":[]}}}}",
            n - 1
        );
        let kind = if call.is_multiple_of(89) {
            Kind::Error
        } else {
            Kind::Response
        };
        (
            kind,
            Direction::UpstreamToClient,
            Some(n - 1),
            String::new(),
            message,
        )
    };
    Draft {
        kind,
        direction,
        time_ns: now_ns(),
        endpoint: "ci".into(),
        session: None,
        id: Some((n - n % 2).to_string()),
        method: Some("tools/call".into()),
        target: Some(tool.into()),
        caller: if n.is_multiple_of(2) {
            caller(run).into()
        } else {
            custody::audit::GATEWAY.into()
        },
        request,
        detail,
        message: Bytes::from(message),
        mark: None,
        headers: None,
        erase: None,
    }
}

/// p50, p95 and max of `samples`, in milliseconds.
pub fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.95), at(1.0))
}

pub async fn run(entries: u64, size: usize, samples: u32) -> anyhow::Result<()> {
    eprintln!("filling a log of {entries} entries ({size}-byte payloads) with CI traffic…");
    let started = Instant::now();
    let dir = crate::audit::fill_with(entries, size, draft).await?;
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let mut open = Open::new(dir.path(), &custody::store::Location::dir(dir.path()))?;
    let indexed = open.index.catch_up(&open.log)?;
    let build = started.elapsed();
    let bytes = std::fs::metadata(dir.path().join(custody::explorer::index::FILE))?.len();
    println!(
        "custody explorer benchmark: {entries} entries; index built in {:.1} s ({indexed} entries, {:.0} entries/s, {} MiB)",
        build.as_secs_f64(),
        indexed as f64 / build.as_secs_f64(),
        bytes >> 20
    );
    let runs = (entries / PER_RUN).max(1);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m.max(1)
    };
    type Make = Box<dyn FnMut(&mut dyn FnMut(u64) -> u64) -> Filter>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "repository=R",
            Box::new(|r| Filter {
                repository: Some(repo(r(50))),
                ..Filter::default()
            }),
        ),
        (
            "run=ID",
            Box::new(move |r| Filter {
                run: Some((100_000 + r(runs)).to_string()),
                ..Filter::default()
            }),
        ),
        (
            "tool=T&decision=deny",
            Box::new(|r| Filter {
                tool: Some(TOOLS[usize::try_from(r(10)).unwrap_or(0)].into()),
                decision: Some("deny".into()),
                ..Filter::default()
            }),
        ),
        (
            "repository=R&masked=true",
            Box::new(|r| Filter {
                repository: Some(repo(r(50))),
                masked: Some(true),
                ..Filter::default()
            }),
        ),
        (
            "actor=A&tool=T",
            Box::new(|r| Filter {
                actor: Some(format!("dev{}", r(17))),
                tool: Some(TOOLS[usize::try_from(r(10)).unwrap_or(0)].into()),
                ..Filter::default()
            }),
        ),
        (
            "errors=true",
            Box::new(|_| Filter {
                errors: Some(true),
                ..Filter::default()
            }),
        ),
        (
            "since=10m&kind=rejected",
            Box::new(|_| Filter {
                since: Some("10m".into()),
                kind: Some("rejected".into()),
                ..Filter::default()
            }),
        ),
    ];
    println!(
        "query (page of 100 entries, newest first, entries read from the log)   p50 ms   p95 ms   max ms"
    );
    let mut worst: f64 = 0.0;
    for (name, mut make) in cases {
        let mut times = Vec::new();
        for _ in 0..samples {
            let filter = make(&mut next);
            let t = Instant::now();
            let page = query::entries(&open.index, &Scope::All, &filter, Order::Newest, None, 100)?;
            let shown = view::page(&open, &page.indices, true)?;
            times.push(t.elapsed());
            std::hint::black_box(shown);
        }
        let (p50, p95, max) = stats(times);
        worst = worst.max(p95);
        println!("{name:<72} {p50:>7.2}  {p95:>7.2}  {max:>7.2}");
    }
    let mut times = Vec::new();
    for _ in 0..samples {
        let run = (100_000 + next(runs)).to_string();
        let t = Instant::now();
        let indices = query::run_entries(&open.index, &Scope::All, &run, 10_000)?;
        let calls = view::timeline(&open.log, &indices, true)?;
        times.push(t.elapsed());
        std::hint::black_box(calls);
    }
    let (p50, p95, max) = stats(times);
    worst = worst.max(p95);
    println!(
        "{:<72} {p50:>7.2}  {p95:>7.2}  {max:>7.2}",
        format!("timeline of a run ({PER_RUN} entries)")
    );
    let mut times = Vec::new();
    for _ in 0..samples {
        let filter = Filter {
            repository: Some(repo(next(50))),
            ..Filter::default()
        };
        let t = Instant::now();
        std::hint::black_box(query::runs(&open.index, &Scope::All, &filter, 100)?);
        times.push(t.elapsed());
    }
    let (p50, p95, max) = stats(times);
    worst = worst.max(p95);
    println!(
        "{:<72} {p50:>7.2}  {p95:>7.2}  {max:>7.2}",
        "runs of one repository"
    );
    let t = Instant::now();
    let all = query::runs(&open.index, &Scope::All, &Filter::default(), 100)?;
    println!(
        "{:<72} {:>7.2}  (one sample: the per-run summary)",
        "runs, unfiltered (latest 100)",
        t.elapsed().as_secs_f64() * 1000.0
    );
    std::hint::black_box(all);
    let scoped = Scope::Run {
        issuer: Some(ISSUER.into()),
        repository: repo(7),
        run_id: "100007".into(),
    };
    let t = Instant::now();
    let page = query::entries(
        &open.index,
        &scoped,
        &Filter::default(),
        Order::Newest,
        None,
        100,
    )?;
    println!(
        "{:<72} {:>7.2}  (one sample)",
        "a CI principal's own entries",
        t.elapsed().as_secs_f64() * 1000.0
    );
    std::hint::black_box(page);
    println!("worst filtered p95: {worst:.2} ms (target 100 ms)");
    let run_ids: Vec<String> = query::runs(&open.index, &Scope::All, &Filter::default(), 100)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    drop(open);
    let pages = crate::explorer_pages::run(dir.path(), samples, repo, &run_ids, entries).await?;
    println!("worst page p95: {pages:.2} ms (target 200 ms)");
    Ok(())
}
