//! The simulator's object store: every API object as JSON, one global
//! resourceVersion counter, optimistic concurrency and a watch history.
//!
//! It knows nothing of HTTP or authorization; `sim::api` wraps it. Objects
//! are kept as `serde_json::Value` so any kind can be stored the way the API
//! server stores it: metadata is filled in here (uid, resourceVersion,
//! creationTimestamp), everything else is the caller's.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How many past events a watch can resume from. A client asking for an
/// older resourceVersion gets 410 Gone and relists, as with etcd compaction.
const WATCH_HISTORY: usize = 20_000;

/// Identifies a stored object: resource ("pods", "leases"), namespace ("" for
/// cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub key: Key,
    pub object: Value,
    pub resource_version: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict,
    #[error("too old resource version: {0}")]
    Gone(u64),
}

struct Inner {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
}

pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    rfc3339(now)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil from days,
/// Howard Hinnant's algorithm), the form Kubernetes uses for timestamps.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now() -> String {
    now_rfc3339()
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Store {
            inner: Mutex::new(Inner {
                revision: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: every
        // mutation below is a single insert/remove.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Objects of a resource, in one namespace or (None) all of them, and the
    /// revision the list is consistent with.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.revision)
    }

    fn record(&self, inner: &mut Inner, kind: EventType, key: Key, object: Value) {
        let event = Event {
            kind,
            key,
            object,
            resource_version: inner.revision,
        };
        if inner.history.len() == WATCH_HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
    }

    pub fn create(&self, key: Key, mut object: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        inner.revision += 1;
        let meta = metadata_mut(&mut object);
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("resourceVersion".into(), json!(inner.revision.to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("name".into(), json!(key.name));
        if !key.namespace.is_empty() {
            meta.insert("namespace".into(), json!(key.namespace));
        }
        meta.remove("deletionTimestamp");
        inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, EventType::Added, key, object.clone());
        Ok(object)
    }

    /// Replaces an object. When the new object carries a resourceVersion it
    /// must match the stored one (409 Conflict otherwise), as with etcd's
    /// compare-and-swap under the API server. An update that changes
    /// nothing is not written: the resourceVersion stays and no watch
    /// event is sent, as the API server's storage short-circuits it (so
    /// kubectl says "patched (no change)").
    pub fn update(&self, key: &Key, mut object: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let current = inner.objects.get(key).ok_or(StoreError::NotFound)?;
        let current_meta = current.get("metadata").cloned().unwrap_or(json!({}));
        let wanted = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if let Some(wanted) = wanted
            && Some(wanted.as_str()) != current_meta.get("resourceVersion").and_then(Value::as_str)
        {
            return Err(StoreError::Conflict);
        }
        let meta = metadata_mut(&mut object);
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "resourceVersion",
            // Set by a graceful deletion; no update changes them.
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match current_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        if object == *current {
            return Ok(object);
        }
        inner.revision += 1;
        metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(inner.revision.to_string()));
        inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, EventType::Modified, key.clone(), object.clone());
        Ok(object)
    }

    /// Read-modify-write under the store lock: for the simulator's own
    /// controllers, which must not race with clients.
    pub fn modify(
        &self,
        key: &Key,
        change: impl FnOnce(&mut Value) -> bool,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let mut object = inner
            .objects
            .get(key)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if !change(&mut object) {
            return Ok(object);
        }
        inner.revision += 1;
        metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(inner.revision.to_string()));
        inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, EventType::Modified, key.clone(), object.clone());
        Ok(object)
    }

    pub fn delete(&self, key: &Key) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let mut object = inner.objects.remove(key).ok_or(StoreError::NotFound)?;
        inner.revision += 1;
        let meta = metadata_mut(&mut object);
        meta.insert("resourceVersion".into(), json!(inner.revision.to_string()));
        meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        self.record(&mut inner, EventType::Deleted, key.clone(), object.clone());
        Ok(object)
    }

    /// Subscribes to events after `since`: the missed ones from history, then
    /// a live receiver. Subscribing and replaying happen under one lock so no
    /// event falls between them.
    pub fn watch(
        &self,
        since: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), StoreError> {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        if let Some(oldest) = inner.history.front()
            && since + 1 < oldest.resource_version
            && since != 0
        {
            return Err(StoreError::Gone(since));
        }
        let missed = inner
            .history
            .iter()
            .filter(|e| e.resource_version > since)
            .cloned()
            .collect();
        Ok((missed, receiver))
    }
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().expect("just made an object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_update_conflicts() {
        let store = Store::new();
        let key = Key::new("leases", "ns", "a");
        let created = store.create(key.clone(), json!({"spec": {}})).unwrap();
        let mut changed = created.clone();
        changed["spec"]["holderIdentity"] = json!("me");
        let first = store.update(&key, changed.clone()).unwrap();
        assert_eq!(store.update(&key, changed), Err(StoreError::Conflict));
        assert!(store.update(&key, first).is_ok());
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_the_resource_version() {
        let store = Store::new();
        let key = Key::new("leases", "ns", "a");
        let created = store.create(key.clone(), json!({"spec": {}})).unwrap();
        let (_, mut events) = store.watch(store.revision()).unwrap();
        assert_eq!(store.update(&key, created.clone()), Ok(created.clone()));
        assert_eq!(
            store.revision().to_string(),
            created["metadata"]["resourceVersion"]
        );
        assert!(events.try_recv().is_err(), "no watch event for a no-op");
    }

    #[test]
    fn watch_replays_after_revision() {
        let store = Store::new();
        let a = store.create(Key::new("pods", "d", "a"), json!({})).unwrap();
        let rv: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        store.create(Key::new("pods", "d", "b"), json!({})).unwrap();
        let (missed, _) = store.watch(rv).unwrap();
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].key.name, "b");
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
