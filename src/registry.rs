//! The live sessions of this replica, whatever door they came by (SSH,
//! the web terminal) and whatever they carry (a shell, a command, a file
//! transfer, a forward, a log): every started session registers here and
//! leaves when it ends (`Registered` removes it when dropped, however the
//! session ends).
//!
//! It is what drain waits on, what `ssh PERSON@bastion sessions` lists
//! (one's own), and what the metrics listener lists for operators (all,
//! as JSON).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::audit::{SessionKind, Transport};
use crate::session::control::Activity;

/// One live session, as registered when it started.
struct Entry {
    person: String,
    source: String,
    target: String,
    kind: SessionKind,
    transport: Transport,
    /// Unix seconds.
    started: u64,
    traffic: Activity,
}

/// A live session as listed: who, where, what, since when, and the bytes
/// its client's stream carried so far.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listing {
    pub id: String,
    pub person: String,
    pub source: String,
    pub target: String,
    pub kind: String,
    pub transport: Transport,
    /// RFC 3339, UTC.
    pub started: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The live sessions.
pub struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// How many are live, for waiting until none are.
    count: tokio::sync::watch::Sender<usize>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(BTreeMap::new()),
            count: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A session's place in the registry, released when dropped.
pub struct Registered {
    registry: Arc<Registry>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(&self.id);
    }
}

/// What a session registers with.
pub struct NewSession<'a> {
    pub id: &'a str,
    pub person: &'a str,
    pub source: &'a str,
    pub target: &'a str,
    pub kind: &'a SessionKind,
    pub transport: Transport,
    pub traffic: Activity,
}

impl Registry {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a started session until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, session: NewSession<'_>) -> Registered {
        let mut entries = self.entries();
        entries.insert(
            session.id.to_string(),
            Entry {
                person: session.person.to_string(),
                source: session.source.to_string(),
                target: session.target.to_string(),
                kind: session.kind.clone(),
                transport: session.transport,
                started: crate::audit::unix_now(),
                traffic: session.traffic,
            },
        );
        self.count.send_replace(entries.len());
        Registered {
            registry: self.clone(),
            id: session.id.to_string(),
        }
    }

    fn remove(&self, id: &str) {
        let mut entries = self.entries();
        entries.remove(id);
        self.count.send_replace(entries.len());
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live sessions, oldest first; only `person`'s when given.
    pub fn list(&self, person: Option<&str>) -> Vec<Listing> {
        let mut listed: Vec<Listing> = self
            .entries()
            .iter()
            .filter(|(_, e)| person.is_none_or(|p| p == e.person))
            .map(|(id, e)| Listing {
                id: id.clone(),
                person: e.person.clone(),
                source: e.source.clone(),
                target: e.target.clone(),
                kind: e.kind.label().to_string(),
                transport: e.transport,
                started: rfc3339(e.started),
                bytes_in: e.traffic.bytes_in.load(Ordering::Relaxed),
                bytes_out: e.traffic.bytes_out.load(Ordering::Relaxed),
            })
            .collect();
        listed.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
        listed
    }

    /// Waits until no session is live, or `within` has passed; true when
    /// none is.
    pub async fn wait_empty(&self, within: Duration) -> bool {
        let mut count = self.count.subscribe();
        tokio::time::timeout(within, count.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// What `ssh PERSON@bastion sessions` prints: one line per live session
/// of the person, under a header, or a line saying there is none.
pub fn table(listed: &[Listing]) -> String {
    if listed.is_empty() {
        return "no open sessions\n".into();
    }
    let rows: Vec<[String; 7]> = listed
        .iter()
        .map(|l| {
            [
                l.id.chars().take(12).collect(),
                if l.target.is_empty() {
                    "-".into()
                } else {
                    l.target.clone()
                },
                l.kind.clone(),
                l.transport.label().to_string(),
                l.started.clone(),
                human_bytes(l.bytes_in),
                human_bytes(l.bytes_out),
            ]
        })
        .collect();
    let header = ["ID", "TARGET", "KIND", "DOOR", "STARTED", "IN", "OUT"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn rfc3339(unix: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(unix).unwrap_or(i64::MAX), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session<'a>(id: &'a str, person: &'a str, kind: &'a SessionKind) -> NewSession<'a> {
        NewSession {
            id,
            person,
            source: "127.0.0.1",
            target: "default/web-0",
            kind,
            transport: Transport::Ssh,
            traffic: Activity::default(),
        }
    }

    #[tokio::test]
    async fn sessions_leave_when_their_guard_drops_and_drain_sees_it() {
        let registry = Arc::new(Registry::default());
        let shell = SessionKind::Shell;
        let alice = registry.register(session("a1", "alice", &shell));
        let bob = registry.register(session("b1", "bob", &shell));
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.list(Some("alice")).len(), 1);
        assert_eq!(registry.list(None).len(), 2);
        assert!(!registry.wait_empty(Duration::from_millis(50)).await);
        drop(alice);
        assert_eq!(registry.list(Some("alice")), Vec::new());
        let waiting = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.wait_empty(Duration::from_secs(5)).await })
        };
        drop(bob);
        assert!(waiting.await.unwrap());
    }

    #[test]
    fn the_table_names_every_session_with_its_bytes() {
        let registry = Arc::new(Registry::default());
        let kind = SessionKind::Exec {
            command: "wc -c".into(),
        };
        let traffic = Activity::default();
        traffic.bytes_in.store(5 * 1024 * 1024, Ordering::Relaxed);
        let _held = registry.register(NewSession {
            traffic,
            ..session("0123456789abcdef", "alice", &kind)
        });
        let table = table(&registry.list(Some("alice")));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("ID "), "{table}");
        assert!(
            lines[1].starts_with("0123456789ab  default/web-0  exec  ssh  "),
            "{table}"
        );
        assert!(lines[1].ends_with("5.0 MiB  0 B"), "{table}");
        assert_eq!(super::table(&[]), "no open sessions\n");
    }
}
