//! The web terminal's helpers, shared by the browser tests: a bastion with
//! `[web]` on, its sign-in links, its audit trail, and the Playwright
//! scripts in `tests/python`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// A bastion with the web terminal on, its HTTPS base URL, and its
/// recordings directory.
pub struct Web {
    pub bastion: Bastion,
    pub base: String,
    pub recordings: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Web {
    pub fn start(sim: &Sim, web_extra: &str) -> Web {
        Self::start_with(sim, "", web_extra)
    }

    /// `start` with more config before the `[web]` section.
    pub fn start_with(sim: &Sim, extra: &str, web_extra: &str) -> Web {
        Self::start_on(sim, free_port(), extra, web_extra)
    }

    /// `start_with` on a given port (a provider must know the address
    /// before the bastion starts).
    pub fn start_on(sim: &Sim, port: u16, extra: &str, web_extra: &str) -> Web {
        let dir = tempfile::tempdir().expect("temp dir");
        let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("certificate");
        let certificate = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&certificate, pair.cert.pem()).expect("write certificate");
        std::fs::write(&key, pair.signing_key.serialize_pem()).expect("write key");
        let recordings = dir.path().join("recordings");
        let base = format!("https://127.0.0.1:{port}");
        let extra = format!(
            "{extra}\n[audit]\nrecordings_dir = \"{recordings}\"\nfile = \"{audit}\"\n\
             [web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n\
             certificate = \"{certificate}\"\nkey = \"{key}\"\n{web_extra}\n",
            recordings = recordings.display(),
            audit = dir.path().join("audit.jsonl").display(),
            certificate = certificate.display(),
            key = key.display(),
        );
        let bastion = Bastion::start(sim, &extra);
        Web {
            bastion,
            base,
            recordings,
            dir,
        }
    }

    /// What `ssh PERSON@bastion web` prints: the link, on its first line.
    pub fn link(&self, person: &str) -> String {
        let out = self.bastion.ssh(person, &["web"], b"");
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        let link = stdout.lines().next().unwrap_or_default().to_string();
        assert!(
            link.starts_with(&format!("{}/login/", self.base)),
            "{stdout}"
        );
        link
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The venv's Python; a missing venv or browser fails the test with what
/// to run.
pub fn python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    assert!(
        path.exists() && Path::new("/usr/bin/chromium").exists(),
        "the web terminal tests need Debian's chromium and Playwright for Python: \
         apt-get install chromium; python3 -m venv .ci/venv && .ci/venv/bin/pip install playwright \
         (as .ci/run does)"
    );
    path
}

/// Runs a scenario of the browser script `tests/python/SCRIPT` and returns
/// what it printed (its last stdout line, JSON).
pub fn browser_script(script: &str, scenario: &str, args: serde_json::Value) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut command = Command::new(python());
    command.arg(&script).arg(scenario).arg(args.to_string());
    let out = run_with_input_within(command, b"", Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{scenario} failed ({}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{scenario} printed {stdout:?}: {e}"))
}
