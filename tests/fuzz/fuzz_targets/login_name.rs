//! Any bytes as an SSH user name: parsed or refused in one line, never a
//! panic, and an accepted target holds only Kubernetes-name characters; a
//! container target (with its `.debug`/`.logs` view) reads back as itself.
#![no_main]

use kbastion::login::{LoginName, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match LoginName::parse(raw) {
        Ok(name) => {
            if let Some(target) = name.target {
                let text = target.to_string();
                assert!(
                    text.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-./".contains(c)),
                    "{text:?}"
                );
                if let Target::Container { .. } = target {
                    let again = LoginName::parse(&format!("{}@{text}", name.person))
                        .expect("a container target reads back");
                    assert_eq!(again.target, Some(target), "{text:?}");
                }
            }
        }
        Err(error) => assert!(!error.to_string().chars().any(char::is_control)),
    }
});
