//! The environment a client passes to its session: the variables it sent
//! (SSH `env` requests, OpenSSH's `SendEnv`) that the config accepts
//! (`accept_env`, by default Debian's and Ubuntu's `AcceptEnv LANG LC_*`),
//! or the web terminal's UTF-8 locale.
//!
//! Why it matters: a shell started with no locale runs readline in the C
//! locale, where each byte of a UTF-8 letter is read as a Meta key (`ü` is
//! M-C, M-<: beginning-of-history), so typing an accented letter recalls
//! and runs another command line.
//!
//! Values reach the target as separate `env` arguments (`exec::
//! session_argv`), never through a shell; whatever fails the checks here
//! is dropped (and logged at debug level).

/// The accept list when the config names none.
pub fn default_accept_env() -> Vec<String> {
    vec!["LANG".into(), "LC_*".into()]
}

/// Longest value passed on (locale names are short; this bounds what a
/// client can put on a command line).
const MAX_VALUE: usize = 256;

/// At most this many variables per session.
const MAX_VARIABLES: usize = 32;

/// The locale the target falls back to when the one asked for is missing
/// and the client's character set is UTF-8 (glibc 2.35+ has it built in;
/// musl takes any name).
pub const FALLBACK_LOCALE: &str = "C.UTF-8";

/// Variables for one session, in the order the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientEnv(Vec<(String, String)>);

/// Why a variable was not passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("the name is not a shell variable name")]
    BadName,
    #[error("the name is not in accept_env")]
    NotAccepted,
    #[error("the value is longer than {MAX_VALUE} bytes or holds control characters")]
    BadValue,
    #[error("more than {MAX_VARIABLES} variables")]
    TooMany,
}

/// `NAME` matches `pattern`: exactly, or by prefix with a trailing `*`
/// (sshd's `AcceptEnv` takes the same wildcard).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

impl ClientEnv {
    /// The web terminal's environment: a UTF-8 locale.
    pub fn locale(locale: &str) -> ClientEnv {
        ClientEnv(vec![("LANG".into(), locale.into())])
    }

    /// Takes `name=value` if `accept` lets it through and it is safe; a
    /// later value of the same name replaces the earlier one.
    pub fn accept(&mut self, accept: &[String], name: &str, value: &str) -> Result<(), Dropped> {
        if !valid_name(name) || name == "KBASTION_SESSION" || name == "TERM" {
            return Err(Dropped::BadName);
        }
        if !accept.iter().any(|pattern| matches(pattern, name)) {
            return Err(Dropped::NotAccepted);
        }
        if value.len() > MAX_VALUE || value.chars().any(char::is_control) {
            return Err(Dropped::BadValue);
        }
        self.0.retain(|(known, _)| known != name);
        if self.0.len() >= MAX_VARIABLES {
            return Err(Dropped::TooMany);
        }
        self.0.push((name.into(), value.into()));
        Ok(())
    }

    /// `NAME=value` arguments for `env`.
    pub fn assignments(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|(name, value)| format!("{name}={value}"))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the client's character set is UTF-8: the locale in effect
    /// for characters (LC_ALL, else LC_CTYPE, else LANG, as POSIX orders
    /// them) names it.
    pub fn wants_utf8(&self) -> bool {
        ["LC_ALL", "LC_CTYPE", "LANG"]
            .iter()
            .find_map(|name| self.get(name).filter(|value| !value.is_empty()))
            .is_some_and(|locale| {
                let locale = locale.to_ascii_lowercase();
                locale.contains("utf-8") || locale.contains("utf8")
            })
    }
}

/// Run before the session's script when the client wants UTF-8: if the
/// target lacks the locale asked for (its character map is not UTF-8, or
/// it has no `locale` program to say), characters follow `C.UTF-8`
/// instead, so readline never reads a letter's bytes as Meta keys. It
/// reads only the variables, never pastes them.
pub const UTF8_FALLBACK: &str = "case \"$(locale charmap 2>/dev/null)\" in UTF-8) ;; *) export LC_CTYPE=C.UTF-8; [ -z \"$LC_ALL\" ] || export LC_ALL=C.UTF-8;; esac; ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_safe_variables_pass() {
        let accept = default_accept_env();
        let mut env = ClientEnv::default();
        assert_eq!(env.accept(&accept, "LANG", "de_DE.UTF-8"), Ok(()));
        assert_eq!(env.accept(&accept, "LC_TIME", "C"), Ok(()));
        assert_eq!(
            env.accept(&accept, "LD_PRELOAD", "/x.so"),
            Err(Dropped::NotAccepted)
        );
        assert_eq!(env.accept(&accept, "LC_X Y", "C"), Err(Dropped::BadName));
        assert_eq!(env.accept(&accept, "TERM", "x"), Err(Dropped::BadName));
        assert_eq!(
            env.accept(&accept, "LC_CTYPE", "C\nrm -rf /"),
            Err(Dropped::BadValue)
        );
        assert_eq!(
            env.accept(&accept, "LC_CTYPE", &"a".repeat(MAX_VALUE + 1)),
            Err(Dropped::BadValue)
        );
        // A repeat replaces; shell syntax is just a value (argv, no shell).
        assert_eq!(env.accept(&accept, "LANG", "C.UTF-8 $(id)"), Ok(()));
        assert_eq!(
            env.assignments().collect::<Vec<_>>(),
            ["LC_TIME=C", "LANG=C.UTF-8 $(id)"]
        );
    }

    #[test]
    fn utf8_is_read_in_posix_order() {
        let accept = default_accept_env();
        let mut env = ClientEnv::default();
        assert!(!env.wants_utf8());
        env.accept(&accept, "LANG", "en_US.utf8").unwrap();
        assert!(env.wants_utf8());
        env.accept(&accept, "LC_CTYPE", "POSIX").unwrap();
        assert!(!env.wants_utf8());
        env.accept(&accept, "LC_ALL", "C.UTF-8").unwrap();
        assert!(env.wants_utf8());
        assert!(ClientEnv::locale(FALLBACK_LOCALE).wants_utf8());
    }

    #[test]
    fn too_many_variables_are_dropped() {
        let accept = vec!["V*".to_string()];
        let mut env = ClientEnv::default();
        for n in 0..MAX_VARIABLES {
            env.accept(&accept, &format!("V{n}"), "x").unwrap();
        }
        assert_eq!(env.accept(&accept, "VX", "x"), Err(Dropped::TooMany));
    }
}
