//! Sign-in for the web terminal without an identity system of its own:
//! a one-time link minted for a person who is logged in over SSH, and the
//! browser sessions that links turn into.
//!
//! A link works once and for `link_secs`; a browser session ends when it
//! has been unused for `session_idle_secs`, `session_max_secs` after sign-in,
//! or when the credential that minted it ends (a certificate's
//! `valid_before`), whichever comes first. A session holds a `Grant` and
//! nothing SSH-specific, so another way of signing in (OIDC) can mint the
//! same session with `Logins::sign_in`.
//!
//! Pure state with the time passed in: no I/O, no clock.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cluster::Identity;
use crate::revocation::Credential;

/// Outstanding links and sessions are bounded: past this, minting a link
/// or signing in is refused until old ones expire (each is a few hundred
/// bytes; this caps the tables at a few MiB).
const MAX_ENTRIES: usize = 10_000;

/// Who a link or browser session signs in.
#[derive(Debug, Clone)]
pub struct Grant {
    pub person: String,
    pub identity: Identity,
    /// What minted it, checked again on every request (a revoked key or a
    /// removed person ends the browser session too); None for a sign-in
    /// with nothing to re-check.
    pub credential: Option<Credential>,
    /// When the browser session that carries it ends at the latest
    /// (`web.session_max_secs`, or the credential's end): what it opened
    /// ends then too. None before sign-in.
    pub ends: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this sign-in link was already used; run ssh PERSON@BASTION web for a new one")]
    Used,
    #[error("this sign-in link has expired; run ssh PERSON@BASTION web for a new one")]
    Expired,
    #[error("this sign-in link is not valid; run ssh PERSON@BASTION web for a new one")]
    Unknown,
    #[error("too many sign-in links or sessions are open on this bastion; try again in a minute")]
    Full,
    #[error(
        "{person} has {limit} unused sign-in links (web.max_links_per_person); use one, or wait {secs} s for them to expire"
    )]
    PersonLinks {
        person: String,
        limit: usize,
        secs: u64,
    },
    #[error(
        "{person} has {limit} browser sessions (web.max_sessions_per_person); sign out of one, or wait for one to end"
    )]
    PersonSessions { person: String, limit: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("you are not signed in; run ssh PERSON@BASTION web for a sign-in link")]
    Missing,
    #[error("your browser session has ended; run ssh PERSON@BASTION web for a new sign-in link")]
    Ended,
}

enum Link {
    Fresh {
        grant: Box<Grant>,
        expires: u64,
    },
    /// Kept until it would have expired, to say "already used".
    Used {
        expires: u64,
    },
}

struct BrowserSession {
    grant: Grant,
    last_used: u64,
    ends: u64,
}

/// A new browser session: its cookie value and lifetime.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub token: String,
    /// Seconds until the session's absolute end (the cookie's Max-Age).
    pub max_age: u64,
    pub person: String,
}

pub struct Logins {
    link_secs: u64,
    idle_secs: u64,
    max_secs: u64,
    /// Per person, beside the bastion-wide `MAX_ENTRIES`: one person
    /// cannot fill the tables everyone shares.
    links_per_person: usize,
    sessions_per_person: usize,
    links: Mutex<HashMap<String, Link>>,
    sessions: Mutex<HashMap<String, BrowserSession>>,
    /// Browser sessions ended before their time (sign-out, revocation),
    /// with why: whatever they opened ends too (`web::admission`).
    ended: tokio::sync::broadcast::Sender<(String, String)>,
}

/// 256 random bits, hex: unguessable, and safe in a URL and a cookie.
fn token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Logins {
    pub fn new(config: &crate::config::WebConfig) -> Logins {
        Logins {
            link_secs: config.link_secs,
            idle_secs: config.session_idle_secs,
            max_secs: config.session_max_secs,
            links_per_person: config.max_links_per_person,
            sessions_per_person: config.max_sessions_per_person,
            links: Mutex::default(),
            sessions: Mutex::default(),
            // Sign-outs are rare; a receiver that lags behind this many
            // misses some (see `web::admission`).
            ended: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// Seconds a link stays valid.
    pub fn link_secs(&self) -> u64 {
        self.link_secs
    }

    /// A new one-time link token for `grant`.
    pub fn mint_link(&self, grant: Grant, now: u64) -> Result<String, LinkError> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|_, link| match link {
            Link::Fresh { expires, .. } | Link::Used { expires } => *expires > now,
        });
        if links.len() >= MAX_ENTRIES {
            return Err(LinkError::Full);
        }
        let unused = links
            .values()
            .filter(|link| matches!(link, Link::Fresh { grant: g, .. } if g.person == grant.person))
            .count();
        if unused >= self.links_per_person {
            return Err(LinkError::PersonLinks {
                person: grant.person,
                limit: self.links_per_person,
                secs: self.link_secs,
            });
        }
        let token = token();
        let expires = now + self.link_secs;
        links.insert(
            token.clone(),
            Link::Fresh {
                grant: Box::new(grant),
                expires,
            },
        );
        Ok(token)
    }

    /// Whose a link is, without using it up (the page that asks before
    /// signing in names the person).
    pub fn person_of(&self, link: &str, now: u64) -> Result<String, LinkError> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        match links.get(link) {
            None => Err(LinkError::Unknown),
            Some(Link::Used { .. }) => Err(LinkError::Used),
            Some(Link::Fresh { expires, .. }) if *expires <= now => Err(LinkError::Expired),
            Some(Link::Fresh { grant, .. }) => Ok(grant.person.clone()),
        }
    }

    /// Uses up a link and signs its person in.
    pub fn redeem(&self, link: &str, now: u64) -> Result<SignedIn, LinkError> {
        let grant = {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            let Some(entry) = links.get_mut(link) else {
                return Err(LinkError::Unknown);
            };
            match entry {
                Link::Used { .. } => return Err(LinkError::Used),
                Link::Fresh { expires, .. } if *expires <= now => {
                    links.remove(link);
                    return Err(LinkError::Expired);
                }
                Link::Fresh { expires, .. } => {
                    let expires = *expires;
                    match std::mem::replace(entry, Link::Used { expires }) {
                        Link::Fresh { grant, .. } => *grant,
                        Link::Used { .. } => unreachable!("matched as fresh above"),
                    }
                }
            }
        };
        self.sign_in(grant, now)
    }

    /// A browser session for `grant` (from a link, or another sign-in).
    pub fn sign_in(&self, grant: Grant, now: u64) -> Result<SignedIn, LinkError> {
        let credential_end = grant
            .credential
            .as_ref()
            .and_then(Credential::expires)
            .unwrap_or(u64::MAX);
        let ends = (now + self.max_secs).min(credential_end);
        if ends <= now {
            return Err(LinkError::Expired);
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let idle = self.idle_secs;
        sessions.retain(|_, s| s.ends > now && s.last_used + idle > now);
        if sessions.len() >= MAX_ENTRIES {
            return Err(LinkError::Full);
        }
        let open = sessions
            .values()
            .filter(|s| s.grant.person == grant.person)
            .count();
        if open >= self.sessions_per_person {
            return Err(LinkError::PersonSessions {
                person: grant.person,
                limit: self.sessions_per_person,
            });
        }
        let token = token();
        let person = grant.person.clone();
        sessions.insert(
            token.clone(),
            BrowserSession {
                grant,
                last_used: now,
                ends,
            },
        );
        Ok(SignedIn {
            token,
            max_age: ends - now,
            person,
        })
    }

    /// The grant of a live browser session, marked as used now.
    pub fn session(&self, token: &str, now: u64) -> Result<Grant, SessionError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(session) = sessions.get_mut(token) else {
            return Err(SessionError::Missing);
        };
        if session.ends <= now || session.last_used + self.idle_secs <= now {
            sessions.remove(token);
            return Err(SessionError::Ended);
        }
        session.last_used = now;
        Ok(Grant {
            ends: Some(session.ends),
            ..session.grant.clone()
        })
    }

    /// Whether a browser session is still open at `now` (without marking
    /// it used).
    pub fn is_open(&self, token: &str, now: u64) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(token)
            .is_some_and(|s| s.ends > now && s.last_used + self.idle_secs > now)
    }

    /// Ends a browser session (sign-out, or its credential no longer
    /// holds), and with it what it opened.
    pub fn end(&self, token: &str, why: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
        let _ = self.ended.send((token.to_string(), why.to_string()));
    }

    /// Tells of browser sessions ended before their time.
    pub fn ended(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.ended.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> Logins {
        Logins::new(&crate::config::WebConfig {
            link_secs: 60,
            session_idle_secs: 600,
            session_max_secs: 3600,
            ..Default::default()
        })
    }

    #[test]
    fn one_person_cannot_fill_the_shared_tables() {
        let logins = Logins::new(&crate::config::WebConfig {
            max_links_per_person: 2,
            max_sessions_per_person: 1,
            ..Default::default()
        });
        let bob = || Grant {
            person: "bob".into(),
            ..grant(None)
        };
        let first = logins.mint_link(grant(None), 0).unwrap();
        logins.mint_link(grant(None), 0).unwrap();
        assert!(matches!(
            logins.mint_link(grant(None), 0),
            Err(LinkError::PersonLinks { limit: 2, .. })
        ));
        // Others are not held back.
        logins.mint_link(bob(), 0).unwrap();
        // A used link frees its place; a second browser session does not fit.
        logins.redeem(&first, 1).unwrap();
        logins.mint_link(grant(None), 1).unwrap();
        assert!(matches!(
            logins.sign_in(grant(None), 1),
            Err(LinkError::PersonSessions { limit: 1, .. })
        ));
        logins.sign_in(bob(), 1).unwrap();
    }

    fn grant(valid_before: Option<u64>) -> Grant {
        let key =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .expect("key")
                .public_key()
                .key_data()
                .clone();
        Grant {
            ends: None,
            person: "alice".into(),
            identity: Identity {
                user: "alice".into(),
                groups: vec![],
            },
            credential: Some(match valid_before {
                None => Credential::Key {
                    person: "alice".into(),
                    key,
                    identity: None,
                },
                Some(valid_before) => Credential::Certificate {
                    person: "alice".into(),
                    key,
                    serial: 1,
                    key_id: "alice".into(),
                    valid_before,
                    ca: russh::keys::PrivateKey::random(
                        &mut rand::rng(),
                        russh::keys::Algorithm::Ed25519,
                    )
                    .expect("ca")
                    .public_key()
                    .fingerprint(russh::keys::HashAlg::Sha256),
                    source_address: None,
                    claimed: None,
                    identity: None,
                },
            }),
        }
    }

    #[test]
    fn a_link_signs_in_once_and_only_within_its_time() {
        let logins = logins();
        let link = logins.mint_link(grant(None), 1000).unwrap();
        let signed_in = logins.redeem(&link, 1059).unwrap();
        assert_eq!(signed_in.max_age, 3600);
        assert_eq!(logins.redeem(&link, 1059).unwrap_err(), LinkError::Used);
        let late = logins.mint_link(grant(None), 1000).unwrap();
        assert_eq!(logins.redeem(&late, 1060).unwrap_err(), LinkError::Expired);
        assert_eq!(logins.redeem("nope", 1000).unwrap_err(), LinkError::Unknown);
    }

    #[test]
    fn sessions_end_when_idle_at_their_limit_and_with_the_certificate() {
        let logins = logins();
        let token = logins.sign_in(grant(None), 0).unwrap().token;
        assert!(logins.session(&token, 599).is_ok());
        assert!(logins.session(&token, 1198).is_ok());
        assert_eq!(
            logins.session(&token, 1798).unwrap_err(),
            SessionError::Ended
        );
        let token = logins.sign_in(grant(None), 0).unwrap().token;
        for now in (500..3600).step_by(500) {
            assert!(logins.session(&token, now).is_ok());
        }
        assert_eq!(
            logins.session(&token, 3600).unwrap_err(),
            SessionError::Ended
        );
        // A certificate valid for 100 more seconds bounds the session.
        let signed_in = logins.sign_in(grant(Some(100)), 0).unwrap();
        assert_eq!(signed_in.max_age, 100);
        assert!(logins.session(&signed_in.token, 99).is_ok());
        assert!(logins.session(&signed_in.token, 100).is_err());
        assert_eq!(
            logins.sign_in(grant(Some(100)), 100).unwrap_err(),
            LinkError::Expired
        );
        assert_eq!(
            logins.session("unknown", 0).unwrap_err(),
            SessionError::Missing
        );
    }
}
