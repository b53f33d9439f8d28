//! `custody-bench explorer`, second half: the web page's server time on the same log. A
//! gateway is started on the benchmark's data directory; a person signs in at `/ui/login` with
//! a static auditor token; each page is fetched `samples` times over loopback (one connection
//! each) and its time to the last byte is reported (p50, p95, max). Each page read also appends
//! its `log_read` entry, as in production.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// One request: status, `set-cookie` and `location`, and the body's length.
async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<String>,
) -> anyhow::Result<(u16, Option<String>, usize)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(form.unwrap_or_default())))?)
        .await?;
    let status = resp.status().as_u16();
    let set = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, set, body.len()))
}

/// Starts a gateway on `dir`, signs in, and times the pages; returns the worst p95 (ms).
pub async fn run(
    dir: &std::path::Path,
    samples: u32,
    repo: impl Fn(u64) -> String,
    runs: &[String],
    entries: u64,
) -> anyhow::Result<f64> {
    let token = custody::identity::new_static_token();
    let sha: String = custody::identity::token_hash(&token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[audit]\ndurability = \"fsync\"\n\
         [[auth.static]]\nname = \"ines\"\nsha256 = \"{sha}\"\n[explorer]\nauditors = [\"ines\"]\n\
         [endpoints.ci.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
        dir.display()
    );
    let config =
        custody::config::Config::parse(&text, "bench.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let running = custody::http::start(&config).await?;
    let addr = running.addr;
    eprintln!(
        "gateway started on the log in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (status, cookie, _) = fetch(
        addr,
        "POST",
        "/ui/login",
        None,
        Some(format!("token={token}&next=%2Fui%2Fruns")),
    )
    .await?;
    anyhow::ensure!(status == 303, "signing in answered {status}");
    let cookie = cookie.ok_or_else(|| anyhow::anyhow!("signing in set no cookie"))?;
    // The index catches up with the gateway's own entries before the first page.
    fetch(addr, "GET", "/ui/runs", Some(&cookie), None).await?;

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m.max(1)
    };
    println!(
        "page (server time to the last byte, over loopback, signed in as an auditor)   p50 ms   p95 ms   max ms"
    );
    let mut worst: f64 = 0.0;
    type Path<'a> = Box<dyn FnMut(&mut dyn FnMut(u64) -> u64) -> String + 'a>;
    let pages: Vec<(&str, Path<'_>)> = vec![
        (
            "/ui/runs (the latest 100 runs)",
            Box::new(|_| "/ui/runs".into()),
        ),
        (
            "/ui/runs?repository=R",
            Box::new(|r| format!("/ui/runs?repository={}", repo(r(50)).replace('/', "%2F"))),
        ),
        (
            "/ui/runs/ID (a run's timeline, 200 entries)",
            Box::new(|r| {
                let i = usize::try_from(r(runs.len() as u64)).unwrap_or(0);
                format!("/ui/runs/{}", runs.get(i).map_or("", String::as_str))
            }),
        ),
        (
            "/ui/entries?repository=R",
            Box::new(|r| format!("/ui/entries?repository={}", repo(r(50)).replace('/', "%2F"))),
        ),
        (
            "/ui/entries?tool=T&decision=deny",
            Box::new(|r| format!("/ui/entries?tool=deploy&decision=deny&since={}d", 1 + r(6))),
        ),
        (
            "/ui/entries/N (an entry with its receipt)",
            Box::new(|r| format!("/ui/entries/{}", r(entries))),
        ),
        ("/ui/approvals", Box::new(|_| "/ui/approvals".into())),
        ("/ui/health", Box::new(|_| "/ui/health".into())),
    ];
    for (name, mut make) in pages {
        let mut times = Vec::new();
        for _ in 0..samples {
            let path = make(&mut next);
            let t = Instant::now();
            let (status, _, len) = fetch(addr, "GET", &path, Some(&cookie), None).await?;
            times.push(t.elapsed());
            anyhow::ensure!(status == 200, "GET {path}: {status}");
            std::hint::black_box(len);
        }
        let (p50, p95, max) = crate::explorer::stats(times);
        worst = worst.max(p95);
        println!("{name:<78} {p50:>7.2}  {p95:>7.2}  {max:>7.2}");
    }
    running.shutdown().await;
    Ok(worst)
}
