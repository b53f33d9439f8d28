//! A PostgreSQL database of a test's own: `CUSTODY_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust authentication) creates it and drops it
//! at the end. Without a server a test says so and passes, except in CI (`CI` set), where it
//! fails.

#![allow(dead_code)]

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
