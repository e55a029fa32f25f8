//! Abuse limits that span connections: growing delays after failed
//! authentications (per source address, sharpened per person), and
//! counters for connections per source and sessions per person.
//!
//! A delay only ever follows a failure, and only once the failing source
//! is past a small grace: a correct key is answered at once, and a source
//! with no failures of its own is never slowed by what others do (a
//! guesser cannot lock a person out). Failures against a person raise the
//! delay of every source that keeps failing against them past its grace,
//! so many guessers together gain nothing over one.
//!
//! The tables are bounded: entries expire, past a maximum size the oldest
//! are dropped, and persons are counted only when configured (a login name
//! from the wire never becomes a key), so a flood of sources or names
//! cannot grow memory.

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
/// Sources are counted by `source_key` (an IPv6 address by its /64).
/// Failures a source makes before any delay: a client offering a few keys
/// (an agent's, several `-i`) before the right one is not slowed.
pub const SOURCE_GRACE: u32 = 3;
/// Failures against one person (from everywhere) before they sharpen the
/// delays of sources that keep failing against them.
pub const PERSON_GRACE: u32 = 10;

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
    /// `base`: the delay after the first failure past the grace
    /// (`limits.auth_failure_delay_ms`).
    pub fn new(base: Duration) -> Self {
        AuthFailures {
            base,
            by_source: Mutex::default(),
            by_person: Mutex::default(),
        }
    }

    /// Records a failure from `source` (against `person`, when it names a
    /// configured person) and returns how long to wait before answering:
    /// nothing within the source's grace; past it, doubling with the
    /// source's failures or with the person's past theirs, whichever is
    /// more.
    pub fn failed(&self, source: IpAddr, person: Option<&str>) -> Duration {
        let now = Instant::now();
        let by_source = note(&self.by_source, &source_key(source), now);
        let by_person = person.map_or(0, |p| note(&self.by_person, &p.to_string(), now));
        if by_source <= SOURCE_GRACE {
            return Duration::ZERO;
        }
        let level = (by_source - SOURCE_GRACE).max(by_person.saturating_sub(PERSON_GRACE));
        delay_after(level, self.base)
    }

    /// Failures recorded from `source` (for tests and metrics).
    pub fn source_failures(&self, source: IpAddr) -> u32 {
        count(&self.by_source, &source_key(source), Instant::now())
    }

    /// A success clears the source's record (not the person's: a guesser
    /// elsewhere keeps paying for their failures).
    pub fn succeeded(&self, source: IpAddr) {
        self.by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source_key(source));
    }
}

/// The key a source is limited under: an IPv4 address, or an IPv6
/// address's /64 (one subscriber's prefix: rotating addresses inside it
/// must not buy a fresh allowance).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// New unauthenticated connections per source (IPv6: per /64): a token
/// bucket of `burst` tokens refilled at `per_second`. A connection takes a
/// token before any SSH work and gives it back once it logs in, so only
/// what floods look like (handshakes that never log in: ssh-audit's DHEat
/// test, each costing the server a key exchange) spends the source's
/// tokens. A connection that finds none waits for one, up to its login
/// deadline, instead of being reset: twenty `scp` at once from behind one
/// NAT address all get their turn as the first ones log in. The table
/// holds at most `MAX_ENTRIES` sources (an `IpAddr` and a bucket each,
/// about 48 bytes: under 5 MiB); full buckets are dropped first.
pub struct ConnectionRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl ConnectionRate {
    pub fn new(per_second: u32, burst: u32) -> Self {
        ConnectionRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Whether one more connection from `source` is allowed now (taking
    /// its token).
    pub fn allow(&self, source: IpAddr) -> bool {
        self.allow_at(source_key(source), Instant::now())
    }

    /// Waits for a token for a connection from `source`, until
    /// `deadline`; false if none came by then.
    pub async fn wait_turn(&self, source: IpAddr, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.allow(source) {
                return true;
            }
            // The next token comes after 1/per_second; waiters look again
            // then (no order among them: any one of them may take it).
            let next = Duration::from_secs_f64(1.0 / self.per_second.max(0.001));
            let wake = (tokio::time::Instant::now() + next).min(deadline);
            if wake >= deadline {
                tokio::time::sleep_until(deadline).await;
                return self.allow(source);
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Gives a logged-in connection's token back.
    pub fn refund(&self, source: IpAddr) {
        let key = source_key(source);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tokens, _)) = buckets.get_mut(&key) {
            *tokens = (*tokens + 1.0).min(self.burst);
        }
    }

    fn allow_at(&self, key: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
        };
        if buckets.len() >= MAX_ENTRIES && !buckets.contains_key(&key) {
            // A full bucket is the same as none.
            buckets.retain(|_, bucket| refill(*bucket) < self.burst);
            if buckets.len() >= MAX_ENTRIES {
                // Still full of busy sources: forget the longest-quiet half.
                let mut ages: Vec<Instant> = buckets.values().map(|(_, at)| *at).collect();
                ages.sort();
                let cutoff = ages[ages.len() / 2];
                buckets.retain(|_, (_, at)| *at > cutoff);
            }
        }
        let tokens = buckets
            .get(&key)
            .map_or(self.burst, |bucket| refill(*bucket));
        if tokens < 1.0 {
            buckets.insert(key, (tokens, now));
            return false;
        }
        buckets.insert(key, (tokens - 1.0, now));
        true
    }
}

/// Failed web sign-ins per source (IPv6: per /64): a token bucket of
/// `BURST` answered and audited one by one, refilled one a second; past
/// it the source is answered 429 at once and its failures are counted,
/// not audited one by one, so a flood of bad links cannot flood the audit
/// trail (or, with `audit.fail_closed`, refuse others' sessions). The
/// counts are folded into one event per source per interval (`fold`).
pub struct FailedSignIns {
    rate: ConnectionRate,
    folded: Mutex<HashMap<IpAddr, u64>>,
}

/// What to do with a failed sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer and audit it.
    Audit,
    /// Answer 429 and count it into the next folded event.
    Folded,
}

impl Default for FailedSignIns {
    fn default() -> Self {
        FailedSignIns {
            rate: ConnectionRate::new(1, 20),
            folded: Mutex::default(),
        }
    }
}

impl FailedSignIns {
    /// Notes a failed sign-in from `source`.
    pub fn failed(&self, source: IpAddr) -> Failure {
        if self.rate.allow(source) {
            return Failure::Audit;
        }
        let mut folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        if folded.len() < MAX_ENTRIES || folded.contains_key(&source_key(source)) {
            *folded.entry(source_key(source)).or_default() += 1;
        }
        Failure::Folded
    }

    /// The failures counted but not audited since the last call, per
    /// source (emptied).
    pub fn fold(&self) -> Vec<(IpAddr, u64)> {
        let mut folded = self.folded.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: Vec<(IpAddr, u64)> = folded.drain().collect();
        counts.sort();
        counts
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
    fn failed_sign_ins_past_the_burst_are_folded_per_source() {
        let failures = FailedSignIns::default();
        let flood: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let audited = (0..500)
            .filter(|_| failures.failed(flood) == Failure::Audit)
            .count();
        assert!((20..=21).contains(&audited), "{audited}");
        assert_eq!(failures.failed(other), Failure::Audit);
        let folded = failures.fold();
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].0, flood);
        assert_eq!(folded[0].1 as usize, 500 - audited);
        assert!(failures.fold().is_empty());
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let base = Duration::from_millis(250);
        assert_eq!(delay_after(0, base), Duration::ZERO);
        assert_eq!(delay_after(1, base), Duration::from_millis(250));
        assert_eq!(delay_after(3, base), Duration::from_secs(1));
        assert_eq!(delay_after(60, base), Duration::from_secs(8));
    }

    #[test]
    fn failures_delay_only_past_the_grace_and_a_clean_source_never() {
        let base = Duration::from_millis(250);
        let failures = AuthFailures::new(base);
        let guesser: IpAddr = "10.0.0.1".parse().unwrap();
        let alice: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..SOURCE_GRACE {
            assert_eq!(failures.failed(guesser, Some("alice")), Duration::ZERO);
        }
        assert_eq!(failures.failed(guesser, Some("alice")), base);
        assert_eq!(failures.failed(guesser, Some("alice")), base * 2);
        for _ in 0..100 {
            failures.failed(guesser, Some("alice"));
        }
        assert_eq!(failures.failed(guesser, Some("alice")), base * 32);
        // alice's own wrong keys from elsewhere: within her grace, free.
        for _ in 0..SOURCE_GRACE {
            assert_eq!(failures.failed(alice, Some("alice")), Duration::ZERO);
        }
        // Past it, the pressure on alice applies at once.
        assert_eq!(failures.failed(alice, Some("alice")), base * 32);
        failures.succeeded(alice);
        assert_eq!(failures.source_failures(alice), 0);
        assert!(failures.source_failures(guesser) > 100);
    }

    #[test]
    fn unknown_names_are_not_remembered() {
        let failures = AuthFailures::new(Duration::from_millis(1));
        let source: IpAddr = "10.0.0.3".parse().unwrap();
        failures.failed(source, None);
        assert!(failures.by_person.lock().unwrap().is_empty());
    }

    #[test]
    fn connection_rate_allows_a_burst_then_the_rate_per_source() {
        let rate = ConnectionRate::new(5, 10);
        let start = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| rate.allow_at(a, start)).count();
        assert_eq!(allowed, 10);
        // Another source is untouched; a second later, five more.
        assert!(rate.allow_at(b, start));
        let later = start + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| rate.allow_at(a, later)).count(), 5);
    }

    #[test]
    fn ipv6_failures_count_by_their_64() {
        let failures = AuthFailures::new(Duration::from_millis(1));
        for i in 0..=SOURCE_GRACE {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            failures.failed(ip, None);
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert_eq!(failures.source_failures(other), SOURCE_GRACE + 1);
    }

    #[test]
    fn ipv6_sources_are_limited_by_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(one), source_key(two));
        assert_ne!(source_key(one), source_key(other));
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
