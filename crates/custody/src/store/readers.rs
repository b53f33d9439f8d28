//! Readers kept open between requests: a served tile or a receipt reads through one of them
//! instead of opening the database (a file, or a PostgreSQL connection) for each request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Location, Reader, StoreError};

/// Readers kept idle at most (as many as tile reads run at once).
const IDLE: usize = 8;
/// A reader idle longer than this is closed (when readers are next asked for) rather than
/// used: the database may have ended its connection meanwhile.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// A few readers of one log, reused. Blocking, as [`Reader`] is.
pub struct Readers {
    location: Location,
    idle: Mutex<Vec<(Instant, Reader)>>,
}

impl Readers {
    pub fn new(location: Location) -> Self {
        Self {
            location,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A reader: one idle for less than [`MAX_IDLE`] whose connection is still open (older or
    /// closed ones are closed here), or a new one. It goes back to the idle ones when the lease
    /// is dropped, unless [`Lease::discard`] said it failed or a panic is unwinding.
    ///
    /// # Errors
    /// [`StoreError`]: a new reader could not be opened.
    pub fn take(&self) -> Result<Lease<'_>, StoreError> {
        let mut stale = Vec::new();
        let reused = {
            let mut idle = self.lock();
            let mut found = None;
            while let Some((since, reader)) = idle.pop() {
                if since.elapsed() < MAX_IDLE && !reader.is_closed() {
                    found = Some(reader);
                    break;
                }
                stale.push(reader);
            }
            found
        };
        if !stale.is_empty() {
            super::postgres::drop_off_runtime(stale);
        }
        let reader = match reused {
            Some(r) => r,
            None => Reader::open(&self.location)?,
        };
        Ok(Lease {
            readers: self,
            reader: Some(reader),
            failed: std::cell::Cell::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Reader)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Readers idle now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock());
        super::postgres::drop_off_runtime(idle);
    }
}

/// A reader taken from [`Readers`].
pub struct Lease<'a> {
    readers: &'a Readers,
    reader: Option<Reader>,
    failed: std::cell::Cell<bool>,
}

impl Lease<'_> {
    /// The reader failed: it is closed when the lease ends, not kept.
    pub fn discard(&self) {
        self.failed.set(true);
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = Reader;

    fn deref(&self) -> &Reader {
        self.reader
            .as_ref()
            .unwrap_or_else(|| unreachable!("a lease holds its reader until dropped"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        if self.failed.get() || std::thread::panicking() {
            super::postgres::drop_off_runtime(reader);
            return;
        }
        let mut idle = self.readers.lock();
        if idle.len() < IDLE {
            idle.push((Instant::now(), reader));
            return;
        }
        drop(idle);
        super::postgres::drop_off_runtime(reader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LogReader;

    #[test]
    fn a_reader_is_reused_and_a_failed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::store::SqliteStore::open(dir.path(), crate::config::Durability::None).unwrap());
        let readers = Readers::new(Location::dir(dir.path()));
        {
            let r = readers.take().unwrap();
            assert!(r.latest_checkpoint().unwrap().is_none());
        }
        assert_eq!(readers.idle(), 1);
        let (a, b) = (readers.take().unwrap(), readers.take().unwrap());
        assert_eq!(readers.idle(), 0, "the idle one was taken, a second opened");
        drop(a);
        b.discard();
        drop(b);
        assert_eq!(readers.idle(), 1);
    }

    #[test]
    fn no_log_no_reader() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::new(Location::dir(&dir.path().join("missing")));
        assert!(matches!(readers.take(), Err(StoreError::Open { .. })));
    }
}
