//! The web terminal in a real browser: Debian's Chromium, headless, driven
//! by Playwright for Python (`tests/python/web_terminal.py`, installed in
//! `.ci/venv` by `.ci/run`), against `kbastion serve` and the simulator.
//! Each test signs in with a link from `ssh PERSON@bastion web`, as a
//! person would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Signs in with `link` as the page's button does (a same-origin POST),
/// keeping the cookie in `jar`; `extra` are more curl arguments.
fn sign_in_with_curl(web: &Web, link: &str, jar: &Path, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sk", "-X", "POST", "-H"])
        .arg(format!("Origin: {}", web.base))
        .args(extra)
        .arg("-c")
        .arg(jar)
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(link)
        .output()
        .unwrap();
    let code = text(&out.stdout);
    assert_eq!(code, "303", "signing in: {}", text(&out.stderr));
    code
}

/// Runs a scenario of `tests/python/web_terminal.py` and returns what it
/// printed (its last stdout line, JSON).
fn browser(scenario: &str, args: serde_json::Value) -> serde_json::Value {
    browser_script("web_terminal.py", scenario, args)
}

#[test]
fn a_link_signs_in_once_until_it_expires_and_only_our_pages_open_terminals() {
    let sim = Sim::start();
    let web = Web::start(&sim, "link_secs = 8\nsession_max_secs = 600");
    // Both links valid for 8 s: the browser uses one at once, and the
    // other once it has expired.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expired = web.link("alice");
    let link = web.link("alice");
    let seen = browser(
        "login",
        serde_json::json!({"base": web.base, "link": link, "expired_link": expired, "expires_at": now + 9.0}),
    );
    assert_eq!(seen["first_url"], format!("{}/", web.base));
    let list = seen["list"].as_str().unwrap();
    assert!(list.contains("Targets for alice"), "{list}");
    assert!(
        list.contains("default/web-0") && list.contains("prod/db-0"),
        "{list}"
    );
    assert!(list.contains("node-1"), "{list}");
    let cookie = &seen["cookie"];
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    assert_eq!(cookie["path"], "/");
    let lifetime = cookie["lifetime"].as_i64().unwrap();
    assert!((590..=600).contains(&lifetime), "{lifetime}");
    assert_eq!(seen["second_status"], 410);
    assert_eq!(
        seen["second_body"],
        "this sign-in link was already used; run ssh PERSON@BASTION web for a new one\n"
    );
    assert_eq!(seen["expired_status"], 410);
    assert_eq!(
        seen["expired_body"],
        "this sign-in link has expired; run ssh PERSON@BASTION web for a new one\n"
    );
    assert!(
        seen["foreign_socket"]
            .as_str()
            .unwrap()
            .starts_with("closed"),
        "{seen}"
    );
    assert_eq!(
        seen["forged_origin"],
        serde_json::json!([
            403,
            format!(
                "cross-origin WebSocket refused: the Origin must be {}\n",
                web.base
            )
        ])
    );
    assert_eq!(
        seen["no_cookie"],
        serde_json::json!([
            401,
            "you are not signed in; run ssh PERSON@BASTION web for a sign-in link\n"
        ])
    );
    assert_eq!(
        seen["oversized"],
        "1009 message too big (70000 bytes; the limit is 65536)"
    );
    assert_eq!(
        seen["signed_out"],
        "signed out; run ssh PERSON@BASTION web to sign in again\n"
    );
    assert_eq!(seen["after_sign_out"], 401);
    let audit = web.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["method"] == "web-link" && e["login"] == "alice" && e["success"] == true),
        "{audit:?}"
    );
}

#[test]
fn bob_sees_only_his_pods_and_a_forbidden_deep_link_shows_one_line() {
    let sim = Sim::start();
    let web = Web::start(&sim, "");
    let seen = browser(
        "list",
        serde_json::json!({"base": web.base, "link": web.link("bob"), "forbidden": "prod/db-0"}),
    );
    let list = seen["list"].as_str().unwrap();
    assert!(list.contains("Targets for bob"), "{list}");
    assert!(list.contains("default/web-0"), "{list}");
    assert!(
        !list.contains("prod/db-0") && !list.contains("node-1"),
        "{list}"
    );
    assert_eq!(
        seen["forbidden"],
        "kbastion: access denied by Kubernetes RBAC: pods \"db-0\" is forbidden: User \"bob\" cannot get resource \"pods\" in API group \"\" in the namespace \"prod\""
    );
}

/// The terminal checks of the issue, on `target`.
fn terminal_checks(web: &Web, target: &str, screenshot: Option<&Path>) -> serde_json::Value {
    let seen = browser(
        "terminal",
        serde_json::json!({
            "base": web.base,
            "link": web.link("alice"),
            "target": target,
            "screenshot": screenshot,
        }),
    );
    let [rows, cols] = [&seen["xterm_size"][0], &seen["xterm_size"][1]];
    assert_eq!(seen["stty_size"], format!("{rows}x{cols}"), "{seen}");
    assert_ne!(seen["xterm_resized"], seen["xterm_size"]);
    let [rows, cols] = [&seen["xterm_resized"][0], &seen["xterm_resized"][1]];
    assert_eq!(seen["stty_resized"], format!("{rows}x{cols}"), "{seen}");
    assert_eq!(seen["typed"], "aüb 漢字 🚀", "{seen}");
    assert_eq!(seen["chars"], "chars:é漢🙂");
    assert_eq!(seen["after_interrupt"], "130");
    assert_eq!(seen["exit"], "3");
    assert_eq!(seen["exit_line"], "[process exited with status 3]");
    seen
}

#[test]
fn a_terminal_in_a_container_has_the_page_size_whole_characters_ctrl_c_and_the_exit_status() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let metrics_port = free_port();
    let web = Web::start_with(
        &sim,
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
        "",
    );
    // The README's picture (tests/screenshots/web-terminal.png is a copy).
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-terminal.png");
    terminal_checks(&web, "default/web-0", Some(&screenshot));
    // Audited as a web session, and recorded: the recording replays.
    let audit = web.audit();
    let start = audit
        .iter()
        .find(|e| e["event"] == "session_start" && e["transport"] == "web")
        .unwrap_or_else(|| panic!("no web session in {audit:?}"));
    assert_eq!(start["person"], "alice");
    assert_eq!(start["target"], "default/web-0");
    assert!(
        start["user_agent"]
            .as_str()
            .is_some_and(|agent| agent.contains("HeadlessChrome")),
        "{start}"
    );
    let end = audit
        .iter()
        .find(|e| e["event"] == "session_end" && e["session"] == start["session"])
        .unwrap_or_else(|| panic!("no end in {audit:?}"));
    assert_eq!(end["exit_status"], 3);
    let recording = web
        .recordings
        .join(format!("{}.cast", start["session"].as_str().unwrap()));
    let replay = asciinema_cat(&recording);
    assert!(replay.contains("chars:é漢🙂"), "{replay}");
    // Metrics by transport (the session's end is recorded just after the
    // page shows the exit).
    wait_for(
        "the web session in the metrics",
        Duration::from_secs(10),
        || {
            let mut curl = Command::new("curl");
            curl.args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")]);
            let metrics = text(&run_with_input(curl, b"").stdout);
            metrics.contains("kbastion_sessions_started_by_transport_total{transport=\"web\"} 1")
                && metrics.contains("kbastion_sessions_active_by_transport{transport=\"web\"} 0")
                && metrics.contains("kbastion_web_requests_total{code=\"101\"} 1")
        },
    );
    // Ready, with the web listener serving.
    let mut curl = Command::new("curl");
    curl.args(["-s", &format!("http://127.0.0.1:{metrics_port}/readyz")]);
    assert_eq!(text(&run_with_input(curl, b"").stdout), "ok\n");
}

#[test]
fn a_terminal_on_a_node_has_the_page_size_whole_characters_ctrl_c_and_the_exit_status() {
    let sim = Sim::start();
    let web = Web::start(&sim, "");
    terminal_checks(&web, "node-1", None);
}

#[test]
fn going_offline_for_5_s_or_reloading_keeps_the_same_shell_and_its_output() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    // Pings every second: the page gives a silent socket up after 3 s.
    let web = Web::start_with(&sim, "[timeouts]\nkeepalive_secs = 1\n", "");
    let seen = browser(
        "offline",
        serde_json::json!({"base": web.base, "link": web.link("alice"), "target": "default/web-0", "offline_secs": 5}),
    );
    assert_eq!(seen["same_session"], true, "{seen}");
    assert_eq!(seen["kept"], "1234");
    assert_eq!(seen["earlier_output"], true);
    assert_eq!(seen["reload_same_session"], true);
    assert_eq!(seen["reload_kept"], "1234");
}

#[test]
fn a_closed_tab_leaves_no_process_in_the_target_after_the_grace() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "reattach_secs = 2");
    let marker = format!("sleep {}", 4_000_000 + std::process::id());
    browser(
        "abandon",
        serde_json::json!({"base": web.base, "link": web.link("alice"), "target": "default/web-0", "command": marker}),
    );
    assert!(process_running(&marker), "{marker} did not start");
    wait_for(
        &format!("{marker} to be ended"),
        Duration::from_secs(20),
        || !process_running(&marker),
    );
    web.bastion
        .wait_for_log_line(&["session ended", "client gone"], Duration::from_secs(10));
}

#[test]
fn files_download_and_upload_through_the_page_byte_exact_and_audited() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "");
    // The container's working directory, where the files go.
    let out = web.bastion.ssh("alice@default/web-0", &["pwd"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let home = text(&out.stdout).trim().to_string();
    let local = tempfile::tempdir().expect("temp dir");
    // 3 MiB + 17 bytes of random data in the container, to download.
    let payload = format!("{home}/payload.bin");
    let out = web.bastion.ssh(
        "alice@default/web-0",
        &["head -c 3145745 /dev/urandom > payload.bin && sha256sum payload.bin"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let remote_sum = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    // 5 MiB + 3 bytes to upload.
    let upload = local.path().join("upload.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 3)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&upload, &data).expect("write the upload");
    let upload_dir = format!("{home}/incoming");
    std::fs::create_dir_all(&upload_dir).expect("the upload directory");
    let saved = local.path().join("saved.bin");
    let seen = browser(
        "files",
        serde_json::json!({
            "base": web.base,
            "link": web.link("alice"),
            "target": "default/web-0",
            "download": payload,
            "save_to": saved,
            "upload": upload,
            "upload_dir": upload_dir,
            "dropped_text": "dropped é漢🙂\n",
        }),
    );
    assert_eq!(seen["downloaded_name"], "payload.bin");
    assert_eq!(seen["downloaded_sha256"], remote_sum, "{seen}");
    assert_eq!(
        seen["download_line"],
        format!("downloaded {payload} (3145745 bytes)")
    );
    assert_eq!(
        seen["missing_line"],
        format!("{payload}.missing: No such file or directory")
    );
    assert_eq!(
        seen["upload_line"],
        format!("uploaded 5242883 bytes to {upload_dir}/upload.bin")
    );
    assert_eq!(
        seen["drop_line"],
        format!("uploaded 18 bytes to {upload_dir}/dropped.txt")
    );
    assert_eq!(
        seen["foreign_upload"],
        serde_json::json!([
            403,
            format!(
                "cross-origin upload refused: the Origin must be {}\n",
                web.base
            )
        ])
    );
    // In the container, byte for byte (checked there, through ssh).
    let out = web.bastion.ssh(
        "alice@default/web-0",
        &["sha256sum incoming/upload.bin; cat incoming/dropped.txt; ls incoming"],
        b"",
    );
    let listing = text(&out.stdout);
    assert_eq!(
        listing,
        format!(
            "{}  incoming/upload.bin\ndropped é漢🙂\ndropped.txt\nupload.bin\n",
            sha256(&upload)
        )
    );
    // Each transfer is a web session of its own, audited with its path.
    let audit = web.audit();
    let transfers: Vec<(String, String, String)> = audit
        .iter()
        .filter(|e| e["event"] == "session_start" && e["transport"] == "web")
        .filter(|e| e["kind"] == "download" || e["kind"] == "upload")
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_string();
            (field("kind"), field("path"), field("target"))
        })
        .collect();
    let target = "default/web-0".to_string();
    assert_eq!(
        transfers,
        vec![
            ("download".into(), payload.clone(), target.clone()),
            (
                "download".into(),
                format!("{payload}.missing"),
                target.clone()
            ),
            (
                "upload".into(),
                format!("{upload_dir}/upload.bin"),
                target.clone()
            ),
            ("upload".into(), format!("{upload_dir}/dropped.txt"), target),
        ],
        "{audit:?}"
    );
    let ends: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|e| {
            e["event"] == "session_end" && (e["kind"] == "download" || e["kind"] == "upload")
        })
        .collect();
    assert!(
        ends.iter()
            .any(|e| e["bytes_out"] == 3145745 && e["exit_status"] == 0),
        "{ends:?}"
    );
    assert!(
        ends.iter()
            .any(|e| e["bytes_in"] == 5242883 && e["exit_status"] == 0),
        "{ends:?}"
    );
}

#[test]
fn bob_cannot_download_from_a_pod_he_may_not_reach() {
    let sim = Sim::start();
    let web = Web::start(&sim, "");
    let seen = browser(
        "fetch",
        serde_json::json!({"base": web.base, "link": web.link("bob"), "path": "/files/prod/db-0?path=/etc/hostname"}),
    );
    assert_eq!(
        seen,
        serde_json::json!([
            403,
            "access denied by Kubernetes RBAC: pods \"db-0\" is forbidden: User \"bob\" cannot get resource \"pods\" in API group \"\" in the namespace \"prod\"\n"
        ])
    );
}

#[test]
fn the_targets_page_offers_each_containers_log_followed_in_a_tab_or_downloaded() {
    let sim = Sim::start();
    sim.wait_running("default", "logger");
    let web = Web::start(&sim, "");
    sim.wait_crasher_restarted();
    let previous = sim.kubectl("kubectl", "alice", &["logs", "crasher", "--previous"]);
    let local = tempfile::tempdir().expect("temp dir");
    let saved = local.path().join("previous");
    let seen = browser(
        "logs",
        serde_json::json!({
            "base": web.base,
            "link": web.link("alice"),
            "follow": "default/logger/app.logs",
            "download_from": "default/crasher/app.logs",
            "save_to": saved,
        }),
    );
    let links: Vec<&str> = seen["log_links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(links.contains(&"/t/default/logger/app.logs"), "{links:?}");
    assert!(links.contains(&"/t/default/web-0/app.logs"), "{links:?}");
    assert_eq!(seen["followed"], true);
    assert_eq!(seen["first_line"], "line 1");
    assert_eq!(seen["exit"], "130");
    assert_eq!(
        std::fs::read(&saved).expect("downloaded"),
        previous.stdout,
        "{seen}"
    );
    // Audited as a log session and a download, both over the web.
    let audit = web.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "session_start"
            && e["kind"] == "logs"
            && e["transport"] == "web"
            && e["target"] == "default/logger/app.logs"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|e| e["event"] == "session_start"
            && e["kind"] == "download"
            && e["path"] == "/previous"
            && e["target"] == "default/crasher/app.logs"),
        "{audit:?}"
    );
}

#[test]
fn a_debug_terminal_says_where_the_targets_files_are_and_reaches_them() {
    let sim = Sim::start();
    sim.wait_running("default", "api-0");
    let web = Web::start(&sim, "");
    let seen = browser(
        "debug",
        serde_json::json!({"base": web.base, "link": web.link("alice"), "target": "default/api-0/app.debug"}),
    );
    let note = seen["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("kbastion: debug container kbastion-debug-app-")
            && note.ends_with(" beside app; its files are under $TARGET_ROOT (/proc/1/root)"),
        "{seen}"
    );
    assert_eq!(seen["config"], "listen: 8080");
}

#[test]
fn signing_out_ends_the_terminals_that_browser_session_opened() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "");
    let seen = browser(
        "signout",
        serde_json::json!({"base": web.base, "link": web.link("alice"), "target": "default/web-0"}),
    );
    // After the prompt the shell had drawn.
    let line = seen["line"].as_str().unwrap_or_default();
    assert!(
        line.ends_with("kbastion: access revoked (signed out): this session has ended"),
        "{line}"
    );
    web.bastion
        .wait_for_log_line(&["session ended", "signed out"], Duration::from_secs(10));
}

/// A paste of 300 KB (far beyond the page's 64 KiB input credit) into a
/// process that first writes a megabyte and only then reads: the page
/// holds what it may not send yet, kbastion keeps reading the socket (the
/// output's acknowledgements), and every byte arrives.
#[test]
fn a_paste_beyond_the_input_credit_arrives_whole_while_output_flows() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "");
    let seen = browser(
        "input",
        serde_json::json!({
            "base": web.base,
            "link": web.link("alice"),
            "target": "default/web-0",
            "bytes": 300_000,
        }),
    );
    assert_eq!(seen["whole"], true, "{seen}");
}

/// A certificate's `source-address` binds the browser as it binds ssh: a
/// sign-in link minted from 127.0.0.1 with a certificate limited to it
/// opens nothing from 127.0.0.2; the browser session is ended as revoked,
/// and audited as a revocation.
#[test]
fn a_certificates_source_address_binds_the_web_sessions_it_mints() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let keys = tempfile::tempdir().unwrap();
    let ca = keys.path().join("ca");
    let user = keys.path().join("alice");
    for key in [&ca, &user] {
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(key)
            .status()
            .unwrap();
        assert!(made.success());
    }
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "alice-web", "-n", "alice", "-V", "+1h"])
        .args(["-O", "source-address=127.0.0.1/32"])
        .arg(user.with_extension("pub"))
        .status()
        .unwrap();
    assert!(signed.success());
    let ca_public = std::fs::read_to_string(ca.with_extension("pub")).unwrap();
    let web = Web::start_with(
        &sim,
        &format!("user_ca_keys = [\"{}\"]\n", ca_public.trim()),
        "",
    );
    let mut ssh = web.bastion.client_command("ssh", "ERROR", &user);
    ssh.args(["alice@127.0.0.1", "web"]);
    let out = run_with_input(ssh, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let link = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let jar = keys.path().join("cookies");
    let curl = |from: &str, url: &str| {
        let mut curl = Command::new("curl");
        curl.args([
            "-sk",
            "-H",
            "Sec-Fetch-Site: same-origin",
            "--interface",
            from,
            "-b",
        ])
        .arg(&jar)
        .arg("-c")
        .arg(&jar)
        .args(["-o", "-", "-w", "\n%{http_code}", url]);
        text(&run_with_input(curl, b"").stdout)
    };
    // Redeemed from elsewhere: signed in, but nothing opens.
    sign_in_with_curl(&web, &link, &jar, &["--interface", "127.0.0.2"]);
    let file = format!("{}/files/default/web-0?path=/etc/hostname", web.base);
    let refused = curl("127.0.0.2", &file);
    assert!(
        refused.ends_with("\n403")
            && refused.contains(
                "access revoked: the certificate's source-address (127.0.0.1/32) does not include 127.0.0.2"
            ),
        "{refused}"
    );
    wait_for(
        "the refusal in the audit log",
        Duration::from_secs(10),
        || {
            web.audit().iter().any(|e| {
                e["event"] == "revocation"
                    && e["source"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("127.0.0.2"))
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("source-address"))
            })
        },
    );
    // The browser session was ended as revoked: the cookie opens nothing,
    // even from where the certificate would allow.
    let after = curl("127.0.0.1", &file);
    assert!(after.ends_with("\n401"), "{after}");
}

/// A browser session's end ends the terminals it opened: with
/// `session_max_secs = 6`, an open terminal running a command is ended at
/// the browser session's end with one line, and what it ran is ended too.
#[test]
fn a_browser_sessions_end_ends_its_terminals() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "session_max_secs = 6\n");
    let seen = browser(
        "expiry",
        serde_json::json!({
            "base": web.base,
            "link": web.link("alice"),
            "target": "default/web-0",
            "command": "sleep $((20000 + 77))",
            "wait": 30,
        }),
    );
    assert_eq!(
        seen["line"],
        "kbastion: access revoked (the browser session has ended (web.session_max_secs)): this session has ended",
        "{seen}"
    );
    wait_for("the command to be ended", Duration::from_secs(30), || {
        !process_running("sleep 20077")
    });
}

/// One person cannot fill the sign-in table everyone shares: past
/// `web.max_links_per_person` unused links, `ssh alice@bastion web` is
/// refused in one line, while bob still gets his.
#[test]
fn one_person_cannot_take_every_sign_in_link() {
    let sim = Sim::start();
    let web = Web::start(&sim, "max_links_per_person = 3\n");
    for _ in 0..3 {
        web.link("alice");
    }
    let out = web.bastion.ssh("alice", &["web"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "kbastion: alice has 3 unused sign-in links (web.max_links_per_person); use one, or wait 60 s for them to expire\n"
    );
    web.link("bob");
}

/// A tab whose process reads nothing, with half a megabyte pasted into it
/// (held in that page beyond its credit), slows no other tab: a second
/// terminal answers within a second.
#[test]
fn a_stuck_tab_does_not_slow_the_others() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "");
    let seen = browser(
        "stuck_tab",
        serde_json::json!({
            "base": web.base,
            "link": web.link("alice"),
            "target": "default/web-0",
        }),
    );
    let answered = seen["answered_secs"].as_f64().unwrap_or(f64::MAX);
    assert!(answered < 1.0, "the second tab answered after {answered} s");
}

/// Signing out ends what the browser session opened, file transfers as
/// well as terminals: a download in progress stops short.
#[test]
fn signing_out_ends_a_download_in_progress() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "");
    let container = sim.dir.path().join("state/pods/default/web-0/app");
    std::fs::create_dir_all(&container).unwrap();
    std::fs::write(container.join("big.bin"), vec![7u8; 60 << 20]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("cookies");
    let link = web.link("alice");
    sign_in_with_curl(&web, &link, &jar, &[]);
    let download = dir.path().join("big.bin");
    // 1 MB/s: the 60 MiB would take a minute. (What the kernel's socket
    // buffers already hold, a few MB, still arrives after the cut.)
    let mut slow = Command::new("curl")
        .args([
            "-sk",
            "-H",
            "Sec-Fetch-Site: same-origin",
            "--limit-rate",
            "1m",
            "-b",
        ])
        .arg(&jar)
        .arg("-o")
        .arg(&download)
        .args(["-w", "%{http_code}"])
        .arg(format!(
            "{}/files/default/web-0?path={}",
            web.base,
            container.join("big.bin").display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the download to start", Duration::from_secs(20), || {
        std::fs::metadata(&download).is_ok_and(|m| m.len() > 0)
    });
    let out = Command::new("curl")
        .args(["-sk", "-X", "POST", "-H"])
        .arg(format!("Origin: {}", web.base))
        .arg("-b")
        .arg(&jar)
        .arg(format!("{}/logout", web.base))
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).starts_with("signed out"),
        "{}",
        text(&out.stdout)
    );
    let status = wait_exit(&mut slow, "the download to be cut", Duration::from_secs(30));
    let mut code = String::new();
    std::io::Read::read_to_string(&mut slow.stdout.take().unwrap(), &mut code).unwrap();
    assert_eq!(code, "200", "the download did not start");
    assert!(!status.success(), "the download went on to the end");
    let got = std::fs::metadata(&download).map(|m| m.len()).unwrap_or(0);
    assert!(got < 60 << 20, "{got} bytes arrived");
    wait_for(
        "the revocation in the audit log",
        Duration::from_secs(10),
        || {
            web.audit()
                .iter()
                .any(|e| e["event"] == "revocation" && e["reason"] == "signed out")
        },
    );
}

/// Behind a trusted proxy that adds its own `X-Forwarded-For` line (as
/// HAProxy's `option forwardfor` does), the client's own line does not
/// choose its address: the rightmost untrusted address of every line is
/// the one audited.
#[test]
fn a_forwarded_for_line_of_the_clients_own_does_not_choose_its_address() {
    let sim = Sim::start();
    let web = Web::start(&sim, "trusted_proxies = [\"127.0.0.1\"]\n");
    let link = web.link("alice");
    // curl stands in for the proxy at 127.0.0.1: the client sent the
    // first line, the proxy added the second with the address it saw.
    let jar = web.dir.path().join("forwarded-cookies");
    sign_in_with_curl(
        &web,
        &link,
        &jar,
        &[
            "-H",
            "X-Forwarded-For: 127.0.0.1",
            "-H",
            "X-Forwarded-For: 192.0.2.9",
        ],
    );
    wait_for(
        "the sign-in in the audit log",
        Duration::from_secs(10),
        || {
            web.audit()
                .iter()
                .any(|e| e["event"] == "auth" && e["method"] == "web-link")
        },
    );
    let sources: Vec<String> = web
        .audit()
        .iter()
        .filter(|e| e["event"] == "auth" && e["method"] == "web-link")
        .map(|e| e["source"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(sources, ["192.0.2.9"], "{:?}", web.audit());
}

/// Only the bastion's own pages may download, upload or sign out: a
/// request another site's page makes (its Origin, or a cross-site
/// navigation) is refused before anything runs, and the browser session
/// stays signed in.
#[test]
fn another_sites_page_cannot_download_or_sign_out() {
    let sim = Sim::start();
    sim.wait_running("default", "web-0");
    let web = Web::start(&sim, "");
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("cookies");
    let link = web.link("alice");
    sign_in_with_curl(&web, &link, &jar, &[]);
    let request = |method: &str, path: &str, headers: &[&str]| {
        let mut curl = Command::new("curl");
        curl.args(["-sk", "-X", method, "-b"]).arg(&jar);
        for header in headers {
            curl.args(["-H", header]);
        }
        curl.args(["-o", "-", "-w", "\n%{http_code}"])
            .arg(format!("{}{path}", web.base));
        text(&run_with_input(curl, b"").stdout)
    };
    // A .debug download would add an ephemeral container: refused before.
    let debug = "/files/default/web-0/app.debug?path=/etc/hostname";
    let evil = "Origin: https://evil.example";
    for (headers, what) in [
        (&[evil][..], "download"),
        (&["Sec-Fetch-Site: cross-site"][..], "download"),
        (&[][..], "download"),
    ] {
        let answer = request("GET", debug, headers);
        assert_eq!(
            answer,
            format!(
                "cross-origin {what} refused: the Origin must be {}\n\n403",
                web.base
            ),
            "{headers:?}"
        );
    }
    let answer = request("POST", "/logout", &[evil]);
    assert!(answer.ends_with("\n403"), "{answer}");
    // Still signed in: our own page's download works.
    let ours = format!("Origin: {}", web.base);
    let answer = request("GET", "/files/default/web-0?path=/etc/hostname", &[&ours]);
    assert!(answer.ends_with("\n200"), "{answer}");
    let answer = request(
        "GET",
        "/files/default/web-0?path=/etc/hostname",
        &["Sec-Fetch-Site: same-origin"],
    );
    assert!(answer.ends_with("\n200"), "{answer}");
    // Nothing was added to the pod for the refused debug downloads.
    let pod = sim.kubectl("kubectl", "admin", &["get", "pod", "web-0", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_slice(&pod.stdout).unwrap();
    assert!(
        pod["spec"]["ephemeralContainers"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{pod}"
    );
    let answer = request("POST", "/logout", &[&ours]);
    assert!(answer.ends_with("\n200"), "{answer}");
}

/// A sign-in link opens a page that names whose link it is and signs in
/// only from its own button (a same-origin POST): opening a link planted
/// on another site signs nobody in (login CSRF), and another site's form
/// cannot use it either. The link still works from its page afterwards.
#[test]
fn a_link_asks_before_signing_in_and_only_its_own_page_signs_in() {
    let sim = Sim::start();
    let web = Web::start(&sim, "");
    let link = web.link("alice");
    let out = Command::new("curl")
        .args(["-sk", "-D", "-", &link])
        .output()
        .unwrap();
    let answer = text(&out.stdout);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_lowercase().contains("set-cookie"), "{answer}");
    assert!(answer.contains("Sign in as alice?"), "{answer}");
    assert!(answer.contains("<form method=\"post\">"), "{answer}");
    let cross = Command::new("curl")
        .args([
            "-sk",
            "-X",
            "POST",
            "-H",
            "Origin: https://evil.example",
            "-D",
            "-",
            &link,
        ])
        .output()
        .unwrap();
    let answer = text(&cross.stdout);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(!answer.to_lowercase().contains("set-cookie"), "{answer}");
    assert!(
        answer.contains(&format!(
            "cross-origin sign-in refused: the Origin must be {}",
            web.base
        )),
        "{answer}"
    );
    let jar = web.dir.path().join("cookies");
    sign_in_with_curl(&web, &link, &jar, &[]);
    let page = Command::new("curl")
        .args(["-sk", "-b"])
        .arg(&jar)
        .arg(format!("{}/", web.base))
        .output()
        .unwrap();
    assert!(
        text(&page.stdout).contains("default/web-0"),
        "{}",
        text(&page.stdout)
    );
    // Used: the page now says so.
    let again = Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", &link])
        .output()
        .unwrap();
    assert!(
        text(&again.stdout).ends_with("\n410"),
        "{}",
        text(&again.stdout)
    );
}

/// A flood of bad sign-in links cannot flood the audit trail: past a
/// burst, one address's failures are answered 429 and folded into one
/// event with their count; a real link from the same address still signs
/// in.
#[test]
fn a_flood_of_bad_links_is_folded_in_the_audit_trail() {
    let sim = Sim::start();
    let web = Web::start(&sim, "");
    // 500 requests on one connection (curl reuses it).
    let urls: Vec<String> = (0..500)
        .map(|n| format!("{}/login/bad{n}", web.base))
        .collect();
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}\\n"])
        .args(&urls)
        .output()
        .unwrap();
    let codes = text(&out.stdout);
    let not_found = codes.lines().filter(|c| *c == "404").count();
    let throttled = codes.lines().filter(|c| *c == "429").count();
    assert_eq!(not_found + throttled, 500, "{codes}");
    assert!(throttled >= 450, "only {throttled} of 500 were throttled");
    let failures = |audit: &[serde_json::Value]| -> Vec<serde_json::Value> {
        audit
            .iter()
            .filter(|e| e["event"] == "auth" && e["method"] == "web-link" && e["success"] == false)
            .cloned()
            .collect()
    };
    // The folded events (one per interval the flood spanned) count every
    // throttled failure.
    let folded_count = |events: &[serde_json::Value]| -> usize {
        events
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .filter(|r| r.contains("more failed sign-ins from this address"))
            .filter_map(|r| r.split_whitespace().next()?.parse::<usize>().ok())
            .sum()
    };
    let mut events = Vec::new();
    wait_for("the folded events", Duration::from_secs(30), || {
        events = failures(&web.audit());
        folded_count(&events) == throttled
    });
    let one_by_one = events.len()
        - events
            .iter()
            .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("folded")))
            .count();
    assert_eq!(one_by_one, not_found, "every 404 is audited once");
    assert!(
        events.len() <= not_found + 3,
        "{} audit events",
        events.len()
    );
    let link = web.link("alice");
    let jar = web.dir.path().join("cookies");
    sign_in_with_curl(&web, &link, &jar, &[]);
}

/// The web port is bounded like the SSH one: a thousand TLS connections
/// from one address, each sending 60 KB of a request head it never ends,
/// grow kbastion's memory by less than 64 MiB (connections per address and
/// in all are capped, request heads are small), and a signed-in person
/// from another address is served meanwhile.
#[test]
fn a_flood_of_unfinished_requests_is_bounded_and_others_are_served() {
    use std::io::{BufRead, Write};
    let sim = Sim::start();
    let web = Web::start(&sim, "");
    let link = web.link("alice");
    let jar = web.dir.path().join("cookies");
    sign_in_with_curl(&web, &link, &jar, &["--interface", "127.0.0.2"]);
    let pid = web.bastion.process.0.id();
    let before = rss_kib(pid);
    let port = web.base.rsplit(':').next().unwrap().to_string();
    let flood = r#"
import asyncio, ssl, sys
async def one(port, context):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context), 10)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 60000)
        await asyncio.wait_for(writer.drain(), 10)
        return writer
    except Exception:
        return None
async def main():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    held = await asyncio.gather(*[one(int(sys.argv[1]), context) for _ in range(1000)])
    print(sum(1 for w in held if w is not None), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())
"#;
    let mut flooder = Command::new("/usr/bin/python3")
        .args(["-c", flood, &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(flooder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held: usize = line.trim().parse().unwrap_or(0);
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!("{held} flood connections held; RSS grew by {grown} KiB");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    let page = Command::new("curl")
        .args([
            "-sk",
            "--interface",
            "127.0.0.2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-b",
        ])
        .arg(&jar)
        .arg(format!("{}/", web.base))
        .output()
        .unwrap();
    assert_eq!(text(&page.stdout), "200");
    let _ = flooder.stdin.as_mut().unwrap().write_all(b"done\n");
    let _ = flooder.wait();
}
