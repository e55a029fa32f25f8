//! The login-name grammar: who is logging in and what they want to reach.
//!
//! OpenSSH splits `user@host` at the last `@`, so `ssh alice@shop/web-0@bastion`
//! sends the user name `alice@shop/web-0`. Forms:
//!
//! | user name                  | target                                   |
//! |----------------------------|------------------------------------------|
//! | `alice`                    | none: a list of the syntax and targets   |
//! | `alice@node-1`             | root shell on node `node-1`              |
//! | `alice@shop/web-0`         | pod `web-0` in `shop`, default container |
//! | `alice@shop/web-0/sidecar` | that container                           |
//! | `alice@shop/web-0/app.debug` | a debug container beside `app`         |
//! | `alice@shop/web-0/app.logs`  | `app`'s log                            |
//!
//! The container part may end in `.debug` or `.logs` (`/.debug` and
//! `/.logs` name the default container): container names are DNS-1123
//! labels and cannot hold a dot, so the suffix is unambiguous.
//!
//! `+` may stand for `/` (`alice@shop+web-0+sidecar`): scp and sftp take an
//! argument with `/` before `:` for a local path, and `+` cannot occur in
//! Kubernetes names. Every part is checked against the Kubernetes naming
//! rules here, before any API call, so nothing from a login name reaches the
//! API or a shell unchecked.

use std::fmt;

/// The syntax, as shown to a user who got it wrong.
pub const SYNTAX: &str = "log in as USER@NODE, USER@NAMESPACE/POD[/CONTAINER] or USER@NAMESPACE+POD[+CONTAINER]; CONTAINER.debug for a debug container beside it, CONTAINER.logs for its log (.debug and .logs alone: the default container)";

/// The longest user name accepted; Kubernetes names are at most 253
/// characters, and a name this long is an attack, not a typo.
const MAX_LOGIN_NAME: usize = 600;

/// How much of a login name from the wire logs and audit events show.
const SHOWN_LOGIN_NAME: usize = 128;

/// A login name as logs and the audit trail show it before it is known to
/// be valid: escaped (control and non-ASCII characters as `\u{..}`), cut at
/// 128 characters with its full length noted. A name can be as long as an
/// SSH packet (256 KiB); none of that reaches a log line.
pub fn for_log(raw: &str) -> String {
    let shown: String = raw
        .chars()
        .take(SHOWN_LOGIN_NAME)
        .flat_map(char::escape_default)
        .collect();
    if raw.chars().nth(SHOWN_LOGIN_NAME).is_some() {
        format!("{shown}...({} bytes)", raw.len())
    } else {
        shown
    }
}

/// The person part of a login name from the wire, if the name is within
/// the length limit and the part is a valid person name; else None (and
/// nothing of it is stored).
pub fn person_of(raw: &str) -> Option<&str> {
    if raw.len() > MAX_LOGIN_NAME {
        return None;
    }
    let person = raw.split('@').next()?;
    validate_person(person).ok().map(|()| person)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node {
        node: String,
    },
    Container {
        namespace: String,
        pod: String,
        container: Option<String>,
        view: View,
    },
}

/// What a container target opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// The container itself.
    #[default]
    Container,
    /// A debug (ephemeral) container targeting it: `CONTAINER.debug`.
    Debug,
    /// Its log, as `kubectl logs` shows it: `CONTAINER.logs`.
    Logs,
}

impl View {
    /// The login-name suffix that selects this view.
    pub fn suffix(self) -> &'static str {
        match self {
            View::Container => "",
            View::Debug => ".debug",
            View::Logs => ".logs",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node { node } => write!(f, "node/{node}"),
            Target::Container {
                namespace,
                pod,
                container,
                view,
            } => {
                write!(f, "{namespace}/{pod}")?;
                match (container, view) {
                    (None, View::Container) => Ok(()),
                    (container, view) => write!(
                        f,
                        "/{}{}",
                        container.as_deref().unwrap_or(""),
                        view.suffix()
                    ),
                }
            }
        }
    }
}

/// A parsed login name: the person, and the target if one was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    pub person: String,
    pub target: Option<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the login name is empty; {SYNTAX}")]
    Empty,
    #[error("the login name is too long ({0} bytes); {SYNTAX}")]
    TooLong(usize),
    #[error("{what} {value:?} is not a valid Kubernetes name: {why}; {SYNTAX}")]
    BadPart {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("{0:?} has too many parts; {SYNTAX}")]
    TooManyParts(String),
    #[error("{0:?} mixes '/' and '+' separators; use one of them; {SYNTAX}")]
    MixedSeparators(String),
}

/// Checks a DNS-1123 label (`max` 63) or subdomain (`max` 253).
pub fn validate_kubernetes_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (max > 63 && c == '.')
    };
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{bad:?} is not allowed (only lowercase letters, digits, '-'{})",
            if max > 63 { " and '.'" } else { "" }
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("it must start and end with a letter or digit".into());
    }
    if max > 63
        && name
            .split('.')
            .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
    {
        return Err("each '.'-separated part must start and end with a letter or digit".into());
    }
    Ok(())
}

/// The person part: a config user name (letters, digits, `.`, `_`, `-`).
pub fn validate_person(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || name.starts_with(['.', '-'])
    {
        return Err(format!(
            "{name:?} may only hold letters, digits, '.', '_' and '-' (not first)"
        ));
    }
    Ok(())
}

impl LoginName {
    pub fn parse(raw: &str) -> Result<Self, LoginError> {
        if raw.is_empty() {
            return Err(LoginError::Empty);
        }
        if raw.len() > MAX_LOGIN_NAME {
            return Err(LoginError::TooLong(raw.len()));
        }
        let (person, rest) = match raw.split_once('@') {
            Some((person, rest)) => (person, Some(rest)),
            None => (raw, None),
        };
        validate_person(person).map_err(|why| LoginError::BadPart {
            what: "user",
            value: person.into(),
            why,
        })?;
        let Some(rest) = rest else {
            return Ok(LoginName {
                person: person.into(),
                target: None,
            });
        };
        if rest.contains('/') && rest.contains('+') {
            return Err(LoginError::MixedSeparators(rest.into()));
        }
        let parts: Vec<&str> = rest.split(['/', '+']).collect();
        let part = |what: &'static str, value: &str, max: usize| {
            validate_kubernetes_name(value, max).map_err(|why| LoginError::BadPart {
                what,
                value: value.into(),
                why,
            })
        };
        let target = match parts.as_slice() {
            [node] => {
                part("node", node, 253)?;
                Target::Node {
                    node: node.to_string(),
                }
            }
            [namespace, pod, container @ ..] if container.len() <= 1 => {
                part("namespace", namespace, 63)?;
                part("pod", pod, 253)?;
                let (container, view) = match container.first() {
                    None => (None, View::Container),
                    Some(last) => {
                        let (name, view) = [View::Debug, View::Logs]
                            .into_iter()
                            .find_map(|v| last.strip_suffix(v.suffix()).map(|n| (n, v)))
                            .unwrap_or((last, View::Container));
                        if name.is_empty() && view != View::Container {
                            (None, view)
                        } else {
                            part("container", name, 63)?;
                            (Some(name.to_string()), view)
                        }
                    }
                };
                Target::Container {
                    namespace: namespace.to_string(),
                    pod: pod.to_string(),
                    container,
                    view,
                }
            }
            _ => return Err(LoginError::TooManyParts(rest.into())),
        };
        Ok(LoginName {
            person: person.into(),
            target: Some(target),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(ns: &str, pod: &str, c: Option<&str>) -> Option<Target> {
        viewed(ns, pod, c, View::Container)
    }

    fn viewed(ns: &str, pod: &str, c: Option<&str>, view: View) -> Option<Target> {
        Some(Target::Container {
            namespace: ns.into(),
            pod: pod.into(),
            container: c.map(Into::into),
            view,
        })
    }

    #[test]
    fn debug_and_logs_suffixes_select_a_view_of_the_container() {
        for (raw, expected, shown) in [
            (
                "alice@shop/api-0/app.debug",
                viewed("shop", "api-0", Some("app"), View::Debug),
                "shop/api-0/app.debug",
            ),
            (
                "alice@shop+api-0+app.debug",
                viewed("shop", "api-0", Some("app"), View::Debug),
                "shop/api-0/app.debug",
            ),
            (
                "alice@shop/api-0/.debug",
                viewed("shop", "api-0", None, View::Debug),
                "shop/api-0/.debug",
            ),
            (
                "alice@shop/web-0/app.logs",
                viewed("shop", "web-0", Some("app"), View::Logs),
                "shop/web-0/app.logs",
            ),
            (
                "alice@shop+web-0+.logs",
                viewed("shop", "web-0", None, View::Logs),
                "shop/web-0/.logs",
            ),
        ] {
            let target = LoginName::parse(raw).unwrap().target;
            assert_eq!(target, expected, "{raw}");
            assert_eq!(target.unwrap().to_string(), shown, "{raw}");
        }
        for bad in [
            "alice@shop/api-0/app.shell",
            "alice@shop/api-0/app.debug.logs",
            "alice@shop/api-0/app.logs.debug",
            "alice@shop/api-0/.",
            "alice@shop/api-0/app.",
            "alice@shop/api-0/-.debug",
            "alice@shop/api-0/.debug/x",
        ] {
            let error = LoginName::parse(bad).expect_err(bad).to_string();
            assert!(error.contains("log in as USER@NODE"), "{bad}: {error}");
        }
    }

    #[test]
    fn every_documented_form_parses() {
        assert_eq!(LoginName::parse("alice").unwrap().target, None);
        assert_eq!(
            LoginName::parse("alice@node-1").unwrap().target,
            Some(Target::Node {
                node: "node-1".into()
            })
        );
        assert_eq!(
            LoginName::parse("alice@shop/web-0").unwrap().target,
            container("shop", "web-0", None)
        );
        assert_eq!(
            LoginName::parse("alice@shop/web-0/sidecar").unwrap().target,
            container("shop", "web-0", Some("sidecar"))
        );
        assert_eq!(
            LoginName::parse("alice@shop+web-0").unwrap().target,
            container("shop", "web-0", None)
        );
        assert_eq!(
            LoginName::parse("alice@shop+web-0+sidecar").unwrap().target,
            container("shop", "web-0", Some("sidecar"))
        );
        assert_eq!(
            LoginName::parse("alice@ip-10-0-0-1.ec2.internal")
                .unwrap()
                .target,
            Some(Target::Node {
                node: "ip-10-0-0-1.ec2.internal".into()
            })
        );
        assert_eq!(
            LoginName::parse("alice.smith_2@shop/web-0").unwrap().person,
            "alice.smith_2"
        );
    }

    #[test]
    fn hostile_names_are_refused_with_the_syntax() {
        let long = format!("alice@{}", "a".repeat(700));
        let long_label = format!("alice@{}/web", "a".repeat(64));
        for bad in [
            "",
            "@node-1",
            "alice@",
            "alice@/web-0",
            "alice@shop/",
            "alice@shop//web",
            "alice@shop/web-0/",
            "alice@../etc",
            "alice@shop/..",
            "alice@shop/web;rm -rf /",
            "alice@shop/$(id)",
            "alice@shop/`id`",
            "alice@shop/web 0",
            "alice@Shop/web",
            "alice@shop/wéb",
            "alice@shop/web\n0",
            "alice@shop/web-0/a/b",
            "alice@shop+web/x",
            "alice@-node",
            "alice@node-",
            "alice@shop/web-0/side.car",
            "al ice@node-1",
            "alice@a@b",
            "alice@shop/web\0",
            &long,
            &long_label,
            "-alice@node-1",
        ] {
            let err = LoginName::parse(bad).expect_err(bad);
            assert!(
                err.to_string().contains("log in as USER@NODE"),
                "{bad:?}: {err}"
            );
            assert!(
                !err.to_string().contains('\n') || bad.contains('\n'),
                "{bad:?}: {err}"
            );
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A DNS-1123 label as Kubernetes allows it.
        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?"
        }

        proptest! {
            /// Whatever arrives as a user name: no panic; an accepted name
            /// holds only Kubernetes-name characters in its target (so none
            /// can reach a shell or URL as anything but a name); a refusal
            /// is one printable line.
            #[test]
            fn any_input_is_parsed_or_refused_in_one_line(raw in "\\PC{0,80}|[a-z0-9@/+.;$`'\"\\\\ \n-]{0,80}") {
                match LoginName::parse(&raw) {
                    Ok(name) => {
                        validate_person(&name.person).unwrap();
                        if let Some(target) = name.target {
                            let text = target.to_string();
                            prop_assert!(text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-./".contains(c)), "{text}");
                        }
                    }
                    Err(error) => {
                        let message = error.to_string();
                        prop_assert!(!message.chars().any(char::is_control), "{message:?}");
                    }
                }
            }

            /// Both spellings of a container target name the same target,
            /// with or without a view suffix, and it reads back as written.
            #[test]
            fn slash_and_plus_spellings_agree(
                namespace in label(),
                pod in label(),
                container in proptest::option::of(label()),
                view in proptest::sample::select(vec![View::Container, View::Debug, View::Logs]),
            ) {
                let last = match (&container, view) {
                    (None, View::Container) => None,
                    (container, view) => Some(format!("{}{}", container.as_deref().unwrap_or(""), view.suffix())),
                };
                let suffix = |separator: char| match &last {
                    Some(c) => format!("{namespace}{separator}{pod}{separator}{c}"),
                    None => format!("{namespace}{separator}{pod}"),
                };
                let slash = LoginName::parse(&format!("alice@{}", suffix('/'))).unwrap();
                let plus = LoginName::parse(&format!("alice@{}", suffix('+'))).unwrap();
                prop_assert_eq!(&slash, &plus);
                prop_assert_eq!(slash.target.unwrap().to_string(), suffix('/'));
            }
        }
    }
}
