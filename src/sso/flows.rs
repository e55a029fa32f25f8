//! Sign-ins under way: the authorization requests sent to the provider
//! (by `state`, each used once, bound to the browser that began it), and
//! the codes an ssh connection waits on (`/sso/CODE`: single-use, bound
//! to that connection, expiring). Waiting connections are counted per
//! source and in all, apart from the connections logging in with keys.
//!
//! Tables with the time passed in; the only I/O is the one-shot channel a
//! waiting connection is told on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use super::person::Claimed;
use crate::limits::{Counter, Slot};

/// Authorization requests under way are bounded (each is a few hundred
/// bytes).
const MAX_REQUESTS: usize = 10_000;

/// What a sign-in at the provider is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A browser session for the web terminal.
    Browser,
    /// The ssh connection waiting on this code.
    Connection(String),
}

/// An authorization request sent to the provider, as the callback needs
/// it.
#[derive(Debug, Clone)]
pub struct Request {
    pub purpose: Purpose,
    pub nonce: String,
    pub verifier: String,
    /// The value of the cookie set on the browser that began it: a
    /// callback from another browser is refused (login CSRF).
    pub binding: String,
    /// Where the browser that began it is (counted per source).
    pub source: IpAddr,
    pub expires: u64,
}

/// Which connection a code signs in, as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asking {
    pub source: SocketAddr,
    /// The login name the connection asked for (shown escaped).
    pub login: String,
    /// When it asked (unix seconds).
    pub asked: u64,
    pub expires: u64,
}

enum Code {
    Waiting {
        asking: Asking,
        tell: tokio::sync::oneshot::Sender<Claimed>,
    },
    /// Kept until it would have expired, to say "already used".
    Used { expires: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error(
        "this sign-in is unknown or was already completed; start again from the bastion's page or your ssh command"
    )]
    UnknownRequest,
    #[error("this sign-in took too long; start again from the bastion's page or your ssh command")]
    RequestExpired,
    #[error(
        "this sign-in was begun in another browser; start again from the bastion's page or your ssh command"
    )]
    OtherBrowser,
    #[error("this sign-in code is not valid; run your ssh command again for a new one")]
    UnknownCode,
    #[error("this sign-in code was already used; run your ssh command again for a new one")]
    UsedCode,
    #[error("this sign-in code has expired; run your ssh command again for a new one")]
    ExpiredCode,
    #[error("the ssh connection this code belongs to has closed; run your ssh command again")]
    Gone,
    #[error("too many sign-ins are under way on this bastion; try again in a minute")]
    Full,
    #[error(
        "too many sign-ins are under way from your address ({0}); finish one, or wait a few minutes"
    )]
    FullForSource(IpAddr),
}

/// A connection's wait for its code's sign-in, and its places among the
/// waiting ones (given back when it ends).
pub struct Waiter {
    pub code: String,
    pub expires: u64,
    told: tokio::sync::oneshot::Receiver<Claimed>,
    _places: (Slot<IpAddr>, Slot<()>),
}

impl Waiter {
    /// The person once the browser sign-in completes; None if the code
    /// ends first (expired, or the bastion is shutting down).
    pub async fn signed_in(self) -> Option<Claimed> {
        let left = self.expires.saturating_sub(crate::audit::unix_now());
        tokio::time::timeout(std::time::Duration::from_secs(left), self.told)
            .await
            .ok()?
            .ok()
    }
}

pub struct Flows {
    requests: Mutex<HashMap<String, Request>>,
    /// Requests under way from one source (an IPv4 address or an IPv6
    /// /64), as for waiting connections.
    requests_per_source: usize,
    codes: Mutex<HashMap<String, Code>>,
    waiting_per_source: Counter<IpAddr>,
    waiting: Counter<()>,
}

/// 128 random bits, hex: unguessable, and safe in a URL.
fn random_code() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Flows {
    pub fn new(max_per_source: usize, max: usize) -> Flows {
        Flows {
            requests: Mutex::default(),
            requests_per_source: max_per_source,
            codes: Mutex::default(),
            waiting_per_source: Counter::new(max_per_source),
            waiting: Counter::new(max),
        }
    }

    /// Keeps an authorization request until its callback, by `state`.
    pub fn begin(&self, state: String, request: Request, now: u64) -> Result<(), FlowError> {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.retain(|_, r| r.expires > now);
        if requests.len() >= MAX_REQUESTS {
            return Err(FlowError::Full);
        }
        let key = crate::limits::source_key(request.source);
        let from_source = requests
            .values()
            .filter(|r| crate::limits::source_key(r.source) == key)
            .count();
        if from_source >= self.requests_per_source {
            return Err(FlowError::FullForSource(request.source));
        }
        requests.insert(state, request);
        Ok(())
    }

    /// Uses up the request a callback's `state` names, from the browser
    /// holding `binding`. A replayed or forged `state` is unknown.
    pub fn take(&self, state: &str, binding: Option<&str>, now: u64) -> Result<Request, FlowError> {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let request = requests.remove(state).ok_or(FlowError::UnknownRequest)?;
        if request.expires <= now {
            return Err(FlowError::RequestExpired);
        }
        if binding != Some(request.binding.as_str()) {
            return Err(FlowError::OtherBrowser);
        }
        Ok(request)
    }

    /// A new code for a connection from `source` asking for `login`, and
    /// its wait; refused past the waiting limits.
    pub fn open_code(
        &self,
        source: SocketAddr,
        login: &str,
        now: u64,
        secs: u64,
    ) -> Result<Waiter, FlowError> {
        let per_source = self
            .waiting_per_source
            .take(crate::limits::source_key(source.ip()))
            .ok_or(FlowError::FullForSource(source.ip()))?;
        let all = self.waiting.take(()).ok_or(FlowError::Full)?;
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.retain(|_, code| match code {
            Code::Waiting { asking, tell } => asking.expires > now && !tell.is_closed(),
            Code::Used { expires } => *expires > now,
        });
        let code = random_code();
        let (tell, told) = tokio::sync::oneshot::channel();
        let expires = now + secs;
        codes.insert(
            code.clone(),
            Code::Waiting {
                asking: Asking {
                    source,
                    login: crate::login::for_log(login),
                    asked: now,
                    expires,
                },
                tell,
            },
        );
        Ok(Waiter {
            code,
            expires,
            told,
            _places: (per_source, all),
        })
    }

    /// The connection a code would sign in, for its page.
    pub fn asking(&self, code: &str, now: u64) -> Result<Asking, FlowError> {
        let codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        match codes.get(code) {
            None => Err(FlowError::UnknownCode),
            Some(Code::Used { .. }) => Err(FlowError::UsedCode),
            Some(Code::Waiting { asking, .. }) if asking.expires <= now => {
                Err(FlowError::ExpiredCode)
            }
            Some(Code::Waiting { tell, .. }) if tell.is_closed() => Err(FlowError::Gone),
            Some(Code::Waiting { asking, .. }) => Ok(asking.clone()),
        }
    }

    /// Uses up a code: its connection continues as `person`.
    pub fn complete(&self, code: &str, person: Claimed, now: u64) -> Result<Asking, FlowError> {
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        let entry = codes.get_mut(code).ok_or(FlowError::UnknownCode)?;
        let expires = match entry {
            Code::Used { .. } => return Err(FlowError::UsedCode),
            Code::Waiting { asking, .. } if asking.expires <= now => {
                return Err(FlowError::ExpiredCode);
            }
            Code::Waiting { asking, .. } => asking.expires,
        };
        match std::mem::replace(entry, Code::Used { expires }) {
            Code::Waiting { asking, tell } => {
                tell.send(person).map_err(|_| FlowError::Gone)?;
                Ok(asking)
            }
            Code::Used { .. } => Err(FlowError::UsedCode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carol() -> Claimed {
        Claimed {
            name: "carol".into(),
            issuer: "https://id".into(),
            subject: "1".into(),
            groups: vec![],
        }
    }

    fn request(binding: &str, expires: u64) -> Request {
        Request {
            purpose: Purpose::Browser,
            nonce: "n".into(),
            verifier: "v".into(),
            binding: binding.into(),
            source: "192.0.2.1".parse().unwrap(),
            expires,
        }
    }

    #[test]
    fn a_request_is_used_once_in_its_browser_and_time() {
        let flows = Flows::new(2, 10);
        flows.begin("s1".into(), request("b", 100), 0).unwrap();
        assert_eq!(
            flows.take("s1", Some("other"), 1).unwrap_err(),
            FlowError::OtherBrowser
        );
        // A failed callback used it up too: a replay is unknown.
        assert_eq!(
            flows.take("s1", Some("b"), 1).unwrap_err(),
            FlowError::UnknownRequest
        );
        flows.begin("s2".into(), request("b", 100), 0).unwrap();
        flows.take("s2", Some("b"), 99).unwrap();
        assert_eq!(
            flows.take("s2", Some("b"), 99).unwrap_err(),
            FlowError::UnknownRequest
        );
        flows.begin("s3".into(), request("b", 100), 0).unwrap();
        assert_eq!(
            flows.take("s3", Some("b"), 100).unwrap_err(),
            FlowError::RequestExpired
        );
        // Two under way from one address; a third waits for one to end.
        flows.begin("s4".into(), request("b", 200), 100).unwrap();
        flows.begin("s5".into(), request("b", 200), 100).unwrap();
        assert!(matches!(
            flows.begin("s6".into(), request("b", 200), 100),
            Err(FlowError::FullForSource(_))
        ));
        flows.begin("s6".into(), request("b", 300), 200).unwrap();
    }

    #[tokio::test]
    async fn a_code_signs_in_its_connection_once_and_waits_are_bounded() {
        let flows = Flows::new(2, 3);
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let waiter = flows
            .open_code(source, "carol@default/web-0", 10, 300)
            .unwrap();
        let asking = flows.asking(&waiter.code, 11).unwrap();
        assert_eq!(asking.login, "carol@default/web-0");
        let code = waiter.code.clone();
        flows.complete(&code, carol(), 12).unwrap();
        assert_eq!(waiter.signed_in().await, Some(carol()));
        assert_eq!(
            flows.complete(&code, carol(), 13).unwrap_err(),
            FlowError::UsedCode
        );
        assert_eq!(flows.asking(&code, 13).unwrap_err(), FlowError::UsedCode);
        // Expired, and gone with its connection.
        let late = flows.open_code(source, "carol", 10, 300).unwrap();
        assert_eq!(
            flows.complete(&late.code, carol(), 310).unwrap_err(),
            FlowError::ExpiredCode
        );
        drop(late);
        let gone = flows.open_code(source, "carol", 10, 300).unwrap();
        let code = gone.code.clone();
        drop(gone);
        assert_eq!(flows.asking(&code, 11).unwrap_err(), FlowError::Gone);
        // Two wait from one address; a third address's wait still fits
        // the total, a fourth does not.
        let _a = flows.open_code(source, "carol", 10, 300).unwrap();
        let _b = flows.open_code(source, "carol", 10, 300).unwrap();
        assert!(matches!(
            flows.open_code(source, "carol", 10, 300),
            Err(FlowError::FullForSource(_))
        ));
        let other: SocketAddr = "10.0.0.9:1".parse().unwrap();
        let _c = flows.open_code(other, "dave", 10, 300).unwrap();
        assert!(matches!(
            flows.open_code("10.1.0.9:1".parse().unwrap(), "x", 10, 300),
            Err(FlowError::Full)
        ));
    }
}
