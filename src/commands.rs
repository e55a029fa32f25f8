//! The commands a login without a target understands: `ssh PERSON@bastion
//! COMMAND`. One table, so every door and the help line agree on them.
//! The doors run them (`ssh::handler`); this module names and parses them.

/// A command of the bastion itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A one-time sign-in link for the web terminal.
    Web,
    /// The person's own live sessions on this replica.
    Sessions,
    /// A kubeconfig for the kubectl door, whose credential plugin is ssh.
    Kubeconfig,
    /// A credential for the kubectl door (an `ExecCredential`), as the
    /// kubeconfig's plugin asks for it.
    KubeCredential,
    /// A short-lived SSH certificate for the public key on stdin (people
    /// signed in with the OpenID provider).
    Certificate,
}

/// Every command, with what it does, in the order the help line names
/// them.
pub const TABLE: &[(&str, Command, &str)] = &[
    (
        "web",
        Command::Web,
        "a one-time sign-in link for the web terminal",
    ),
    (
        "sessions",
        Command::Sessions,
        "your open sessions on this bastion",
    ),
    (
        "kubeconfig",
        Command::Kubeconfig,
        "a kubeconfig for kubectl through this bastion, as you",
    ),
    (
        "kube-credential",
        Command::KubeCredential,
        "the short-lived credential kubectl asks that kubeconfig's ssh for",
    ),
    (
        "certificate",
        Command::Certificate,
        "after a provider sign-in, an SSH certificate for the key on stdin",
    ),
];

/// What a bare command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Command(Command),
    /// Not a command of the bastion: the line for the person (shown
    /// with the login syntax and what the person may reach).
    Unknown(String),
}

/// Parses the command line of a login without a target. Surrounding
/// blanks are ignored; the commands take no arguments.
pub fn parse(line: &str) -> Parsed {
    let line = line.trim();
    match TABLE.iter().find(|(name, _, _)| *name == line) {
        Some((_, command, _)) => Parsed::Command(*command),
        None => Parsed::Unknown(format!(
            "{:?} is not a command of this bastion; it knows {}",
            truncate(line, 64),
            known()
        )),
    }
}

/// The commands and what they do, for help lines.
pub fn known() -> String {
    TABLE
        .iter()
        .map(|(name, _, what)| format!("`{name}` ({what})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_its_own_names_and_refuses_others_in_one_line() {
        assert_eq!(parse("web"), Parsed::Command(Command::Web));
        assert_eq!(parse(" sessions\n"), Parsed::Command(Command::Sessions));
        let Parsed::Unknown(line) = parse("kubeconfig --raw") else {
            panic!("an unknown command parsed");
        };
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("\"kubeconfig --raw\" is not a command"),
            "{line}"
        );
        assert!(
            line.contains("`web`") && line.contains("`sessions`"),
            "{line}"
        );
        let Parsed::Unknown(long) = parse(&"x".repeat(500)) else {
            panic!("a long line parsed");
        };
        assert!(long.len() < 500, "{long}");
    }
}
