//! The web page at `/ui/` against a real gateway: sign-in (a token, and an OIDC provider with
//! PKCE), pages that need it, a strict CSP, hostile payloads escaped, a CI job kept to its own
//! run, approvals decided from the page (with its form token and a reason), reads recorded.
//! The browser half (the in-browser proof check, clicking through) is `.ci/interop/ui.sh`.

mod common;

use std::time::Duration;

use common::*;
use custody::identity::{new_static_token, token_hash};
use custody_test_issuer::TestIssuer;
use serde_json::{Value, json};
use tlog::entry::Kind;

const POLICIES: &str = r#"
@id("everything")
permit(principal, action, resource);

@id("deploy-needs-approval")
@approval("required")
permit(principal, action == Action::"tools/call", resource)
when { resource.name == "deploy" };
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct World {
    gw: Gateway,
    /// An auditor and approver (`ines`).
    ines: String,
    /// Another approver (`bob`), no auditor.
    bob: String,
    issuer: TestIssuer,
    _policy: tempfile::TempDir,
}

/// A browser: a cookie jar and no automatic redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: Default::default(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, b: reqwest::RequestBuilder) -> Page {
        let resp = b
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: resp.status().as_u16(),
            location: resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string()),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let b = self.http.get(self.url(path));
        self.send(b).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let b = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(b).await
    }

    async fn sign_in(&mut self, token: &str) {
        let p = self
            .post("/ui/login", &[("token", token), ("next", "/ui/runs")])
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location.as_deref(), Some("/ui/runs"));
        assert!(self.cookies.contains_key("custody_ui"));
    }
}

/// The value of `name="csrf"` in a page.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    body[at..].split('"').next().unwrap().to_string()
}

async fn world(extra: &str) -> World {
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.cedar");
    std::fs::write(&policy, POLICIES).unwrap();
    let (ines, bob) = (new_static_token(), new_static_token());
    let gw = Gateway::start(
        "",
        &format!(
            "[[auth.oidc]]\npreset = \"github-actions\"\nissuer = \"{iss}\"\naudiences = [\"custody\"]\n\
             [[auth.static]]\nname = \"ines\"\nsha256 = \"{}\"\n\
             [[auth.static]]\nname = \"bob\"\nsha256 = \"{}\"\n\
             [policy]\nfiles = [\"{}\"]\n[explorer]\nauditors = [\"ines\"]\n\
             [approvals]\napprovers = [\"ines\", \"bob\"]\nkeepalive = \"200ms\"\n{extra}\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            hex(&token_hash(&ines)),
            hex(&token_hash(&bob)),
            policy.display(),
            custody_bin(),
            iss = issuer.url,
        ),
    )
    .await;
    World {
        gw,
        ines,
        bob,
        issuer,
        _policy: dir,
    }
}

fn job(w: &World, repo: &str, run: &str) -> String {
    w.issuer.token(
        "rsa-1",
        &w.issuer.claims(
            &format!("repo:{repo}:ref:refs/heads/main"),
            &json!({"repository": repo, "repository_owner": "acme", "ref": "refs/heads/main",
                    "run_id": run, "run_attempt": "1", "workflow": "ci", "actor": "octocat"}),
        ),
    )
}

async fn call(w: &World, token: &str, tool: &str, args: Value) -> Answer {
    w.gw.client("demo")
        .with_token(token)
        .stateless()
        .call("tools/call", json!({"name": tool, "arguments": args}))
        .await
}

fn base(w: &World) -> String {
    format!("http://{}", w.gw.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_sign_in_and_carry_a_strict_policy() {
    let w = world("").await;
    let mut b = Browser::new(&base(&w));
    // No session: to the sign-in page, remembering where the browser was going.
    let p = b.get("/ui/runs?repository=acme%2Fapi").await;
    assert_eq!(p.status, 303);
    assert_eq!(
        p.location.as_deref(),
        Some("/ui/login?next=%2Fui%2Fruns%3Frepository%3Dacme%252Fapi")
    );
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(p.headers["x-frame-options"], "DENY");
    assert_eq!(p.headers["cache-control"], "no-store");

    // A token the gateway does not accept is refused with the reason, and no session is made.
    let p = b
        .post(
            "/ui/login",
            &[("token", "cst_not-a-token"), ("next", "/ui/runs")],
        )
        .await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.body.contains("Not signed in: unauthorized"), "{}", p.body);
    assert!(!b.cookies.contains_key("custody_ui"));

    // `next` never leads off the site.
    let p = b
        .post(
            "/ui/login",
            &[("token", &w.ines), ("next", "https://evil.example/")],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/ui/runs"));
    let p = b
        .post(
            "/ui/login",
            &[("token", &w.ines), ("next", "//evil.example/ui/")],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/ui/runs"));

    for path in ["/ui/runs", "/ui/entries", "/ui/approvals", "/ui/health"] {
        let p = b.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(
            p.body.contains("Signed in as <strong>ines</strong>"),
            "{path}"
        );
        assert!(!p.body.contains(&w.ines), "{path} shows the token");
    }
    // Assets are built in; no page refers to anything off the site.
    let p = b.get("/ui/assets/ui.js").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("crypto.subtle.verify"));
    assert_eq!(b.get("/ui/assets/nope.js").await.status, 404);
    let health = b.get("/ui/health").await.body;
    assert!(
        !health.contains("http://") && !health.contains("https://"),
        "{health}"
    );
    assert!(
        health.contains("Verifier key") && health.contains("custody.local/"),
        "{health}"
    );

    // Signing out needs the page's form token, and ends the session.
    let token = csrf(&b.get("/ui/runs").await.body);
    let p = b.post("/ui/logout", &[("csrf", &token)]).await;
    assert_eq!(p.status, 303);
    assert_eq!(b.get("/ui/runs").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_shown_escaped_never_as_markup() {
    let w = world("").await;
    let ci = job(&w, "acme/api", "4711");
    let evil = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>";
    let a = call(&w, &ci, "echo", json!({"text": evil})).await;
    assert!(a.response().get("result").is_some(), "{:?}", a.response());
    let mut b = Browser::new(&base(&w));
    b.sign_in(&w.ines).await;
    let runs = b.get("/ui/runs").await;
    assert!(runs.body.contains("4711"), "{}", runs.body);
    let run_id = runs
        .body
        .split("href=\"/ui/runs/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let timeline = b.get(&format!("/ui/runs/{run_id}")).await;
    assert_eq!(timeline.status, 200, "{}", timeline.body);
    let page = &timeline.body;
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    // The request's entry page: escaped too, with its receipt and bytes for the browser check.
    let entries = common::entries(w.gw.data.path());
    let req = entries
        .iter()
        .find(|e| e.kind == Kind::Request && e.target == "echo")
        .unwrap();
    // Wait for a checkpoint to cover it.
    let mut page = b.get(&format!("/ui/entries/{}", req.index)).await;
    for _ in 0..50 {
        if page.body.contains("c2sp.org/tlog-proof@v1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = b.get(&format!("/ui/entries/{}", req.index)).await;
    }
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(
        page.body.contains("c2sp.org/tlog-proof@v1"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"entry-bytes\""));
    // An auditor's page carries the payload and its opening, for the browser to check
    // against the entry's commitment.
    assert!(
        page.body
            .contains("class=\"payload-bytes\" hidden data-slot=\"1\" data-opening=\""),
        "{}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_job_signed_in_sees_its_own_run_and_is_refused_another() {
    let w = world("").await;
    let (api, web) = (job(&w, "acme/api", "4711"), job(&w, "acme/web", "99"));
    call(&w, &api, "echo", json!({"text": "api"})).await;
    call(&w, &web, "echo", json!({"text": "web"})).await;
    let mut b = Browser::new(&base(&w));
    b.sign_in(&api).await;
    let runs = b.get("/ui/runs").await.body;
    assert!(
        runs.contains("acme/api") && !runs.contains("acme/web"),
        "{runs}"
    );
    // Another run's timeline, asked for by name: 403, as a page.
    let mut auditor = Browser::new(&base(&w));
    auditor.sign_in(&w.ines).await;
    let all = auditor.get("/ui/runs").await.body;
    let web_run = all
        .split("<tr>")
        .find(|row| row.contains("<td>acme/web</td>"))
        .and_then(|row| row.split("href=\"/ui/runs/").nth(1))
        .map(|s| s.split('"').next().unwrap().to_string())
        .expect("the auditor sees acme/web's run");
    let p = b.get(&format!("/ui/runs/{web_run}")).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("may not read run"), "{}", p.body);
    // The job's own payloads are withheld.
    let own = runs
        .split("href=\"/ui/runs/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let t = b.get(&format!("/ui/runs/{own}")).await.body;
    assert!(t.contains("The message is withheld"), "{t}");
    // Its entry page: the entry's bytes (a version-2 entry holds no payload) and no payload.
    let idx = t
        .split("href=\"/ui/entries/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let e = b.get(&format!("/ui/entries/{idx}")).await.body;
    assert!(
        !e.contains("payload-bytes") && !e.contains("\"api\""),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_decides_on_the_page_with_its_form_token_and_a_reason() {
    let w = world("").await;
    let ci = job(&w, "acme/api", "4711");
    let client = w.gw.client("demo").with_token(&ci).stateless();
    let held = tokio::spawn(async move {
        client
            .call(
                "tools/call",
                json!({"name": "deploy", "arguments": {"service": "api", "version": "1.2.3", "environment": "staging"}}),
            )
            .await
    });
    let mut b = Browser::new(&base(&w));
    b.sign_in(&w.bob).await;
    let mut page = b.get("/ui/approvals").await.body;
    for _ in 0..100 {
        if page.contains("/approve\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = b.get("/ui/approvals").await.body;
    }
    let action = page
        .split("action=\"")
        .map(|s| s.split('"').next().unwrap())
        .find(|a| a.ends_with("/approve"))
        .unwrap_or_else(|| panic!("no approve form in {page}"))
        .to_string();
    assert!(page.contains("1.2.3"), "the arguments are shown: {page}");
    let token = csrf(&page);
    let digest = page
        .split("name=\"arguments_sha256\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    // Another site's form (no or a wrong form token) is refused.
    let p = b
        .post(
            &action,
            &[
                ("csrf", "forged"),
                ("reason", "ok"),
                ("arguments_sha256", &digest),
            ],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("form token does not match"), "{}", p.body);
    // A reason is required.
    let p = b
        .post(
            &action,
            &[
                ("csrf", &token),
                ("reason", "  "),
                ("arguments_sha256", &digest),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("give a reason"), "{}", p.body);
    // Arguments other than those shown: refused.
    let p = b
        .post(
            &action,
            &[
                ("csrf", &token),
                ("reason", "ok"),
                ("arguments_sha256", &"0".repeat(64)),
            ],
        )
        .await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(!held.is_finished());
    let p = b
        .post(
            &action,
            &[
                ("csrf", &token),
                ("reason", "release 1.2.3"),
                ("arguments_sha256", &digest),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(p.location.unwrap().starts_with("/ui/approvals?done="));
    let answer = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .unwrap()
        .unwrap();
    let result = answer.response()["result"].to_string();
    assert!(
        result.contains("deployed api 1.2.3"),
        "{:?}",
        answer.response()
    );
    // The decision is in the log with bob's reason.
    let entries = common::entries(w.gw.data.path());
    let granted = entries
        .iter()
        .find(|e| e.kind == Kind::ApprovalGranted)
        .unwrap();
    let d: Value = serde_json::from_str(&granted.detail).unwrap();
    assert_eq!(d["reason"], "release 1.2.3", "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_the_page_are_recorded_as_the_signed_in_person() {
    let w = world("").await;
    let mut b = Browser::new(&base(&w));
    b.sign_in(&w.ines).await;
    assert_eq!(b.get("/ui/entries?kind=request").await.status, 200);
    let entries = common::entries(w.gw.data.path());
    let read = entries
        .iter()
        .rev()
        .find(|e| e.kind == Kind::LogRead)
        .expect("a log_read entry");
    let caller: Value = serde_json::from_str(&read.caller).unwrap();
    assert_eq!(caller["name"], "ines");
    let d: Value = serde_json::from_str(&read.detail).unwrap();
    assert_eq!(d["route"], "/api/v1/entries");
    assert_eq!(d["filters"], json!({"kind": "request"}), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_the_oidc_provider_using_pkce() {
    // A gateway whose page signs people in with the provider.
    let w = {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.cedar");
        std::fs::write(&policy, POLICIES).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [[auth.oidc]]\nissuer = \"{iss}\"\naudiences = [\"custody-ui\"]\nname = \"{{email}}\"\nclaims = [\"email\"]\n\
             [policy]\nfiles = [\"{}\"]\n[explorer]\nauditors = [\"alice@acme.example\"]\n\
             [ui.oidc]\nissuer = \"{iss}\"\nclient_id = \"custody-ui\"\n\
             [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
            data.path().display(),
            policy.display(),
            custody_bin(),
            iss = issuer.url,
        );
        let config =
            custody::config::Config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let running = custody::http::start(&config).await.unwrap();
        World {
            gw: Gateway {
                addr: running.addr,
                running: Some(running),
                data,
            },
            ines: String::new(),
            bob: String::new(),
            issuer,
            _policy: dir,
        }
    };
    w.issuer
        .sign_in_as("alice", json!({"email": "alice@acme.example"}));
    let mut b = Browser::new(&base(&w));
    let login = b.get("/ui/login").await.body;
    assert!(login.contains("/ui/auth/oidc"), "{login}");
    // To the provider, with a PKCE challenge, a state and a nonce.
    let p = b.get("/ui/auth/oidc?next=%2Fui%2Fhealth").await;
    assert_eq!(p.status, 303, "{}", p.body);
    let to = p.location.unwrap();
    assert!(
        to.starts_with(&format!("{}/authorize?", w.issuer.url)),
        "{to}"
    );
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=custody-ui",
    ] {
        assert!(to.contains(part), "{to}");
    }
    // The provider sends the browser back with a code.
    let back = b.get(&to).await.location.unwrap();
    assert!(back.contains("/ui/auth/callback?code="), "{back}");
    // From another browser (no binding cookie), the callback is refused.
    let mut other = Browser::new(&base(&w));
    let p = other.get(&back).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(
        p.body.contains("another browser") || p.body.contains("unknown"),
        "{}",
        p.body
    );

    // A fresh sign-in, completed in this browser.
    let to = b
        .get("/ui/auth/oidc?next=%2Fui%2Fhealth")
        .await
        .location
        .unwrap();
    let back = b.get(&to).await.location.unwrap();
    let p = b.get(&back).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/ui/health"));
    let page = b.get("/ui/health").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("alice@acme.example"), "{}", page.body);
    // The callback is single use.
    let p = other.get(&back).await;
    assert_eq!(p.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_posted_from_another_site_are_refused_and_notes_cannot_be_forged() {
    let w = world("").await;
    let mut b = Browser::new(&base(&w));
    // A sign-in form on another site: refused, no session.
    let body = format!("token={}&next=%2Fui%2Fruns", w.ines);
    let resp = b
        .http
        .post(format!("{}/ui/login", base(&w)))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("set-cookie").is_none());
    // An opaque origin (a sandboxed frame, a data: page) is not this site either.
    let resp = b
        .http
        .post(format!("{}/ui/login", base(&w)))
        .header("origin", "null")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", w.ines))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // From the gateway's own page: accepted.
    b.sign_in(&w.ines).await;
    // The note after a decision shows only an approval id and a state.
    let p = b
        .get("/ui/approvals?done=Call%20the%20helpdesk%20at%20555-0100")
        .await;
    assert!(!p.body.contains("helpdesk"), "{}", p.body);
    let p = b
        .get("/ui/approvals?done=Approval%20abc123%20is%20now%20granted.")
        .await;
    assert!(
        p.body.contains("Approval abc123 is now granted."),
        "{}",
        p.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_session_cookie_is_a_host_cookie() {
    let ines = new_static_token();
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npublic_url = \"https://custody.acme.example\"\n\
         [[auth.static]]\nname = \"ines\"\nsha256 = \"{}\"\n[explorer]\nauditors = [\"ines\"]\n\
         [endpoints.demo.upstream]\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
        data.path().display(),
        hex(&token_hash(&ines)),
        custody_bin()
    );
    let config = custody::config::Config::parse(&text, "t.toml").unwrap();
    let running = custody::http::start(&config).await.unwrap();
    let gw = Gateway {
        addr: running.addr,
        running: Some(running),
        data,
    };
    let mut b = Browser::new(&format!("http://{}", gw.addr));
    let resp = b
        .http
        .post(format!("http://{}/ui/login", gw.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ines}"))
        .send()
        .await
        .unwrap();
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.starts_with("__Host-custody_ui=") && set.contains("Path=/;") && set.contains("Secure"),
        "{set}"
    );
    // The cookie under its plain name is not this site's session.
    let value = set
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    b.cookies.insert("custody_ui".into(), value.clone());
    assert_eq!(b.get("/ui/runs").await.status, 303);
    b.cookies.clear();
    b.cookies.insert("__Host-custody_ui".into(), value);
    assert_eq!(b.get("/ui/runs").await.status, 200);
    gw.shutdown().await;
}
