//! Counts of things held at once, with a cap: sessions, processes, requests in progress.
//!
//! Taking one gives a [`Permit`]; dropping it gives the place back. A permit lives as long as
//! what it counts (a session holds its permits, a process's supervisor holds the process's), so
//! the count cannot drift from what exists.
//!
//! Lock ownership: a [`Gauge`] is one atomic; a [`KeyedGauge`] holds one `std::sync::Mutex` for
//! one map operation, never across an `.await`. A keyed gauge holds only keys with a permit
//! out, so its size is bounded by what the permits count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Exceeded, Limit};

/// A count with a cap.
#[derive(Debug)]
pub struct Gauge {
    limit: Limit,
    max: u64,
    held: AtomicU64,
}

impl Gauge {
    pub fn new(limit: Limit, max: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            max,
            held: AtomicU64::new(0),
        })
    }

    /// One more, unless the cap is reached.
    ///
    /// # Errors
    /// [`Exceeded`] naming this gauge's limit.
    pub fn acquire(self: &Arc<Self>) -> Result<Permit, Exceeded> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| Exceeded::new(self.limit, self.max))?;
        Ok(Permit::of(Held::Gauge(self.clone())))
    }

    /// How many are held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// A count with a cap per key (a principal's binding).
#[derive(Debug)]
pub struct KeyedGauge {
    limit: Limit,
    max: u64,
    held: Mutex<HashMap<Arc<str>, u64>>,
}

impl KeyedGauge {
    pub fn new(limit: Limit, max: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// One more for `key`, unless its cap is reached.
    ///
    /// # Errors
    /// [`Exceeded`] naming this gauge's limit.
    pub fn acquire(self: &Arc<Self>, key: &Arc<str>) -> Result<Permit, Exceeded> {
        let mut held = self.lock();
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return Err(Exceeded::new(self.limit, self.max));
        }
        *n += 1;
        Ok(Permit::of(Held::Keyed(self.clone(), key.clone())))
    }

    /// How many `key` holds now.
    pub fn held(&self, key: &str) -> u64 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Keys with a permit out.
    pub fn keys(&self) -> usize {
        self.lock().len()
    }

    fn release(&self, key: &Arc<str>) {
        let mut held = self.lock();
        if let Some(n) = held.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A place held in one or more gauges, given back on drop. The default holds nothing.
#[derive(Debug, Default)]
pub struct Permit {
    held: Held,
    /// Other places held with this one (given back with it).
    _also: Vec<Permit>,
}

#[derive(Debug, Default)]
enum Held {
    #[default]
    Nothing,
    Gauge(Arc<Gauge>),
    Keyed(Arc<KeyedGauge>, Arc<str>),
}

impl Permit {
    fn of(held: Held) -> Self {
        Self {
            held,
            _also: Vec::new(),
        }
    }

    /// Holds both.
    #[must_use]
    pub fn and(mut self, other: Permit) -> Permit {
        self._also.push(other);
        self
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        match std::mem::take(&mut self.held) {
            Held::Nothing => {}
            Held::Gauge(g) => {
                g.held.fetch_sub(1, Ordering::AcqRel);
            }
            Held::Keyed(g, key) => g.release(&key),
        }
    }
}
