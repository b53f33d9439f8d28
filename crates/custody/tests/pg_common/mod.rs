//! A PostgreSQL database of a test's own: `CUSTODY_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust authentication) creates it and drops it
//! at the end. Without a server a test says so and passes, except in CI (`CI` set), where it
//! fails. Also: replicas of `custody serve` sharing one such database.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use custody::store::postgres::{Bounds, PgLog};

pub fn admin_url() -> String {
    std::env::var("CUSTODY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of this test's own, dropped at the end.
pub struct Db {
    name: String,
    pub url: String,
}

impl Db {
    pub fn new(test: &str) -> Option<Self> {
        let mut admin = match postgres::Client::connect(&admin_url(), postgres::NoTls) {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "no PostgreSQL at {}: {e}",
                    admin_url()
                );
                eprintln!("skipped: no PostgreSQL at {} ({e})", admin_url());
                return None;
            }
        };
        let name = format!("custody_{test}_{}", std::process::id());
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&name);
        Some(Self {
            name,
            url: url.to_string(),
        })
    }

    pub fn replica(&self, name: &str) -> PgLog {
        let mut log = PgLog::connect(&self.url, name, Bounds::default()).unwrap();
        log.migrate().unwrap();
        log
    }

    pub fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Db {
    /// Every entry of the shared log in index order, with the replica that wrote it. Blocking.
    pub fn entries(&self) -> Vec<(tlog::Entry<'static>, String)> {
        self.admin()
            .query("SELECT data, replica FROM entries ORDER BY idx", &[])
            .unwrap()
            .iter()
            .map(|r| {
                let data: Vec<u8> = r.get(0);
                (tlog::Entry::decode(&data).unwrap().into_owned(), r.get(1))
            })
            .collect()
    }

    /// How many entries the log holds, asserting that their indices run from 0 without a hole.
    pub fn contiguous_entries(&self) -> i64 {
        let r = self
            .admin()
            .query_one("SELECT count(*), coalesce(max(idx), -1) FROM entries", &[])
            .unwrap();
        let (n, max): (i64, i64) = (r.get(0), r.get(1));
        assert_eq!(n, max + 1, "indices are contiguous");
        n
    }

    /// Asserts that each receipt's request and response entries are in the log, at the indices
    /// and with the leaf hashes it names.
    pub fn assert_receipts_in_log<'a>(
        &self,
        receipts: impl IntoIterator<Item = &'a serde_json::Value>,
    ) {
        let leaves: std::collections::HashMap<i64, String> = self
            .admin()
            .query("SELECT idx, leaf FROM entries", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), hex::encode(r.get::<_, Vec<u8>>(1))))
            .collect();
        for r in receipts {
            for side in ["request", "response"] {
                let index = r[side]["index"].as_i64().unwrap();
                assert_eq!(
                    leaves.get(&index).map(String::as_str),
                    r[side]["leaf"].as_str(),
                    "the {side} entry {index} of an answered call is in the log"
                );
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The tests' runtime for their clients (the replicas are processes of their own).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a replica for each configuration; the processes and their base URLs.
pub fn start_all(configs: &[PathBuf]) -> (Replicas, Vec<String>) {
    let mut procs = Replicas::default();
    let mut bases = Vec::new();
    for c in configs {
        let (p, b) = start(c).unwrap_or_else(|e| panic!("a replica did not start: {e}"));
        procs.push(p);
        bases.push(b);
    }
    (procs, bases)
}

/// A static token for each of `names`: the `[[auth.static]]` tables that accept them, and
/// each token by name.
pub fn static_tokens(
    names: &[&'static str],
) -> (String, std::collections::HashMap<&'static str, String>) {
    use custody::identity::{new_static_token, token_hash};
    let mut tokens = std::collections::HashMap::new();
    let mut statics = String::new();
    for &name in names {
        let token = new_static_token();
        statics.push_str(&format!(
            "[[auth.static]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
            hex::encode(token_hash(&token))
        ));
        tokens.insert(name, token);
    }
    (statics, tokens)
}

/// A replica's configuration: its own data directory, the shared log and key.
pub fn config(root: &Path, name: &str, db: &str, key: &Path, upstream: &str) -> PathBuf {
    config_with(
        root,
        name,
        db,
        key,
        &format!(
            "[auth]\nanonymous = true\n[endpoints.f.upstream]\ntransport = \"http\"\nurl = \"{upstream}\"\n"
        ),
    )
}

/// A replica's configuration with `rest` (`[auth]`, endpoints, ...).
pub fn config_with(root: &Path, name: &str, db: &str, key: &Path, rest: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("custody.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
             [audit]\nstore = \"{db}\"\nreplica = \"{name}\"\nkey_file = \"{}\"\norigin = \"custody.test/replicas\"\n\
             checkpoint_interval = \"100ms\"\n{rest}",
            dir.join("data").display(),
            key.display(),
        ),
    )
    .unwrap();
    file
}

/// Starts a replica; its base URL once it listens, or what it said on stderr when it exited.
pub fn start(config: &Path) -> Result<(Child, String), String> {
    let err = config.with_file_name("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next();
    match first {
        Some(Ok(line)) if line.starts_with("custody listening on ") => Ok((
            child,
            line.trim_start_matches("custody listening on ").to_string(),
        )),
        _ => {
            let _ = child.wait();
            Err(std::fs::read_to_string(&err).unwrap_or_default())
        }
    }
}

/// What the replicas wrote on stderr (for a failure's message).
pub fn logs(configs: &[PathBuf]) -> String {
    configs
        .iter()
        .map(|c| {
            let log = std::fs::read_to_string(c.with_file_name("stderr.log")).unwrap_or_default();
            format!("--- {}:\n{log}", c.display())
        })
        .collect()
}

pub fn terminate(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "a replica stopped with {status}");
}

/// Replica processes, killed when dropped (a failing test leaves none running).
#[derive(Default)]
pub struct Replicas(pub Vec<Child>);

impl std::ops::Deref for Replicas {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}

impl std::ops::DerefMut for Replicas {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
