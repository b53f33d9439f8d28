//! Rate limits by GCRA (the generic cell rate algorithm, ITU-T I.371; the "virtual scheduling"
//! form): one number per key, the *theoretical arrival time* (TAT) of the next event. An event
//! at `now` conforms when `TAT <= now + tolerance`; it then moves TAT to `max(TAT, now) +
//! interval`. `interval` is `1 / rate`, `tolerance` is `(burst - 1) * interval`.
//!
//! A key whose TAT is in the past holds no information (it is as if never seen), so the table
//! drops such keys when it is full. If it is still full, keys that are not in it share one
//! overflow TAT: an attacker with more addresses than the table holds is limited as one.
//!
//! Lock ownership: one `std::sync::Mutex` per table, held for one map operation (and, at most
//! once a second while the table is full, for a sweep over it); never across an `.await`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Exceeded, Limit};

/// A rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval_ns: u64,
    tolerance_ns: u64,
    per_second: u32,
}

impl Rate {
    /// `per_second` events a second on average, up to `burst` at once. Both at least 1.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        Self {
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.max(1) - 1),
            per_second: per_second.max(1),
        }
    }

    /// Does an event at `now` conform, given `tat`? `Err` holds the wait until one would.
    fn conforms(self, tat: u64, now: u64) -> Result<(), Duration> {
        let limit = now + self.tolerance_ns;
        if tat <= limit {
            Ok(())
        } else {
            Err(Duration::from_nanos(tat - limit))
        }
    }

    /// TAT after an event at `now`, never more than one event past the burst (so a caller
    /// that keeps sending while refused is not locked out for longer than the burst takes to
    /// drain).
    fn after(self, tat: u64, now: u64) -> u64 {
        (tat.max(now) + self.interval_ns).min(now + self.tolerance_ns + self.interval_ns)
    }
}

/// A rate limit per key, with a bounded number of keys.
pub struct KeyedRate<K> {
    limit: Limit,
    rate: Rate,
    max_keys: usize,
    epoch: Instant,
    inner: Mutex<Table<K>>,
}

struct Table<K> {
    tats: HashMap<K, u64>,
    /// The TAT shared by keys that found the table full.
    overflow: u64,
    /// When the table was last swept of keys in the past (ns since `epoch`).
    swept: u64,
}

const SWEEP_EVERY_NS: u64 = 1_000_000_000;

impl<K: Hash + Eq + Clone> KeyedRate<K> {
    pub fn new(limit: Limit, rate: Rate, max_keys: usize, epoch: Instant) -> Self {
        Self {
            limit,
            rate,
            max_keys: max_keys.max(1),
            epoch,
            inner: Mutex::new(Table {
                tats: HashMap::new(),
                overflow: 0,
                swept: 0,
            }),
        }
    }

    fn ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn exceeded(&self, wait: Duration) -> Exceeded {
        Exceeded {
            limit: self.limit,
            max: u64::from(self.rate.per_second),
            retry_after: Some(wait),
        }
    }

    /// Would an event for `key` conform now? Charges nothing (see [`KeyedRate::charge`]).
    ///
    /// # Errors
    /// [`Exceeded`] with the wait until one would.
    pub fn check(&self, key: &K) -> Result<(), Exceeded> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Exceeded> {
        let now = self.ns(now);
        let t = self.lock();
        let tat = match t.tats.get(key) {
            Some(tat) => *tat,
            None if t.tats.len() >= self.max_keys => t.overflow,
            None => return Ok(()),
        };
        self.rate.conforms(tat, now).map_err(|w| self.exceeded(w))
    }

    /// Counts an event for `key` (after [`KeyedRate::check`] let it through and it turned out
    /// to be one that counts, such as a refused credential).
    pub fn charge(&self, key: K) {
        self.charge_at(key, Instant::now());
    }

    pub fn charge_at(&self, key: K, now: Instant) {
        let now = self.ns(now);
        let mut t = self.lock();
        let rate = self.rate;
        if let Some(tat) = t.tats.get_mut(&key) {
            *tat = rate.after(*tat, now);
            return;
        }
        if self.make_room(&mut t, now) {
            t.tats.insert(key, rate.after(0, now));
        } else {
            t.overflow = rate.after(t.overflow, now);
        }
    }

    /// Takes one event for `key` if it conforms (check and charge in one step).
    ///
    /// # Errors
    /// [`Exceeded`] with the wait until one would conform; nothing is charged.
    pub fn take(&self, key: &K) -> Result<(), Exceeded> {
        self.take_at(key, Instant::now())
    }

    pub fn take_at(&self, key: &K, now: Instant) -> Result<(), Exceeded> {
        let now = self.ns(now);
        let mut t = self.lock();
        let rate = self.rate;
        if let Some(tat) = t.tats.get_mut(key) {
            rate.conforms(*tat, now).map_err(|w| self.exceeded(w))?;
            *tat = rate.after(*tat, now);
            return Ok(());
        }
        if self.make_room(&mut t, now) {
            t.tats.insert(key.clone(), rate.after(0, now));
            Ok(())
        } else {
            rate.conforms(t.overflow, now)
                .map_err(|w| self.exceeded(w))?;
            t.overflow = rate.after(t.overflow, now);
            Ok(())
        }
    }

    /// Is there room for one more key? Sweeps keys whose TAT has passed, at most once a second.
    fn make_room(&self, t: &mut Table<K>, now: u64) -> bool {
        if t.tats.len() < self.max_keys {
            return true;
        }
        if now.saturating_sub(t.swept) >= SWEEP_EVERY_NS {
            t.swept = now;
            t.tats.retain(|_, tat| *tat > now);
        }
        t.tats.len() < self.max_keys
    }

    /// Keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
