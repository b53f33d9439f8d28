//! The connection table: at most `max` client connections; when it is full, a new connection
//! closes the connection idle longest (a keep-alive connection between requests costs its
//! client a reconnect, nothing more), and only when none is idle is the new one refused. A
//! connection with no request in progress is closed after `idle_timeout`, and one that has sent
//! part of a request head and not the rest after `header_read_timeout` (slowloris).
//!
//! The table does not touch sockets: it marks a connection to close (its [`Conn::closing`]
//! token), and the connection's task closes it. Lock ownership: one `std::sync::Mutex` over the
//! table, held for an insert, a removal, or one pass over it (a full table's admission, a reap);
//! the per-connection state is atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Exceeded, Limit};

/// `[server]` bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once.
    pub max: usize,
    /// A connection with no request in progress and nothing sent is closed after this.
    pub idle_timeout: Duration,
    /// A request head must arrive whole within this of its first byte.
    pub header_read_timeout: Duration,
}

/// Why a connection was closed by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Room was needed for a new connection and this one was idle longest.
    Evicted,
    /// No request for `idle_timeout`.
    Idle,
    /// A request head took longer than `header_read_timeout`.
    HeaderTimeout,
}

const OPEN: u8 = 0;
const EVICTED: u8 = 1;
const IDLE: u8 = 2;
const HEADER_TIMEOUT: u8 = 3;
/// `first_read` when no byte has arrived since the connection last went idle.
const NONE: u64 = u64::MAX;

/// One connection's state, shared by the table, its task, its socket wrapper and its requests.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    epoch: Instant,
    /// Requests in progress (their responses not yet finished).
    busy: AtomicU64,
    /// Milliseconds since `epoch` when the connection last had nothing in progress.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` of the first byte read while idle (a request head arriving).
    first_read: AtomicU64,
    why: AtomicU8,
    closing: CancellationToken,
}

impl Conn {
    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived on the socket.
    pub fn note_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.first_read.load(Ordering::Relaxed) == NONE
        {
            self.first_read
                .store(self.ms(Instant::now()), Ordering::Relaxed);
        }
    }

    /// A request begins; the guard ends it (when its response is finished or dropped).
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.first_read.store(NONE, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// Cancelled when the table wants this connection closed.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Why the table closed it, once it has.
    pub fn closed(&self) -> Option<Closed> {
        match self.why.load(Ordering::Acquire) {
            EVICTED => Some(Closed::Evicted),
            IDLE => Some(Closed::Idle),
            HEADER_TIMEOUT => Some(Closed::HeaderTimeout),
            _ => None,
        }
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0 && self.why.load(Ordering::Acquire) == OPEN
    }

    fn close(&self, why: u8) -> bool {
        let first = self
            .why
            .compare_exchange(OPEN, why, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.closing.cancel();
        }
        first
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct InProgress(Arc<Conn>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let c = &self.0;
        if c.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            c.idle_since.store(c.ms(Instant::now()), Ordering::Release);
            c.first_read.store(NONE, Ordering::Relaxed);
        }
    }
}

/// The connection table.
pub struct Connections {
    limits: ConnLimits,
    epoch: Instant,
    next: AtomicU64,
    table: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// A connection's place in the table, given back on drop.
#[derive(Debug)]
pub struct Slot {
    conn: Arc<Conn>,
    table: Arc<Connections>,
}

impl Slot {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().remove(&self.conn.id);
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Connections {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            table: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Takes a place for a new connection, closing the connection idle longest when the table
    /// is full.
    ///
    /// # Errors
    /// [`Exceeded`] (`server.connections`) when the table is full of busy connections.
    pub fn open(self: &Arc<Self>) -> Result<Slot, Exceeded> {
        self.open_at(Instant::now())
    }

    pub fn open_at(self: &Arc<Self>, now: Instant) -> Result<Slot, Exceeded> {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            epoch: self.epoch,
            busy: AtomicU64::new(0),
            idle_since: AtomicU64::new(ms),
            first_read: AtomicU64::new(NONE),
            why: AtomicU8::new(OPEN),
            closing: CancellationToken::new(),
        });
        let mut table = self.lock();
        if table.len() >= self.limits.max {
            let oldest = table
                .values()
                .filter(|c| c.is_idle())
                .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
                .cloned();
            match oldest {
                // Its place is taken now; its task closes the socket.
                Some(c) if c.close(EVICTED) => {
                    table.remove(&c.id);
                }
                _ => return Err(Exceeded::new(Limit::Connections, self.limits.max as u64)),
            }
        }
        table.insert(conn.id, conn.clone());
        drop(table);
        Ok(Slot {
            conn,
            table: self.clone(),
        })
    }

    /// Closes the idle longest connection (when the process is out of file descriptors).
    /// Returns whether there was one.
    pub fn evict_one(&self) -> bool {
        let mut table = self.lock();
        let oldest = table
            .values()
            .filter(|c| c.is_idle())
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .cloned();
        match oldest {
            Some(c) if c.close(EVICTED) => {
                table.remove(&c.id);
                true
            }
            _ => false,
        }
    }

    /// Marks connections past their idle or header timeout to close; returns how many of each
    /// (idle, header timeout).
    pub fn reap(&self) -> (usize, usize) {
        self.reap_at(Instant::now())
    }

    pub fn reap_at(&self, now: Instant) -> (usize, usize) {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let idle_ms = u64::try_from(self.limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let head_ms =
            u64::try_from(self.limits.header_read_timeout.as_millis()).unwrap_or(u64::MAX);
        let (mut idle, mut slow) = (0, 0);
        let table = self.lock();
        for c in table.values().filter(|c| c.is_idle()) {
            let first = c.first_read.load(Ordering::Relaxed);
            if first != NONE {
                if now.saturating_sub(first) >= head_ms && c.close(HEADER_TIMEOUT) {
                    slow += 1;
                }
            } else if now.saturating_sub(c.idle_since.load(Ordering::Acquire)) >= idle_ms
                && c.close(IDLE)
            {
                idle += 1;
            }
        }
        (idle, slow)
    }

    /// How often [`Connections::reap`] should run: a quarter of the shorter timeout, between
    /// 50 ms and 1 s.
    pub fn reap_every(&self) -> Duration {
        (self
            .limits
            .header_read_timeout
            .min(self.limits.idle_timeout)
            / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
