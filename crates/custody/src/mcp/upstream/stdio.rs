//! MCP servers run as local processes speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! Session-based clients get a process each ([`StdioUpstream::spawn`]); stateless requests share
//! a bounded pool ([`StdioUpstream::pooled`]). Every process is a [`Child`] that multiplexes
//! requests: the gateway gives each request its own id (and progress token) on the way in and
//! restores the client's on the way out, so clients can never see or collide with each other.

mod child;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

pub use child::{Child, ServerRequest};

/// Requests in flight on one pooled process before the next one is used.
pub const PER_PROCESS: usize = 16;

use super::UpstreamError;
use crate::config::{MessageLimits, StdioUpstreamConfig};
use crate::credentials::Credentials;
use crate::limits::{Gauge, Permit};

/// How a stdio endpoint's processes are started and shared.
pub struct StdioUpstream {
    endpoint: Arc<str>,
    cfg: StdioUpstreamConfig,
    /// The environment values only the gateway holds.
    credentials: Arc<Credentials>,
    messages: MessageLimits,
    pool: Mutex<Vec<Arc<Child>>>,
    /// Processes running (sessions' and the pool's), with the endpoint's cap.
    processes: Arc<Gauge>,
    /// Requests pooled processes send to the client, for the relay to answer.
    server_requests: mpsc::Sender<child::ServerRequest>,
    server_requests_rx: Mutex<Option<mpsc::Receiver<child::ServerRequest>>>,
}

impl StdioUpstream {
    pub fn new(
        endpoint: &str,
        cfg: StdioUpstreamConfig,
        credentials: Arc<Credentials>,
        messages: MessageLimits,
        processes: Arc<Gauge>,
    ) -> Self {
        let (server_requests, rx) = mpsc::channel(256);
        Self {
            endpoint: endpoint.into(),
            cfg,
            credentials,
            messages,
            pool: Mutex::new(Vec::new()),
            processes,
            server_requests,
            server_requests_rx: Mutex::new(Some(rx)),
        }
    }

    /// The requests pooled processes send to the client (sampling, elicitation, roots), which
    /// no stateless client can take: the relay answers them. Taken once.
    pub fn take_server_requests(&self) -> Option<mpsc::Receiver<child::ServerRequest>> {
        lock(&self.server_requests_rx).take()
    }

    /// A place for one more process, unless the endpoint's cap is reached.
    ///
    /// # Errors
    /// [`UpstreamError::Limit`] (`endpoint.processes`).
    pub fn reserve(&self) -> Result<Permit, UpstreamError> {
        self.processes.acquire().map_err(UpstreamError::Limit)
    }

    /// Processes running now.
    pub fn processes(&self) -> u64 {
        self.processes.held()
    }

    /// Starts a process of its own (for one session-based client) in a place taken with
    /// [`StdioUpstream::reserve`].
    ///
    /// # Errors
    /// [`UpstreamError::Spawn`] when the program cannot be started.
    pub fn spawn(&self, place: Permit) -> Result<Arc<Child>, UpstreamError> {
        self.start(place, None)
    }

    fn start(
        &self,
        place: Permit,
        server_requests: Option<mpsc::Sender<child::ServerRequest>>,
    ) -> Result<Arc<Child>, UpstreamError> {
        Child::spawn(
            self.endpoint.clone(),
            &self.cfg,
            &self.credentials.current().env,
            self.credentials.scrub(),
            self.messages,
            place,
            server_requests,
        )
    }

    /// A pooled process for a stateless request. Requests go to the oldest process with room
    /// (fewer than [`PER_PROCESS`] in flight), so that under light load they share one process
    /// and whatever state it keeps (a `subscriptions/listen` stream sees the changes other
    /// requests make); another process starts only when every running one is full.
    ///
    /// # Errors
    /// [`UpstreamError::Spawn`] when a needed process cannot be started.
    pub fn pooled(&self) -> Result<Arc<Child>, UpstreamError> {
        let mut pool = lock(&self.pool);
        pool.retain(|c| c.is_alive());
        if let Some(c) = pool.iter().find(|c| c.load() < PER_PROCESS) {
            return Ok(c.clone());
        }
        if pool.len() < self.cfg.pool_size {
            // With every place taken by sessions, the pool makes do with what it has.
            match self.reserve() {
                Ok(place) => {
                    let child = self.start(place, Some(self.server_requests.clone()))?;
                    pool.push(child.clone());
                    return Ok(child);
                }
                Err(e) if pool.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
        Ok(pool
            .iter()
            .min_by_key(|c| c.load())
            .cloned()
            .unwrap_or_else(|| unreachable!("the pool is not empty here")))
    }

    /// Stops pooled processes that have had nothing to do for the idle timeout.
    pub async fn reap_idle(&self) {
        let idle: Vec<Arc<Child>> = {
            let mut pool = lock(&self.pool);
            let (idle, keep): (Vec<_>, Vec<_>) = pool
                .drain(..)
                .partition(|c| !c.is_alive() || c.idle_for() >= self.cfg.idle_timeout);
            *pool = keep;
            idle
        };
        for child in idle {
            child.stop().await;
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.cfg.idle_timeout
    }

    /// How long a call waits for a stateless client to come back with the input its process
    /// asked for (`input_timeout`).
    pub fn input_timeout(&self) -> Duration {
        self.cfg.input_timeout
    }

    /// Requests the pool serves at once before it doubles up: the most calls that can sensibly
    /// wait for their clients' input.
    pub fn capacity(&self) -> usize {
        self.cfg.pool_size * PER_PROCESS
    }

    /// Stops every pooled process.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Child>> = lock(&self.pool).drain(..).collect();
        futures_util::future::join_all(all.iter().map(|c| c.stop())).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
