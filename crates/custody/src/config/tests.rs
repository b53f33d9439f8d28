use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
session_idle_timeout = "5m"

[auth]
anonymous = true

[endpoints.everything.upstream]
transport = "http"
url = "http://127.0.0.1:3001/mcp"
headers = { "X-Api-Key" = "k" }
request_timeout = "30s"

[endpoints.fs]
description = "files"
[endpoints.fs.upstream]
transport = "stdio"
command = "node"
args = ["server.js", "/tmp"]
pool_size = 3
"#;

fn err(text: &str) -> ConfigError {
    Config::parse(text, "custody.toml").expect_err("config should be rejected")
}

#[test]
fn parses_a_full_file() {
    let c = Config::parse(GOOD, "custody.toml").unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.server.session_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.server.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
    assert_eq!(c.endpoints.len(), 2);
    let UpstreamConfig::Http(h) = &c.endpoints[0].upstream else {
        panic!("everything is http")
    };
    assert_eq!(h.url, "http://127.0.0.1:3001/mcp");
    assert_eq!(h.headers[0].0, "x-api-key");
    assert_eq!(h.request_timeout, Duration::from_secs(30));
    let UpstreamConfig::Stdio(s) = &c.endpoints[1].upstream else {
        panic!("fs is stdio")
    };
    assert_eq!(s.args, ["server.js", "/tmp"]);
    assert_eq!(s.pool_size, 3);
    assert!(!s.inherit_env);
    assert_eq!(s.input_timeout, Duration::from_secs(60));
}

#[test]
fn unknown_top_level_key_names_the_key_and_line() {
    let e = err("[servr]\nlisten = \"127.0.0.1:1\"\n");
    let text = e.to_string();
    assert!(text.starts_with("custody.toml:1:"), "{text}");
    assert!(text.contains("unknown field `servr`"), "{text}");
}

#[test]
fn unknown_nested_key_names_the_path() {
    let e = err(
        "[endpoints.a.upstream]\ntransport = \"http\"\nurl = \"http://x/mcp\"\ntimeout = \"1s\"\n",
    );
    assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    assert!(e.to_string().contains("unknown field `timeout`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("endpoints.a.upstream"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err(
        "[server]\nmax_json_depth = \"deep\"\n[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n",
    );
    assert_eq!(e.key.as_deref(), Some("server.max_json_depth"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
}

#[test]
fn unknown_transport_is_rejected() {
    let e = err("[endpoints.a.upstream]\ntransport = \"grpc\"\n");
    assert!(e.to_string().contains("unknown variant `grpc`"), "{e}");
}

#[test]
fn bad_url_names_endpoint_and_key() {
    let e = err("[endpoints.api.upstream]\ntransport = \"http\"\nurl = \"ftp://x/y\"\n");
    assert_eq!(e.key.as_deref(), Some("endpoints.api.upstream.url"));
    assert_eq!(e.position, Some((3, 1)));
    assert!(e.message.contains("http:// or https://"), "{e}");
}

#[test]
fn bad_listen_address() {
    let e = err(
        "[server]\nlisten = \"localhost\"\n[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n",
    );
    assert_eq!(e.key.as_deref(), Some("server.listen"));
    assert!(e.message.contains("host:port"), "{e}");
}

#[test]
fn non_loopback_listen_needs_allowed_hosts() {
    let e = err(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n",
    );
    assert_eq!(e.key.as_deref(), Some("server.allowed_hosts"));
}

#[test]
fn no_endpoints_is_an_error() {
    let e = err("[server]\nlisten = \"127.0.0.1:1\"\n");
    assert!(e.message.contains("no endpoints"), "{e}");
}

#[test]
fn endpoint_name_must_be_path_safe() {
    let e = err("[endpoints.\"a/b\".upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n");
    assert_eq!(e.key.as_deref(), Some("endpoints.a/b"));
}

#[test]
fn reserved_and_invalid_headers() {
    let e = err(
        "[endpoints.a.upstream]\ntransport = \"http\"\nurl = \"http://h/mcp\"\nheaders = { \"Mcp-Session-Id\" = \"x\" }\n",
    );
    assert!(e.message.contains("set by the gateway"), "{e}");
    let e = err(
        "[endpoints.a.upstream]\ntransport = \"http\"\nurl = \"http://h/mcp\"\nheaders = { \"bad header\" = \"x\" }\n",
    );
    assert!(e.message.contains("not a header name"), "{e}");
}

#[test]
fn pool_size_bounds() {
    let e = err("[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\npool_size = 0\n");
    assert_eq!(e.key.as_deref(), Some("endpoints.a.upstream.pool_size"));
}

#[test]
fn input_timeout_bounds() {
    let stdio = "[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n";
    for bad in ["500ms", "2h"] {
        let e = err(&format!("{stdio}input_timeout = \"{bad}\"\n"));
        assert_eq!(e.key.as_deref(), Some("endpoints.a.upstream.input_timeout"));
        assert!(e.message.contains("between 1s and 1h"), "{e}");
    }
    let good = format!("[auth]\nanonymous = true\n{stdio}input_timeout = \"5m\"\n");
    let c = Config::parse(&good, "t.toml").unwrap();
    let UpstreamConfig::Stdio(s) = &c.endpoints[0].upstream else {
        panic!("a is stdio")
    };
    assert_eq!(s.input_timeout, Duration::from_secs(300));
    let e = err(
        "[endpoints.a.upstream]\ntransport = \"http\"\nurl = \"http://h/mcp\"\ninput_timeout = \"5m\"\n",
    );
    assert!(e.message.contains("input_timeout"), "{e}");
}

#[test]
fn toml_syntax_error_has_position() {
    let e = err("[server\n");
    assert!(e.position.is_some(), "{e}");
}

#[test]
fn origin_patterns() {
    let p = OriginPattern::parse("http://localhost:*").unwrap();
    assert!(p.matches("http://localhost:5173"));
    assert!(p.matches("http://LOCALHOST"));
    assert!(!p.matches("https://localhost:5173"));
    assert!(!p.matches("http://evil.example.com"));
    let p = OriginPattern::parse("https://ci.example.com").unwrap();
    assert!(p.matches("https://ci.example.com"));
    assert!(p.matches("https://ci.example.com:443"));
    assert!(!p.matches("https://ci.example.com:8443"));
    let p = OriginPattern::parse("http://[::1]:*").unwrap();
    assert!(p.matches("http://[::1]:8080"));
    assert!(OriginPattern::parse("localhost").is_none());
}

#[test]
fn embedded_default_is_the_demo() {
    let c = Config::embedded(PathBuf::from("/bin/custody"));
    assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.server.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(c.endpoints[0].name, "demo");
}

const EP: &str = "[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n";

#[test]
fn a_config_without_auth_is_refused_with_what_to_add() {
    let e = err(EP);
    assert_eq!(e.key.as_deref(), Some("auth"));
    let text = e.to_string();
    assert!(
        text.contains("[[auth.oidc]]") && text.contains("anonymous = true"),
        "{text}"
    );
    let e = err(&format!("[auth]\n{EP}"));
    assert!(e.to_string().contains("accepts nobody"), "{e}");
}

#[test]
fn presets_fill_in_the_issuer_claims_and_name() {
    let c = Config::parse(
        &format!("[[auth.oidc]]\npreset = \"github-actions\"\naudiences = [\"custody\"]\n[auth.oidc.required_claims]\nrepository_owner = \"acme\"\nrun_attempt = [1, \"1\"]\n{EP}"),
        "custody.toml",
    )
    .unwrap();
    let o = &c.auth.oidc[0];
    assert_eq!(o.issuer, "https://token.actions.githubusercontent.com");
    assert!(o.claims.iter().any(|c| c == "job_workflow_ref"));
    assert_eq!(o.algorithms, [jsonwebtoken::Algorithm::RS256]);
    assert_eq!(o.session_binding, ["run_id", "run_attempt"]);
    assert_eq!(
        o.required_claims[0],
        ("repository_owner".into(), vec![serde_json::json!("acme")])
    );
    assert_eq!(
        o.required_claims[1].1,
        [serde_json::json!(1), serde_json::json!("1")]
    );
    let claims = serde_json::json!({"repository": "acme/api", "ref": "refs/heads/main"});
    assert_eq!(
        o.name.render(claims.as_object().unwrap()),
        "acme/api@refs/heads/main"
    );
    let c = Config::parse(
        &format!("[[auth.oidc]]\npreset = \"gitlab\"\naudiences = [\"custody\"]\n{EP}"),
        "custody.toml",
    )
    .unwrap();
    assert_eq!(c.auth.oidc[0].issuer, "https://gitlab.com");
    assert!(c.auth.oidc[0].claims.iter().any(|c| c == "project_path"));
}

#[test]
fn unsafe_or_incomplete_issuers_are_refused_at_their_line() {
    let oidc = |body: &str| format!("[[auth.oidc]]\n{body}\n{EP}");
    let e = err(&oidc(
        "issuer = \"https://i.example\"\naudiences = [\"c\"]\nalgorithms = [\"RS256\", \"none\"]",
    ));
    assert_eq!(e.key.as_deref(), Some("auth.oidc.0.algorithms.1"));
    assert!(e.to_string().starts_with("custody.toml:4:"), "{e}");
    assert!(e.to_string().contains("never accepted"), "{e}");
    let e = err(&oidc(
        "issuer = \"https://i.example\"\naudiences = [\"c\"]\nalgorithms = [\"HS256\"]",
    ));
    assert!(e.to_string().contains("HMAC"), "{e}");
    let e = err(&oidc("audiences = [\"c\"]"));
    assert!(e.to_string().contains("needs `issuer`"), "{e}");
    let e = err(&oidc(
        "issuer = \"http://issuer.example\"\naudiences = [\"c\"]",
    ));
    assert_eq!(e.key.as_deref(), Some("auth.oidc.0.issuer"));
    assert!(e.to_string().contains("https://"), "{e}");
    let e = err(&oidc("issuer = \"https://i.example\""));
    assert_eq!(e.key.as_deref(), Some("auth.oidc.0.audiences"));
    let e = err(&oidc("preset = \"jenkins\"\naudiences = [\"c\"]"));
    assert!(e.to_string().contains("not a preset"), "{e}");
    let e = err(&oidc(
        "issuer = \"https://i.example\"\naudiences = [\"c\"]\nname = \"{repo\"",
    ));
    assert!(e.to_string().contains("never closed"), "{e}");
    let e = err(&oidc(
        "issuer = \"https://i.example\"\naudiences = [\"c\"]\nclock_skew = \"1h\"",
    ));
    assert!(e.to_string().contains("at most 10m"), "{e}");
    let e = err(&oidc(
        "issuer = \"https://i.example\"\naudiences = [\"c\"]\n[auth.oidc.required_claims]\nlevel = 1.5",
    ));
    assert_eq!(e.key.as_deref(), Some("auth.oidc.0.required_claims.level"));
    let e = err(&format!(
        "[[auth.oidc]]\nissuer = \"https://i.example\"\naudiences = [\"c\"]\n[[auth.oidc]]\nissuer = \"https://i.example\"\naudiences = [\"d\"]\n{EP}"
    ));
    assert!(e.to_string().contains("configured twice"), "{e}");
}

#[test]
fn static_tokens_are_hashes_and_unique() {
    let e = err(&format!(
        "[[auth.static]]\nname = \"alice\"\nsha256 = \"cst_plaintext\"\n{EP}"
    ));
    assert_eq!(e.key.as_deref(), Some("auth.static.0.sha256"));
    assert!(e.to_string().contains("never the token itself"), "{e}");
    let h = "a".repeat(64);
    let e = err(&format!(
        "[[auth.static]]\nname = \"alice\"\nsha256 = \"{h}\"\n[[auth.static]]\nname = \"bob\"\nsha256 = \"{h}\"\n{EP}"
    ));
    assert_eq!(e.key.as_deref(), Some("auth.static.1.sha256"));
    let c = Config::parse(
        &format!("[[auth.static]]\nname = \"alice\"\nsha256 = \"{h}\"\n{EP}"),
        "custody.toml",
    )
    .unwrap();
    assert_eq!(c.auth.static_tokens[0].sha256, [0xaa; 32]);
    assert!(!c.auth.anonymous);
}

#[test]
fn approvals_are_configured_with_defaults_and_checked_with_their_place() {
    let c = Config::parse(GOOD, "custody.toml").unwrap();
    assert_eq!(c.approvals.timeout, Duration::from_secs(600));
    assert_eq!(c.approvals.keepalive, Duration::from_secs(15));
    assert!(c.approvals.approvers.is_empty() && c.approvals.webhooks.is_empty());
    let text = format!(
        "{GOOD}\n[approvals]\ntimeout = \"30m\"\napprovers = [\"alice\"]\n\
         [[approvals.webhooks]]\nurl = \"https://hooks.example.com/services/T0/B0/secret\"\nformat = \"slack\"\n"
    );
    let c = Config::parse(&text, "custody.toml").unwrap();
    assert_eq!(c.approvals.timeout, Duration::from_secs(1800));
    assert_eq!(c.approvals.webhooks[0].format, WebhookFormat::Slack);
    assert_eq!(c.approvals.webhooks[0].attempts, 5);
    // The URL's path can be a credential: logs name the host only.
    assert_eq!(c.approvals.webhooks[0].label(), "https://hooks.example.com");
    assert!(!format!("{:?}", c.approvals.webhooks[0]).contains("secret"));

    let cases = [
        (
            "[approvals]\ntimeout = \"0s\"\n",
            "`approvals.timeout`: must be between 1s and 7 days",
        ),
        (
            "[approvals]\nkeepalive = \"10m\"\n",
            "`approvals.keepalive`: must be between 100ms and 5m",
        ),
        (
            "[approvals]\napprovers = [\" \"]\n",
            "`approvals.approvers.0`: an approver's name must not be empty",
        ),
        (
            "[[approvals.webhooks]]\nurl = \"http://hooks.example.com/secret-path\"\n",
            "`approvals.webhooks.0.url`: must be an https:// URL (http:// only to this machine)",
        ),
        (
            "[[approvals.webhooks]]\nurl = \"https://h.example.com/x\"\nformat = \"teams\"\n",
            "`approvals.webhooks.0.format`: \"teams\" is not a webhook format",
        ),
        (
            "[[approvals.webhooks]]\nurl = \"https://h.example.com/x\"\nattempts = 0\n",
            "`approvals.webhooks.0.attempts`: must be between 1 and 20",
        ),
    ];
    for (extra, want) in cases {
        let text = format!("{GOOD}\n{extra}");
        let e = err(&text).to_string();
        assert!(e.starts_with("custody.toml:"), "{e}");
        assert!(e.contains(want), "{e}\nshould contain {want}");
        assert!(!e.contains("secret-path"), "the URL is not echoed: {e}");
    }
}

#[test]
fn message_limits_default_inherit_and_override() {
    const EP: &str = "[auth]\nanonymous = true\n[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n";
    let c = Config::parse(EP, "t.toml").unwrap();
    assert_eq!(c.endpoints[0].messages.max_message_bytes, 4 * 1024 * 1024);
    assert_eq!(c.endpoints[0].messages.max_batch, 64);
    let c = Config::parse(
        &format!(
            "[server]\nmax_message_bytes = 65536\nmax_batch = 8\n[endpoints.b]\nmax_message_bytes = 2048\nmax_batch = 2\n[endpoints.b.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n{EP}"
        ),
        "t.toml",
    )
    .unwrap();
    let by_name = |n: &str| c.endpoints.iter().find(|e| e.name == n).unwrap().messages;
    assert_eq!(by_name("a").max_message_bytes, 65536);
    assert_eq!(by_name("a").max_batch, 8);
    assert_eq!(by_name("b").max_message_bytes, 2048);
    assert_eq!(by_name("b").max_batch, 2);
    // The former name still counts.
    let c = Config::parse(&format!("[server]\nmax_body_bytes = 4096\n{EP}"), "t.toml").unwrap();
    assert_eq!(c.endpoints[0].messages.max_message_bytes, 4096);
}

#[test]
fn message_limits_beyond_a_log_entry_are_refused() {
    const EP: &str = "[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n";
    let e = err(&format!("[server]\nmax_message_bytes = 67108864\n{EP}"));
    assert_eq!(e.key.as_deref(), Some("server.max_message_bytes"), "{e}");
    assert!(e.to_string().contains("log entry"), "{e}");
    let e = err(
        "[endpoints.a]\nmax_message_bytes = 100\n[endpoints.a.upstream]\ntransport = \"stdio\"\ncommand = \"x\"\n",
    );
    assert_eq!(
        e.key.as_deref(),
        Some("endpoints.a.max_message_bytes"),
        "{e}"
    );
    let e = err(&format!(
        "[server]\nmax_body_bytes = 4096\nmax_message_bytes = 4096\n{EP}"
    ));
    assert_eq!(e.key.as_deref(), Some("server.max_body_bytes"), "{e}");
    let e = err(&format!("[server]\nmax_batch = 0\n{EP}"));
    assert_eq!(e.key.as_deref(), Some("server.max_batch"), "{e}");
    let e = err(&format!("[server]\nmax_json_depth = 200\n{EP}"));
    assert_eq!(e.key.as_deref(), Some("server.max_json_depth"), "{e}");
}

#[test]
fn the_pages_oidc_sign_in_is_checked() {
    let with = |ui: &str| {
        format!(
            "[server]\npublic_url = \"https://custody.acme.example\"\n\
             [[auth.oidc]]\nissuer = \"https://login.acme.example\"\naudiences = [\"custody-ui\"]\n\
             {ui}\n[endpoints.e.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:3001/mcp\"\n"
        )
    };
    let ok = Config::parse(
        &with("[ui.oidc]\nissuer = \"https://login.acme.example\"\nclient_id = \"custody-ui\""),
        "custody.toml",
    )
    .unwrap();
    let oidc = ok.ui.oidc.unwrap();
    assert_eq!(
        oidc.redirect_url,
        "https://custody.acme.example/ui/auth/callback"
    );
    // A client secret written in the file is refused.
    let e = err(&with(
        "[ui.oidc]\nissuer = \"https://login.acme.example\"\nclient_id = \"custody-ui\"\nclient_secret = \"hunter2\"",
    ));
    assert_eq!(e.key.as_deref(), Some("ui.oidc.client_secret"), "{e}");
    assert!(e.message.contains("name the secret by reference"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // The provider must be an issuer whose tokens are accepted for that client.
    let e = err(&with(
        "[ui.oidc]\nissuer = \"https://login.acme.example\"\nclient_id = \"someone-else\"",
    ));
    assert_eq!(e.key.as_deref(), Some("ui.oidc.issuer"), "{e}");
    assert!(
        e.message.contains("must also be an [[auth.oidc]] issuer"),
        "{e}"
    );
}

#[test]
fn the_shared_log_store_is_checked() {
    let with = |audit: &str| format!("[audit]\n{audit}\n{GOOD}");
    let ok = Config::parse(
        &with("store = \"postgres://custody@db:5432/log\"\nreplica = \"gw-1\""),
        "custody.toml",
    )
    .unwrap();
    let shared = ok.audit.store.as_ref().unwrap();
    assert_eq!(shared.replica, "gw-1");
    assert!(matches!(
        ok.audit.location(Path::new("/d")),
        crate::store::Location::Postgres(_)
    ));
    // The URL never prints.
    assert!(!format!("{:?}", ok.audit).contains("db:5432"));

    let e = err(&with("store = \"postgres://custody:hunter2@db/log\""));
    assert_eq!(e.key.as_deref(), Some("audit.store"), "{e}");
    assert!(e.to_string().contains("name the URL by reference"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let e = err(&with("store = \"mysql://db/log\""));
    assert!(e.to_string().contains("is not a PostgreSQL URL"), "{e}");

    let e = err(&with("store = \"postgres://db/log\"\nreplica = \"gw 1\""));
    assert_eq!(e.key.as_deref(), Some("audit.replica"), "{e}");

    let e = err(&with("replica = \"gw-1\""));
    assert!(e.to_string().contains("set audit.store"), "{e}");

    let e = err(&with("store = \"postgres://db/log\"\nretention = \"400d\""));
    assert_eq!(e.key.as_deref(), Some("audit.retention"), "{e}");
    assert!(
        e.to_string()
            .contains("not available on the PostgreSQL log"),
        "{e}"
    );

    // A password by reference is fine.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "postgres://custody:s3cret@db/log").unwrap();
    let ok = Config::parse(
        &with(&format!(
            "store = \"${{file:{}}}\"\nreplica = \"r\"",
            file.path().display()
        )),
        "custody.toml",
    )
    .unwrap();
    assert_eq!(
        ok.audit.store.unwrap().url,
        "postgres://custody:s3cret@db/log"
    );
}

#[test]
fn worker_threads_default_to_the_cores_this_process_may_use() {
    let c = Config::parse(GOOD, "custody.toml").unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.server.worker_threads, cores);
    let c = Config::parse(
        &GOOD.replace("[server]\n", "[server]\nworker_threads = 3\n"),
        "custody.toml",
    )
    .unwrap();
    assert_eq!(c.server.worker_threads, 3);
    let e = err(&GOOD.replace("[server]\n", "[server]\nworker_threads = 0\n"));
    assert_eq!(e.key.as_deref(), Some("server.worker_threads"), "{e}");
}
