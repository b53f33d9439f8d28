//! Refusals counted per key and window, so that a flood is recorded as one summary per key and
//! window (with a count) rather than one record per refusal.
//!
//! A window holds at most `max_keys` distinct keys; a key that finds the window full is
//! *folded* (the caller's `fold` maps it to a coarser key, such as the same reason without the
//! address), so the records a window produces are bounded by `max_keys` plus the folded keys,
//! whatever the number of addresses a flood comes from. Each key keeps the sample of its first
//! refusal in the window (what to record about it) and a count.
//!
//! Lock ownership: one `std::sync::Mutex`, held for one insert or for swapping the window out.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// One key's refusals in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted<K, S> {
    pub key: K,
    /// What the first refusal looked like.
    pub sample: S,
    pub count: u64,
    /// Whether this is a folded key (many keys summed because the window was full).
    pub folded: bool,
}

struct Window<K, S> {
    /// In first-seen order.
    counted: Vec<Counted<K, S>>,
    index: HashMap<K, usize>,
    distinct: usize,
}

impl<K, S> Default for Window<K, S> {
    fn default() -> Self {
        Self {
            counted: Vec::new(),
            index: HashMap::new(),
            distinct: 0,
        }
    }
}

/// Refusals per key in the current window.
pub struct Tally<K, S> {
    max_keys: usize,
    fold: fn(&K) -> K,
    window: Mutex<Window<K, S>>,
}

impl<K: Hash + Eq + Clone, S> Tally<K, S> {
    /// At most `max_keys` distinct keys a window; `fold` gives the key a refusal is counted
    /// under once the window is full.
    pub fn new(max_keys: usize, fold: fn(&K) -> K) -> Self {
        Self {
            max_keys,
            fold,
            window: Mutex::new(Window::default()),
        }
    }

    /// Counts one refusal under `key`; `sample` is called only for the first in the window.
    pub fn add(&self, key: K, sample: impl FnOnce() -> S) {
        let mut w = self.lock();
        if let Some(&i) = w.index.get(&key) {
            w.counted[i].count += 1;
            return;
        }
        let (key, folded) = if w.distinct < self.max_keys {
            w.distinct += 1;
            (key, false)
        } else {
            let folded = (self.fold)(&key);
            if let Some(&i) = w.index.get(&folded) {
                w.counted[i].count += 1;
                return;
            }
            (folded, true)
        };
        let i = w.counted.len();
        w.index.insert(key.clone(), i);
        w.counted.push(Counted {
            key,
            sample: sample(),
            count: 1,
            folded,
        });
    }

    /// Ends the window: everything counted, in first-seen order.
    pub fn drain(&self) -> Vec<Counted<K, S>> {
        std::mem::take(&mut *self.lock()).counted
    }

    /// Keys in the current window.
    pub fn len(&self) -> usize {
        self.lock().counted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window<K, S>> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
