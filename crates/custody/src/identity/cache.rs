//! Verified tokens by SHA-256, until they expire: a repeated token skips the signature check.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::principal::Principal;

/// What a cached verification is still subject to.
#[derive(Clone)]
pub struct Verified {
    pub principal: Arc<Principal>,
    /// Unix seconds after which the token is refused (its `exp` plus the clock skew).
    pub until: u64,
    /// The issuer (index into the identity's list) and key that verified it: if the issuer
    /// stops publishing that key, the entry no longer counts.
    pub issuer: usize,
    pub kid: Option<String>,
}

/// A bounded map from token hash to verification.
pub struct TokenCache {
    map: RwLock<HashMap<[u8; 32], Verified>>,
    capacity: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get(&self, hash: &[u8; 32], now: u64) -> Option<Verified> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(hash).filter(|v| now <= v.until).cloned()
    }

    /// Remembers a verification; when full, expired entries go first, then an arbitrary one.
    pub fn insert(&self, hash: [u8; 32], verified: Verified, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.capacity && !map.contains_key(&hash) {
            map.retain(|_, v| now <= v.until);
            if map.len() >= self.capacity
                && let Some(k) = map.keys().next().copied()
            {
                map.remove(&k);
            }
        }
        map.insert(hash, verified);
    }

    pub fn remove(&self, hash: &[u8; 32]) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
    }

    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(until: u64) -> Verified {
        Verified {
            principal: Arc::new(Principal::static_token("t")),
            until,
            issuer: 0,
            kid: None,
        }
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let c = TokenCache::new(2);
        c.insert([1; 32], v(100), 50);
        assert!(c.get(&[1; 32], 100).is_some());
        assert!(c.get(&[1; 32], 101).is_none());
        c.insert([2; 32], v(200), 50);
        c.insert([3; 32], v(200), 150);
        assert_eq!(c.len(), 2);
        assert!(c.get(&[1; 32], 150).is_none());
        c.insert([4; 32], v(300), 150);
        assert_eq!(c.len(), 2);
        assert!(c.get(&[4; 32], 150).is_some());
        let off = TokenCache::new(0);
        off.insert([1; 32], v(100), 0);
        assert!(off.get(&[1; 32], 0).is_none());
    }
}
