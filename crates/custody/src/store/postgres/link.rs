//! One connection to the log's database for a part that talks to it now and then (approvals
//! handed between replicas, sessions shared between them): made when first needed, made again
//! after an error, bounded like every other connection.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A lazily made connection, used by one caller at a time. Blocking: call it off the runtime.
pub struct Link {
    url: String,
    /// What the database shows as the connection's application (`custody <replica> <part>`).
    name: String,
    conn: Mutex<Option<postgres::Client>>,
}

impl Link {
    pub fn new(url: &str, name: String) -> Self {
        Self {
            url: url.to_string(),
            name,
            conn: Mutex::new(None),
        }
    }

    /// Runs `f` on the connection (made when missing, dropped after an error). Blocking.
    ///
    /// # Errors
    /// The connection could not be made, or `f` failed; the text says which.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, String> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.as_ref().is_none_or(postgres::Client::is_closed) {
            let mut config: postgres::Config = self
                .url
                .parse()
                .map_err(|e: postgres::Error| e.to_string())?;
            config.application_name(&self.name);
            config.connect_timeout(Duration::from_secs(5));
            super::keepalive(&mut config);
            let mut c = config
                .connect(postgres::NoTls)
                .map_err(|e| format!("couldn't connect to the log database: {e}"))?;
            c.batch_execute("SET statement_timeout = 5000; SET client_min_messages = warning")
                .map_err(|e| e.to_string())?;
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else {
            unreachable!("connected above")
        };
        f(c).map_err(|e| {
            *conn = None;
            format!("the log database: {e}")
        })
    }

    /// Drops the connection where that is allowed (see `drop_off_runtime`).
    pub fn close(&self) {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        super::drop_off_runtime(conn);
    }
}
