//! Single sign-on end to end: a real OpenID provider (the `oidc-provider`
//! package from npm, OpenID Certified, run by `tests/oidc/provider.mjs`
//! with its development login form), Debian's Chromium through Playwright
//! (`tests/python/sso_browser.py`), real OpenSSH, `kbastion serve` and the
//! simulator. People signed in this way come as `oidc:NAME` in
//! `oidc:GROUP`; the scenario binds `oidc:devs` to its developer Role.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The OpenID provider, on a free loopback port.
struct Provider {
    _process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Provider {
    /// Starts the provider with one client (kbastion, redirecting to
    /// `redirect`) and these accounts: login and groups.
    fn start(redirect: &str, accounts: &[(&str, &[&str])]) -> Provider {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            root.join("node_modules/oidc-provider").exists(),
            "the single sign-on tests need the OpenID provider from npm: npm ci --prefix tests/oidc (as .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let accounts: serde_json::Map<String, serde_json::Value> = accounts
            .iter()
            .map(|(login, groups)| (login.to_string(), serde_json::json!({ "groups": groups })))
            .collect();
        let config = serde_json::json!({
            "client_id": "kbastion",
            "client_secret": "kbastion-test-secret",
            "redirect_uri": redirect,
            "accounts": accounts,
        });
        let config_path = dir.path().join("provider.json");
        std::fs::write(&config_path, config.to_string()).expect("provider config");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(root.join("provider.mjs"))
            .arg(port.to_string())
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (line, mut rest) =
            read_line_within(stdout, "the provider's output", Duration::from_secs(20));
        assert!(
            line.contains("ready"),
            "the provider did not start: {line:?}"
        );
        // It logs to stdout now and then: kept read, or it dies of EPIPE.
        std::thread::spawn(move || std::io::copy(&mut rest, &mut std::io::sink()));
        Provider {
            _process: Process(child),
            port,
            _dir: dir,
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes the provider misbehave (see provider.mjs).
    fn test_setting(&self, what: &str, value: &str) {
        let out = Command::new("curl")
            .args(["-sf", "-X", "POST", "--data", value])
            .arg(format!("{}/test/{what}", self.issuer()))
            .output()
            .expect("curl");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// A bastion with the web terminal and `[oidc]` on, and its provider.
fn start(sim: &Sim, accounts: &[(&str, &[&str])], oidc_extra: &str) -> (Web, Provider) {
    let port = free_port();
    let provider = Provider::start(&format!("https://127.0.0.1:{port}/oidc/callback"), accounts);
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "kbastion-test-secret\n").expect("secret");
    let (_, secret_path) = secret.keep().expect("keep the secret file");
    let web = Web::start_on(
        sim,
        port,
        "",
        &format!(
            "\n[oidc]\nissuer = \"{}\"\nclient_id = \"kbastion\"\nclient_secret_file = \"{}\"\n{oidc_extra}\n",
            provider.issuer(),
            secret_path.display()
        ),
    );
    (web, provider)
}

/// What `ssh-keygen -L` says of the certificate at `path`.
fn listed_certificate(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Fails unless the browser script's `field` holds `text`.
fn says(seen: &serde_json::Value, field: &str, text: &str) {
    let value = seen[field].as_str().unwrap_or_default();
    assert!(value.contains(text), "{field} lacks {text:?}: {seen}");
}

fn sso_browser(scenario: &str, args: serde_json::Value) -> serde_json::Value {
    browser_script("sso_browser.py", scenario, args)
}

/// `ssh` with no key at all (keyboard-interactive is what is left).
fn ssh_without_key(web: &Web) -> Command {
    let mut command = Command::new("ssh");
    command
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=accept-new"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            web.dir.path().join("known_hosts").display()
        ))
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-p",
        ])
        .arg(web.bastion.port.to_string());
    command
}

/// Starts `command`, reads its stderr up to the sign-in line, and returns
/// the child and the sign-in page's URL.
fn sign_in_line(mut command: Command, input: &Path) -> (std::process::Child, String) {
    let mut child = command
        .stdin(std::fs::File::open(input).expect("stdin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut stderr: Box<dyn std::io::BufRead + Send> = Box::new(std::io::BufReader::new(
        child.stderr.take().expect("stderr"),
    ));
    // Past ssh's own lines (the new host key's).
    let line = loop {
        let (line, rest) = read_line_within(stderr, "ssh's sign-in line", Duration::from_secs(30));
        stderr = rest;
        if line.starts_with("Open ") || line.is_empty() {
            break line.trim_end().to_string();
        }
    };
    // The rest of stderr is drained, so ssh never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let url = line
        .strip_prefix("Open ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no sign-in line: {line:?}"))
        .to_string();
    assert!(
        line.ends_with("to sign in (expires in 5 minutes)"),
        "{line:?}"
    );
    (child, url)
}

#[test]
fn a_browser_signs_in_with_the_provider_and_works_as_that_person() {
    let sim = Sim::start();
    let (web, _provider) = start(&sim, &[("dana", &["devs"]), ("gus", &["guests"])], "");
    let keys = Keys::new();
    let seen = sso_browser(
        "web",
        serde_json::json!({
            "base": web.base,
            "login": "dana",
            "target": "default/web-0",
            "command": "echo $((6*7))",
            "public_key": keys.public,
        }),
    );
    says(&seen, "start", "Sign in with 127.0.0.1");
    says(&seen, "landed", "Targets for dana");
    assert_eq!(seen["terminal"], "42", "{seen}");
    // The cluster saw oidc:dana in oidc:devs, never anything unprefixed.
    let impersonated: Vec<serde_json::Value> = sim
        .api_audit()
        .into_iter()
        .filter(|e| e["impersonatedUser"]["username"] == "oidc:dana")
        .collect();
    assert!(!impersonated.is_empty(), "no request as oidc:dana");
    assert!(
        impersonated.iter().all(|e| e["impersonatedUser"]["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&"oidc:devs".into()))),
        "{impersonated:?}"
    );
    // The certificate from the page names dana and carries her groups.
    let certificate = seen["certificate"].as_str().unwrap();
    let cert_path = keys.dir.path().join("id-cert.pub");
    std::fs::write(&cert_path, certificate).unwrap();
    let listed = listed_certificate(&cert_path);
    assert!(
        listed.contains("Type: ssh-ed25519-cert-v01@openssh.com user certificate"),
        "{listed}"
    );
    assert!(
        listed.contains("Principals: \n                dana"),
        "{listed}"
    );
    assert!(listed.contains("groups@kbastion.dev"), "{listed}");
    // Audited: the sign-in and the certificate.
    let audit = web.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "auth"
            && e["method"] == "oidc"
            && e["success"] == true
            && e["login"] == "dana"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "certificate" && e["person"] == "dana"),
        "{audit:?}"
    );
    // A person whose groups have no rights gets the cluster's refusal.
    let seen = sso_browser(
        "web",
        serde_json::json!({
            "base": web.base,
            "login": "gus",
            "target": "default/web-0",
            "refused": true,
        }),
    );
    let terminal = seen["terminal"].as_str().unwrap();
    assert!(
        terminal.contains("oidc:gus") && terminal.contains("cannot"),
        "{seen}"
    );
}

#[test]
fn plain_ssh_signs_in_through_the_browser_and_gets_a_certificate_for_scp_and_ssh() {
    let sim = Sim::start();
    let door_port = free_port();
    let (web, _provider) = start(
        &sim,
        &[("dana", &["devs"])],
        &format!(
            "[kube_proxy]\nlisten = \"127.0.0.1:{door_port}\"\npublic_url = \"https://127.0.0.1:{door_port}\"\n"
        ),
    );
    let keys = Keys::new();
    let public = keys.identity.with_extension("pub");
    // ssh with no key: one line names the sign-in page, and the command
    // waits for the browser.
    let mut command = ssh_without_key(&web);
    command.arg("dana@127.0.0.1").arg("certificate");
    let (child, url) = sign_in_line(command, &public);
    assert!(url.starts_with(&format!("{}/sso/", web.base)), "{url}");
    let seen = sso_browser(
        "approve",
        serde_json::json!({ "url": url, "login": "dana", "again": true }),
    );
    let page = seen["page"].as_str().unwrap();
    assert!(
        page.contains("127.0.0.1") && page.contains("log in as dana"),
        "{seen}"
    );
    says(&seen, "landed", "Signed in as dana");
    // The code works once.
    assert_eq!(seen["again_status"], 410, "{seen}");
    says(&seen, "again", "already used");
    let out = wait_output(child, "ssh ... certificate", Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let certificate = text(&out.stdout);
    assert!(
        certificate.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{certificate}"
    );
    let cert_path = PathBuf::from(format!("{}-cert.pub", keys.identity.display()));
    std::fs::write(&cert_path, &certificate).unwrap();
    let listed = listed_certificate(&cert_path);
    assert!(listed.contains("dana"), "{listed}");
    // 8 hours (certificate_hours), from a minute ago (clock skew).
    let valid = listed
        .lines()
        .find(|l| l.trim_start().starts_with("Valid:"))
        .unwrap_or_default()
        .to_string();
    let times: Vec<chrono::NaiveDateTime> = valid
        .split_whitespace()
        .filter_map(|w| chrono::NaiveDateTime::parse_from_str(w, "%Y-%m-%dT%H:%M:%S").ok())
        .collect();
    assert_eq!(times.len(), 2, "{listed}");
    assert_eq!(
        (times[1] - times[0]).num_seconds(),
        8 * 3600 + 60,
        "{listed}"
    );
    // With the certificate, ssh and scp need no prompt (BatchMode).
    let mut command = web.bastion.client_command("ssh", "ERROR", &keys.identity);
    command
        .arg("dana@default/web-0@127.0.0.1")
        .arg("echo as-$(whoami)-$((6*7))");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("-42"), "{}", text(&out.stdout));
    let upload = keys.dir.path().join("upload.bin");
    std::fs::write(&upload, vec![7u8; 300_000]).unwrap();
    let mut command = web.bastion.client_command("scp", "ERROR", &keys.identity);
    command
        .arg(&upload)
        .arg("dana@default+web-0@127.0.0.1:/tmp/sso-upload.bin");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = web.bastion.client_command("ssh", "ERROR", &keys.identity);
    let out = run_with_input(
        {
            let mut c = out;
            c.arg("dana@default/web-0@127.0.0.1")
                .arg("sha256sum /tmp/sso-upload.bin");
            c
        },
        b"",
    );
    assert!(
        text(&out.stdout).starts_with(&sha256(&upload)),
        "{}",
        text(&out.stdout)
    );
    // A certificate login cannot mint the next certificate.
    let mut command = web.bastion.client_command("ssh", "ERROR", &keys.identity);
    command.arg("dana@127.0.0.1").arg("certificate");
    let out = run_with_input(command, certificate.as_bytes());
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("cannot renew itself"),
        "{}",
        text(&out.stderr)
    );
    // An interactive shell with no key, as a person types it: the line
    // in the terminal, the browser, then the shell.
    let mut command = ssh_without_key(&web);
    command.args(["-tt", "dana@default/web-0@127.0.0.1"]);
    let tmux = Tmux::start(&tmux_line(&command), 200, 30);
    tmux.wait_for_text("to sign in (expires in 5 minutes)");
    let screen = tmux.screen();
    let url = screen
        .split_whitespace()
        .find(|word| word.contains("/sso/"))
        .unwrap_or_else(|| panic!("no sign-in page on the screen:\n{screen}"))
        .to_string();
    let seen = sso_browser(
        "approve",
        serde_json::json!({ "url": url, "login": "dana" }),
    );
    says(&seen, "landed", "Signed in as dana");
    tmux.send_until(&["echo shell-as-$((6*7))", "Enter"], "shell-as-42");
    tmux.send(&["exit", "Enter"]);
    tmux.wait_for_text("ssh exited with 0");
    // kubectl through the door, its ssh plugin logging in with the
    // certificate (OpenSSH loads ID-cert.pub beside the key by itself).
    let mut command = web.bastion.client_command("ssh", "ERROR", &keys.identity);
    command.arg("dana@127.0.0.1").arg("kubeconfig");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kubeconfig = keys.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, &out.stdout).unwrap();
    let bin = person_ssh(
        keys.dir.path(),
        &keys.identity,
        &web.dir.path().join("known_hosts"),
    );
    let out = Command::new("kubectl")
        .env("PATH", path_with(&bin))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "pods", "-n", "default", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("pod/web-0"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A certificate of kbastion's CA whose time is over is refused (one
    // signed here with the CA every replica derives from the Secret).
    let secret = sim.kubectl(
        "kubectl",
        "admin",
        &[
            "get",
            "secret",
            "kbastion-signing",
            "-n",
            "kbastion",
            "-o",
            "jsonpath={.data.hs256}",
        ],
    );
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(text(&secret.stdout).trim())
        .unwrap();
    let ca = kbastion::sso::ca::UserCa::derive(
        &kbastion::signing::SigningKey::from_bytes(&secret).unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = russh::keys::PublicKey::from_openssh(&keys.public).unwrap();
    let dana = kbastion::sso::Claimed {
        name: "dana".into(),
        issuer: _provider.issuer(),
        subject: "sub-dana".into(),
        groups: vec!["devs".into()],
    };
    let expired = ca.mint(&key, &dana, now - 7200, now - 3600).unwrap();
    std::fs::write(&cert_path, expired.to_openssh().unwrap()).unwrap();
    let mut command = web.bastion.client_command("ssh", "ERROR", &keys.identity);
    command.arg("dana@default/web-0@127.0.0.1").arg("true");
    let out = run_with_input(command, b"");
    // (russh refuses an expired certificate before kbastion sees it.)
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    // The sessions and the door's requests ran as oidc:dana.
    assert!(
        sim.api_audit()
            .iter()
            .any(|e| e["impersonatedUser"]["username"] == "oidc:dana"),
        "no request as oidc:dana"
    );
}

#[test]
fn forged_expired_and_replayed_sign_ins_are_refused_and_keys_outlive_the_provider() {
    let sim = Sim::start();
    let (web, provider) = start(
        &sim,
        &[
            ("dana", &["devs"]),
            ("carol", &["devs"]),
            ("ops-only", &["ops"]),
        ],
        "allowed_groups = [\"devs\"]",
    );
    let landed = |login: &str| {
        sso_browser(
            "web",
            serde_json::json!({ "base": web.base, "login": login }),
        )["landed"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (tamper, expected) in [
        ("other-key", "Signature"),
        ("expired", "xpired"),
        ("other-audience", "audience"),
    ] {
        provider.test_setting("tamper", tamper);
        let landed_as = landed("dana");
        assert!(
            landed_as.contains("the provider's ID token was refused")
                && landed_as.contains(expected),
            "{tamper}: {landed_as}"
        );
    }
    provider.test_setting("tamper", "none");
    // A configured person's name, and a group outside allowed_groups.
    let landed_as = landed("carol");
    assert!(
        landed_as.contains("is a person configured on this bastion"),
        "{landed_as}"
    );
    let landed_as = landed("ops-only");
    assert!(
        landed_as.contains("none of your groups (ops) may use this bastion"),
        "{landed_as}"
    );
    // The provider rotates its signing key: a token under the new key ID
    // makes kbastion fetch the provider's keys again, and it signs in.
    provider.test_setting("tamper", "rotated");
    let landed_as = landed("dana");
    assert!(landed_as.contains("Targets for dana"), "{landed_as}");
    provider.test_setting("tamper", "none");
    // A replayed callback (its state and code again).
    let seen = sso_browser(
        "replay",
        serde_json::json!({ "base": web.base, "login": "dana" }),
    );
    says(&seen, "landed", "Targets for dana");
    assert_eq!(seen["replay_status"], 400, "{seen}");
    says(&seen, "replay", "unknown or was already completed");
    // Each refusal is audited with its reason.
    let failures: Vec<String> = web
        .audit()
        .iter()
        .filter(|e| e["event"] == "auth" && e["method"] == "oidc" && e["success"] == false)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(failures.len(), 6, "{failures:?}");
    // A short-lived ID token: the browser session ends with it.
    provider.test_setting("id-token-ttl", "6");
    let seen = sso_browser(
        "web",
        serde_json::json!({ "base": web.base, "login": "dana", "wait_for_end": 20 }),
    );
    says(&seen, "landed", "Targets for dana");
    says(&seen, "after_end", "Sign in with");
    // With refresh tokens, the browser session is renewed past each short
    // ID token, until the provider no longer renews it (a leaver).
    provider.test_setting("refresh-tokens", "on");
    let seen = sso_browser(
        "web",
        serde_json::json!({
            "base": web.base,
            "login": "dana",
            "stays_for": 14,
            "issuer": provider.issuer(),
            "remove": "dana",
            "wait_for_end": 25,
        }),
    );
    says(&seen, "after_stay", "Targets for dana");
    says(&seen, "after_end", "Sign in with");
    assert!(
        web.audit().iter().any(|e| e["event"] == "revocation"
            && e["person"] == "dana"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the provider no longer renews the sign-in"))),
        "{:?}",
        web.audit()
    );
    // The provider stopped: ssh's sign-in line says so, and keys work.
    drop(provider);
    let mut command = ssh_without_key(&web);
    command.args(["-o", "BatchMode=no", "dana@127.0.0.1", "sessions"]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(255));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the sign-in provider at http://127.0.0.1:")
            && stderr.contains("does not answer"),
        "{stderr}"
    );
    let out = web
        .bastion
        .ssh("alice@default/web-0", &["echo key-$((6*7))"], b"");
    assert_eq!(text(&out.stdout).trim(), "key-42", "{}", text(&out.stderr));
    // Without [oidc], keyboard-interactive is not offered at all.
    let plain = Bastion::start(&sim, "");
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "LogLevel=ERROR",
            "-p",
        ])
        .arg(plain.port.to_string())
        .args(["alice@127.0.0.1", "true"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)."),
        "{}",
        text(&out.stderr)
    );
}
