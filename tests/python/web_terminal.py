"""Drives kbastion's web terminal in a real headless Chromium (Debian's
/usr/bin/chromium, through Playwright for Python; no browser download).

Usage: web_terminal.py SCENARIO JSON-ARGS
Prints one JSON line with what it saw; the Rust tests (tests/e2e_web.rs)
assert on it. Every wait has a time bound; a failed wait raises with what
the terminal showed.
"""

import http.client
import json
import os
import re
import ssl
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("KBASTION_CHROMIUM", "/usr/bin/chromium")
WAIT = 20.0

SCREEN_JS = """() => {
  const b = window.kbastionTerminal.buffer.active;
  const lines = [];
  for (let i = 0; i < b.length; i++) {
    const line = b.getLine(i);
    const text = line.translateToString(true);
    // A line the terminal wrapped continues the one before.
    if (line.isWrapped && lines.length) lines[lines.length - 1] += text;
    else lines.push(text);
  }
  return lines.join('\\n');
}"""


def step(what):
    """Says on stderr what the scenario does now (shown when a test fails)."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def wait(what, condition, limit=WAIT, describe=lambda: ""):
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {describe()}")
        time.sleep(0.1)


class Terminal:
    def __init__(self, page):
        self.page = page

    def screen(self):
        return self.page.evaluate(SCREEN_JS)

    def size(self):
        return self.page.evaluate("() => [window.kbastionTerminal.rows, window.kbastionTerminal.cols]")

    def wait_for(self, needle, limit=WAIT):
        wait(repr(needle), lambda: needle in self.screen(), limit, self.screen)

    def type(self, text):
        self.page.keyboard.type(text)

    def run(self, command, marker):
        """Types a command line that prints `marker` when it is done."""
        self.type(command + "\n")
        self.wait_for(marker)

    def value(self, name, command):
        """Runs `command` and returns what it printed, as NAME=VALUE; the
        marker is computed by the shell, so the typed line cannot match."""
        self.type(f"echo {name}=$({command})=$((40+2))\n")
        pattern = re.compile(re.escape(name) + r"=(.*)=42$", re.M)
        found = wait(f"{name} from {command!r}", lambda: pattern.findall(self.screen()), describe=self.screen)
        return found[-1]


def open_terminal(context, base, target):
    step(f"open the terminal {target}")
    page = context.new_page()
    page.goto(f"{base}/t/{target}")
    page.wait_for_function("() => window.kbastionTerminal !== undefined", timeout=WAIT * 1000)
    terminal = Terminal(page)
    # The shell is up once it runs what we type.
    terminal.run("echo ready-$((6*7))", "ready-42")
    return terminal


def sign_in(browser, base, link, viewport=None):
    context = browser.new_context(ignore_https_errors=True, viewport=viewport or {"width": 1000, "height": 640})
    page = context.new_page()
    # The link's page names the person; its button signs in.
    page.goto(link)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    return context, page, navigation.value


def raw_request(base, path, headers, method="GET", body=None):
    """An HTTPS request outside the browser: (status, body)."""
    host = base.removeprefix("https://")
    connection = http.client.HTTPSConnection(host, context=ssl._create_unverified_context(), timeout=WAIT)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read().decode()


def scenario_login(browser, args):
    base, link = args["base"], args["link"]
    context, page, response = sign_in(browser, base, link)
    result = {"first_url": page.url, "first_status": response.status, "list": page.inner_text("body")}
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-kbastion")
    result["cookie"] = {k: cookie[k] for k in ("httpOnly", "secure", "sameSite", "path")}
    result["cookie"]["lifetime"] = round(cookie["expires"] - time.time())
    step("the link again")
    # The same link again, in another browser: refused.
    other = browser.new_context(ignore_https_errors=True)
    again = other.new_page().goto(link)
    result["second_status"] = again.status
    result["second_body"] = again.text()
    # A page of another origin (a blank page, in the signed-in browser)
    # cannot open the terminal's WebSocket.
    step("a WebSocket from another origin")
    foreign = context.new_page()
    result["foreign_socket"] = foreign.evaluate(
        """(url) => new Promise((resolve) => {
          const socket = new WebSocket(url);
          socket.onopen = () => resolve('open');
          socket.onclose = (e) => resolve('closed ' + e.code);
        })""",
        base.replace("https://", "wss://") + "/ws/default/web-0",
    )
    step("a forged Origin")
    # And outside a browser, with the cookie and a forged Origin: 403.
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Cookie": f"__Host-kbastion={cookie['value']}",
    }
    result["forged_origin"] = raw_request(base, "/ws/default/web-0", {**upgrade, "Origin": "https://evil.example"})
    result["no_cookie"] = raw_request(base, "/", {})
    step("an oversized message")
    # A message over 64 KiB from a page of ours closes its socket with
    # the reason (after the first size message has started a session).
    page.goto(base + "/t/default/web-0")
    result["oversized"] = page.evaluate(
        """(url) => new Promise((resolve) => {
          const socket = new WebSocket(url);
          socket.binaryType = 'arraybuffer';
          socket.onopen = () => socket.send(new Uint8Array([1, 0, 80, 0, 24]));
          socket.onmessage = (e) => {
            if (new Uint8Array(e.data)[0] === 3) socket.send(new Uint8Array(70000));
          };
          socket.onclose = (e) => resolve(e.code + ' ' + e.reason);
        })""",
        base.replace("https://", "wss://") + "/ws/default/solo",
    )
    step("sign out")
    page.goto(base + "/")
    page.click("text=Sign out")
    result["signed_out"] = page.inner_text("body")
    result["after_sign_out"] = page.goto(base + "/").status
    # A link that has expired.
    if "expired_link" in args:
        time.sleep(max(0, args["expires_at"] + 0.5 - time.time()))
        late = browser.new_context(ignore_https_errors=True).new_page().goto(args["expired_link"])
        result["expired_status"] = late.status
        result["expired_body"] = late.text()
    print(json.dumps(result))


def scenario_list(browser, args):
    context, page, _ = sign_in(browser, args["base"], args["link"])
    result = {"list": page.inner_text("body")}
    terminal_page = context.new_page()
    terminal_page.goto(f"{args['base']}/t/{args['forbidden']}")
    terminal_page.wait_for_function("() => document.body.dataset.closed !== undefined", timeout=WAIT * 1000)
    result["forbidden"] = Terminal(terminal_page).screen().strip()
    print(json.dumps(result))


def scenario_terminal(browser, args):
    context, _, _ = sign_in(browser, args["base"], args["link"], {"width": 900, "height": 500})
    terminal = open_terminal(context, args["base"], args["target"])
    result = {"renderer": terminal.page.evaluate("() => document.body.dataset.renderer")}
    rows, cols = terminal.size()
    result["xterm_size"] = [rows, cols]
    step("stty size")
    result["stty_size"] = terminal.value("size", "stty size | tr ' ' x")
    step("resize")
    terminal.page.set_viewport_size({"width": 1200, "height": 700})
    wait("xterm to resize", lambda: terminal.size() != [rows, cols])
    rows, cols = terminal.size()
    result["xterm_resized"] = [rows, cols]
    result["stty_resized"] = terminal.value("resized", "stty size | tr ' ' x")
    step("characters, typed one key at a time")
    # As people type: one key every 50 ms. In a shell without a UTF-8
    # locale, readline reads each byte of ü as a Meta key (M-C, M-<:
    # beginning-of-history) and recalls the line that opened the terminal
    # (echo ready-…), so what runs is another command line.
    typed = f"/tmp/kbastion-typed-{os.getpid()}-{int(time.time() * 1000)}"
    terminal.page.keyboard.type(f"echo aüb 漢字 🚀 > {typed}\n", delay=50)
    result["typed"] = terminal.value("typed", f"cat {typed}; rm -f {typed}")
    terminal.type("printf 'chars:%s\\n' 'é漢🙂'\n")
    terminal.wait_for("chars:é")
    result["chars"] = [l for l in terminal.screen().splitlines() if l.startswith("chars:")][-1]
    step("Ctrl-C")
    terminal.type("sleep 4242\n")
    time.sleep(0.5)
    terminal.page.keyboard.press("Control+C")
    result["after_interrupt"] = terminal.value("status", "echo $?")
    if args.get("screenshot"):
        terminal.run(
            "clear; printf 'kbastion web terminal: default/web-0, container %s\\n' \"$ROLE\"; "
            "printf 'é漢🙂 whole characters\\n'; stty size; ls --color=always /usr",
            "whole characters",
        )
        time.sleep(0.5)
        terminal.page.screenshot(path=args["screenshot"])
    step("exit 3")
    terminal.type("exit 3\n")
    terminal.page.wait_for_function("() => document.body.dataset.exit !== undefined", timeout=WAIT * 1000)
    result["exit"] = terminal.page.evaluate("() => document.body.dataset.exit")
    result["exit_line"] = [l for l in terminal.screen().splitlines() if "exited" in l][-1].strip()
    print(json.dumps(result))


def scenario_offline(browser, args):
    context, _, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    session = terminal.page.evaluate("() => document.body.dataset.session")
    terminal.run("KEPT=$((1000+234)); echo before-$((0+1))-offline", "before-1-offline")
    context.set_offline(True)
    terminal.page.wait_for_function(
        "() => !document.getElementById('status').hidden", timeout=WAIT * 1000
    )
    time.sleep(args.get("offline_secs", 5))
    context.set_offline(False)
    terminal.page.wait_for_function(
        "() => document.getElementById('status').hidden", timeout=WAIT * 1000
    )
    kept = terminal.value("kept", "echo $KEPT")
    result = {
        "same_session": terminal.page.evaluate("() => document.body.dataset.session") == session,
        "kept": kept,
        "earlier_output": "before-1-offline" in terminal.screen(),
    }
    # A reload of the tab reattaches too, and is sent the recent output.
    terminal.page.reload()
    terminal.page.wait_for_function("() => window.kbastionTerminal !== undefined", timeout=WAIT * 1000)
    terminal.wait_for("kept=1234=42")
    result["reload_kept"] = terminal.value("again", "echo $KEPT")
    result["reload_same_session"] = terminal.page.evaluate("() => document.body.dataset.session") == session
    print(json.dumps(result))


def scenario_stuck_tab(browser, args):
    """One tab's process reads nothing while a paste far beyond the tab's
    credit waits in that page; a second tab's terminal answers at once."""
    context, _, _ = sign_in(browser, args["base"], args["link"])
    stuck = open_terminal(context, args["base"], args["target"])
    stuck.type("stty raw -echo; echo raw-$((6*7)); sleep 600\n")
    stuck.wait_for("raw-42")
    stuck.page.evaluate("() => window.kbastionTerminal.paste('a'.repeat(500000))")
    time.sleep(1)
    other = open_terminal(context, args["base"], args["target"])
    started = time.monotonic()
    other.run("echo other-$((6*7))", "other-42")
    print(json.dumps({"answered_secs": time.monotonic() - started}))


def scenario_expiry(browser, args):
    """Opens a terminal, starts a long command, and waits for the browser
    session's end to end the terminal too."""
    context, _, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    terminal.type(args["command"] + "\n")
    terminal.wait_for("browser session has ended", limit=args["wait"])
    line = [l for l in terminal.screen().splitlines() if "browser session has ended" in l][-1].strip()
    print(json.dumps({"line": line}))


def scenario_abandon(browser, args):
    """Starts a command in a terminal and closes the tab."""
    context, _, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    terminal.type(args["command"] + "\n")
    time.sleep(1)
    terminal.page.close()
    context.close()
    print(json.dumps({"closed": True}))


def sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def transfer_line(page, prefix):
    """Waits for the files bar to say `prefix`... and returns that line."""
    line = lambda: page.inner_text("#transfer")
    return wait(f"the files bar to say {prefix!r}", lambda: line().startswith(prefix) and line(), 60, line)


def scenario_files(browser, args):
    """Downloads a file of the target and uploads files into it (the
    picker and a drop), through the terminal page's files bar."""
    context, _, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    page = terminal.page
    result = {}
    step("download")
    page.fill("#file-path", args["download"])
    with page.expect_download(timeout=60000) as info:
        page.click("#download")
    saved = args["save_to"]
    info.value.save_as(saved)
    result["downloaded_name"] = info.value.suggested_filename
    result["downloaded_sha256"] = sha256(saved)
    result["download_line"] = transfer_line(page, "downloaded")
    step("a missing file")
    page.fill("#file-path", args["download"] + ".missing")
    page.click("#download")
    result["missing_line"] = wait("the missing file's line", lambda: "No such" in page.inner_text("#transfer")
                                  and page.inner_text("#transfer"), 30, lambda: page.inner_text("#transfer"))
    step("upload with the picker")
    page.fill("#file-path", args["upload_dir"] + "/")
    page.set_input_files("#upload-input", args["upload"])
    result["upload_line"] = transfer_line(page, "uploaded")
    step("upload by dropping a file on the terminal")
    page.evaluate(
        """([name, text]) => {
          const data = new DataTransfer();
          data.items.add(new File([text], name));
          const target = document.getElementById('terminal');
          target.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true}));
          target.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
        }""",
        ["dropped.txt", args["dropped_text"]],
    )
    wait("the drop's upload", lambda: "dropped.txt" in page.inner_text("#transfer")
         and page.inner_text("#transfer").startswith("uploaded"), 30, lambda: page.inner_text("#transfer"))
    result["drop_line"] = page.inner_text("#transfer")
    step("an upload from another origin")
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-kbastion")
    headers = {"Cookie": f"__Host-kbastion={cookie['value']}", "Origin": "https://evil.example"}
    result["foreign_upload"] = raw_request(
        args["base"], f"/files/{args['target']}?path={args['upload_dir']}/evil", headers, "PUT", b"x")
    print(json.dumps(result))


def scenario_logs(browser, args):
    """The targets page's log links; a log followed in a tab until Ctrl-C;
    a log downloaded from the files bar."""
    context, page, _ = sign_in(browser, args["base"], args["link"])
    result = {"log_links": page.eval_on_selector_all("a.logs", "links => links.map(a => a.getAttribute('href'))")}
    step("follow a log")
    log = context.new_page()
    log.goto(f"{args['base']}/t/{args['follow']}")
    log.wait_for_function("() => window.kbastionTerminal !== undefined", timeout=WAIT * 1000)
    terminal = Terminal(log)
    lines = lambda: [l for l in terminal.screen().splitlines() if l.startswith("line ")]
    wait("log lines", lambda: len(lines()) >= 3, describe=terminal.screen)
    first = len(lines())
    wait("new log lines", lambda: len(lines()) >= first + 3, describe=terminal.screen)
    result["followed"] = len(lines()) > first
    result["first_line"] = lines()[0]
    log.keyboard.press("Control+C")
    log.wait_for_function("() => document.body.dataset.exit !== undefined", timeout=WAIT * 1000)
    result["exit"] = log.evaluate("() => document.body.dataset.exit")
    step("download a previous log")
    page = context.new_page()
    page.goto(f"{args['base']}/t/{args['download_from']}")
    page.wait_for_function("() => window.kbastionTerminal !== undefined", timeout=WAIT * 1000)
    page.fill("#file-path", "/previous")
    with page.expect_download(timeout=60000) as info:
        page.click("#download")
    info.value.save_as(args["save_to"])
    result["downloaded_sha256"] = sha256(args["save_to"])
    result["download_line"] = transfer_line(page, "downloaded")
    print(json.dumps(result))


def scenario_debug(browser, args):
    """A terminal in a debug container: its note, and the target's file."""
    context, _, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    note = [l for l in terminal.screen().splitlines() if l.startswith("kbastion: debug container")]
    result = {
        "note": note[0] if note else terminal.screen(),
        "config": terminal.value("config", "head -n 1 $TARGET_ROOT/etc/app/config.yaml"),
    }
    print(json.dumps(result))


def scenario_signout(browser, args):
    """Signing out in one tab ends the terminal open in another."""
    context, page, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    page.bring_to_front()
    page.click("text=Sign out")
    terminal.wait_for("signed out")
    line = [l for l in terminal.screen().splitlines() if "signed out" in l]
    terminal.page.wait_for_function("() => document.body.dataset.closed !== undefined", timeout=WAIT * 1000)
    print(json.dumps({"line": line[0].strip()}))


def scenario_fetch(browser, args):
    """Signs in and fetches one address from a page of ours: [status, body]."""
    context, page, _ = sign_in(browser, args["base"], args["link"])
    seen = page.evaluate(
        """async (path) => {
          const response = await fetch(path);
          return [response.status, await response.text()];
        }""",
        args["path"],
    )
    print(json.dumps(seen))


def scenario_input(browser, args):
    """A paste far beyond the page's input credit, into a process that
    first writes a megabyte (which needs the page's acknowledgements) and
    only then reads: the paste waits in the page, the socket keeps being
    read, and every byte arrives."""
    import hashlib
    context, _, _ = sign_in(browser, args["base"], args["link"])
    terminal = open_terminal(context, args["base"], args["target"])
    size = args["bytes"]
    step("output first, then read the paste")
    # The paste must find the terminal in raw mode: a line in canonical
    # mode holds at most 4095 bytes (the kernel drops the rest).
    terminal.type(
        f"stty raw -echo; echo raw-$((6*7)); sleep 1; yes | head -c 1000000; head -c {size} | sha256sum; stty sane; echo read-$((6*7))\n"
    )
    terminal.wait_for("raw-42")
    terminal.page.evaluate(f"() => window.kbastionTerminal.paste('a'.repeat({size}))")
    terminal.wait_for("read-42", limit=60)
    expected = hashlib.sha256(b"a" * size).hexdigest()
    print(json.dumps({"whole": expected in terminal.screen(), "expected": expected}))


def main(scenarios=None):
    """Runs the scenario the command line names, from `scenarios` (a
    module's globals; this one's by default), in one headless Chromium."""
    scenarios = scenarios or globals()
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--ignore-certificate-errors"],
        )
        try:
            scenarios["scenario_" + scenario](browser, args)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
