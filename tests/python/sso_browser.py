"""Drives single sign-on in a real headless Chromium (Debian's, through
Playwright for Python): kbastion's pages, the OpenID provider's own login
form (`tests/oidc/provider.mjs`, the `oidc-provider` package), and back.

Usage: sso_browser.py SCENARIO JSON-ARGS
Prints one JSON line with what it saw; tests/e2e_sso.rs asserts on it.
"""

import json
import time
import urllib.request

from web_terminal import WAIT, Terminal, main, open_terminal, step, wait


def at_provider(page, login):
    """Signs in on the provider's login form as `login`."""
    step(f"the provider's login form, as {login}")
    page.wait_for_selector("input[name=login]", timeout=WAIT * 1000)
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")


def back_at(page, base):
    """Waits until the browser is back at kbastion, past its pages that
    move on by themselves; returns the page's text."""
    def settled():
        if not page.url.startswith(base):
            return None
        try:
            body = page.inner_text("body")
        except Exception:
            return None
        return None if body.strip().startswith("Signed in.") or "On to the sign-in" in body else body
    return wait("the way back to kbastion", settled, describe=lambda: page.url)


def sign_in(browser, base, login):
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    step("the start page")
    page.goto(base + "/")
    start = page.inner_text("body")
    page.click("#sign-in")
    at_provider(page, login)
    return context, page, start, back_at(page, base)


def scenario_web(browser, args):
    """Signs in from the start page; opens a terminal on `target`."""
    base = args["base"]
    context, page, start, landed = sign_in(browser, base, args["login"])
    result = {"start": start, "landed": landed, "url": page.url}
    if "target" in args:
        if args.get("refused"):
            terminal_page = context.new_page()
            terminal_page.goto(f"{base}/t/{args['target']}")
            terminal_page.wait_for_function(
                "() => document.body.dataset.closed !== undefined", timeout=WAIT * 1000
            )
            result["terminal"] = Terminal(terminal_page).screen().strip()
        else:
            terminal = open_terminal(context, base, args["target"])
            result["terminal"] = terminal.value("who", args["command"])
    if "public_key" in args:
        step("a certificate from the page")
        page.goto(base + "/")
        page.fill("#public-key", args["public_key"])
        with page.expect_download() as download:
            page.click("#get-certificate")
        with open(download.value.path()) as answer:
            result["certificate"] = answer.read()
    if args.get("stays_for"):
        # Past several of the provider's short ID tokens: still signed in.
        step("staying signed in")
        time.sleep(args["stays_for"])
        page.goto(base + "/")
        result["after_stay"] = page.inner_text("body")
    if args.get("remove"):
        # The provider loses the account (a leaver).
        step("the account leaves the provider")
        request = urllib.request.Request(
            args["issuer"] + "/test/remove-account", data=args["remove"].encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=WAIT).read()
    if args.get("wait_for_end"):
        # The browser session ends with the provider's token.
        step("the session's end")
        wait(
            "the browser session to end",
            lambda: page.goto(base + "/").status != 200 or "Sign in with" in page.inner_text("body"),
            limit=args["wait_for_end"],
        )
        result["after_end"] = page.inner_text("body")
    print(json.dumps(result))


def scenario_approve(browser, args):
    """Opens an ssh connection's sign-in page and approves it."""
    base = args["url"].split("/sso/")[0]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    step("the code's page")
    response = page.goto(args["url"])
    result = {"status": response.status, "page": page.inner_text("body")}
    if response.status == 200:
        page.click("#approve")
        at_provider(page, args["login"])
        result["landed"] = back_at(page, base)
    if args.get("again"):
        step("the code's page again")
        again = context.new_page().goto(args["url"])
        result["again_status"] = again.status
        result["again"] = again.text()
    print(json.dumps(result))


def scenario_replay(browser, args):
    """Signs in, then sends the provider's callback again (its state and
    code replayed)."""
    base = args["base"]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    callbacks = []
    page.on("request", lambda r: callbacks.append(r.url) if "/oidc/callback" in r.url else None)
    page.goto(base + "/")
    page.click("#sign-in")
    at_provider(page, args["login"])
    result = {"landed": back_at(page, base)}
    replayed = context.new_page().goto(callbacks[0])
    result["replay_status"] = replayed.status
    result["replay"] = replayed.text()
    print(json.dumps(result))


if __name__ == "__main__":
    main(globals())
