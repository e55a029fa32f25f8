//! Abuse limits that span connections: growing delays after failed
//! authentications (per source address and per login person), and
//! counters for connections per source and sessions per person.
//!
//! The tables are bounded: entries expire, and past a maximum size the
//! oldest are dropped, so a flood of sources cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures are forgotten this long after the last one.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// At most this many sources or persons are remembered.
const MAX_ENTRIES: usize = 100_000;
/// Each failure doubles the delay, up to this many times the first one.
const MAX_DOUBLINGS: u32 = 5;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The delay after `count` failures: 0, then `base` doubling up to 32 × base.
pub fn delay_after(count: u32, base: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    base.saturating_mul(1 << count.saturating_sub(1).min(MAX_DOUBLINGS))
}

pub struct AuthFailures {
    base: Duration,
    by_source: Mutex<HashMap<IpAddr, Failures>>,
    by_person: Mutex<HashMap<String, Failures>>,
}

fn note<K: std::hash::Hash + Eq + Clone>(
    table: &Mutex<HashMap<K, Failures>>,
    key: &K,
    now: Instant,
) -> u32 {
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    if table.len() >= MAX_ENTRIES {
        table.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        if table.len() >= MAX_ENTRIES {
            // Still full of fresh entries: forget the oldest half.
            let mut ages: Vec<Instant> = table.values().map(|f| f.last).collect();
            ages.sort();
            let cutoff = ages[ages.len() / 2];
            table.retain(|_, f| f.last > cutoff);
        }
    }
    let entry = table.entry(key.clone()).or_insert(Failures {
        count: 0,
        last: now,
    });
    if now.duration_since(entry.last) >= FAILURE_MEMORY {
        entry.count = 0;
    }
    entry.count = entry.count.saturating_add(1);
    entry.last = now;
    entry.count
}

fn count<K: std::hash::Hash + Eq>(
    table: &Mutex<HashMap<K, Failures>>,
    key: &K,
    now: Instant,
) -> u32 {
    let table = table.lock().unwrap_or_else(|p| p.into_inner());
    table
        .get(key)
        .filter(|f| now.duration_since(f.last) < FAILURE_MEMORY)
        .map_or(0, |f| f.count)
}

impl AuthFailures {
    /// `base`: the delay after the first failure (`limits.auth_failure_delay_ms`).
    pub fn new(base: Duration) -> Self {
        AuthFailures {
            base,
            by_source: Mutex::default(),
            by_person: Mutex::default(),
        }
    }

    /// Records a failure and returns how long to wait before answering.
    pub fn failed(&self, source: IpAddr, person: &str) -> Duration {
        let now = Instant::now();
        let by_source = note(&self.by_source, &source, now);
        let by_person = note(&self.by_person, &person.to_string(), now);
        delay_after(by_source.max(by_person), self.base)
    }

    /// The delay owed before even checking an attempt, from the source's
    /// past failures. Failures against a person slow down only further
    /// failures (`failed`): a guesser elsewhere must not delay the
    /// person's own login with the right key.
    pub fn pending_delay(&self, source: IpAddr) -> Duration {
        let failures = count(&self.by_source, &source, Instant::now());
        delay_after(failures.saturating_sub(1), self.base)
    }

    /// A success clears the source's and person's record.
    pub fn succeeded(&self, source: IpAddr, person: &str) {
        self.by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source);
        self.by_person
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(person);
    }
}

/// Counts live things per key (connections per source, sessions per
/// person); a `Slot` gives its place back when dropped.
pub struct Counter<K: std::hash::Hash + Eq + Clone + Send + 'static> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    limit: usize,
}

pub struct Slot<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone + Send + 'static> Counter<K> {
    pub fn new(limit: usize) -> Self {
        Counter {
            counts: Arc::default(),
            limit,
        }
    }

    /// A slot for `key`, or None when the key is at its limit.
    pub fn take(&self, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let base = Duration::from_millis(250);
        assert_eq!(delay_after(0, base), Duration::ZERO);
        assert_eq!(delay_after(1, base), Duration::from_millis(250));
        assert_eq!(delay_after(3, base), Duration::from_secs(1));
        assert_eq!(delay_after(60, base), Duration::from_secs(8));
    }

    #[test]
    fn failures_count_per_source_and_person_and_success_clears() {
        let failures = AuthFailures::new(Duration::from_millis(250));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(failures.failed(a, "alice"), Duration::from_millis(250));
        assert_eq!(failures.failed(a, "bob"), Duration::from_millis(500));
        // Another source guessing alice is slowed by alice's record.
        assert_eq!(failures.failed(b, "alice"), Duration::from_millis(500));
        // A login from b waits only for b's own failures.
        assert_eq!(failures.pending_delay(b), Duration::ZERO);
        assert_eq!(failures.pending_delay(a), Duration::from_millis(250));
        failures.succeeded(a, "alice");
        assert_eq!(failures.pending_delay(a), Duration::ZERO);
    }

    #[test]
    fn slots_are_limited_and_returned() {
        let counter = Counter::new(2);
        let first = counter.take("x").unwrap();
        let _second = counter.take("x").unwrap();
        assert!(counter.take("x").is_none());
        drop(first);
        assert!(counter.take("x").is_some());
    }
}
