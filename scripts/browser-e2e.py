#!/usr/bin/env python3
"""The inbox in a real browser: Debian's chromium, headless, driven by Python playwright.

Usage: browser-e2e.py PATH/TO/notifications   (UPDATE_SCREENSHOT=1 also writes docs/demo-inbox.png)

Two instances share one Redis and the MongoDB-wire dev server, behind a small TCP proxy that
sends each connection to the first instance that accepts it (what a load balancer does when an
instance dies). The demo page (/demo/, built only on clients/js/) is opened through the proxy:
1. it shows the feed and the unseen count;
2. a notification created by the API appears within 1 s and the badge goes up;
3. read clicked in one tab changes the count in a second tab (through the stream);
4. the instance serving the streams is SIGKILLed: the page reconnects to the other one and
   shows every notification created meanwhile, exactly once;
5. the user's tokens are revoked: the page asks its callback for a new one and goes on live.
Screenshots of each step go to .build/browser-artifacts/. Nothing downloads a browser.
"""
import os
import shutil
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.path.join(e2e.ROOT, ".build", "browser-artifacts")
USER = "alice"
KEYS = "demo:browser-e2e-user-token-key-of-32-bytes"


class FailoverProxy:
    """Accepts on a port; pipes each connection to the first backend that accepts it."""

    def __init__(self, backends):
        self.backends = backends
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        for port in self.backends:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                continue
        else:
            client.close()
            return
        upstream.settimeout(None)

        def pipe(source, target):
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)


def create(port, title):
    status, _, body = e2e.call(port, "POST", "/v1/notifications", {"recipientId": USER, "type": "demo", "title": title}, e2e.auth())
    assert status == 201, (status, body)
    return body["id"]


def wait_for(page, predicate, timeout=10.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(predicate):
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def item_ids(page):
    return page.evaluate("[...document.querySelectorAll('li.item')].map((row) => row.dataset.id)")


def main():
    e2e.BINARY = os.path.abspath(sys.argv[1])
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    os.makedirs(ARTIFACTS)
    servers = e2e.Servers()
    # A stream that ends says when to come back (retry:, spread up to STREAM_RETRY_MAX_MS): 2 s here.
    env = dict(USER_TOKEN_KEYS=KEYS, DEMO_UI="true", STREAM_HEARTBEAT_SECONDS="2", STREAM_RETRY_MAX_MS="2000", LOG_LEVEL="info")
    first, second = e2e.Service(servers, **env), e2e.Service(servers, **env)
    proxy = FailoverProxy([first.port, second.port])
    shot = 0

    def screenshot(page, name):
        nonlocal shot
        shot += 1
        page.screenshot(path=os.path.join(ARTIFACTS, f"{shot:02d}-{name}.png"))

    try:
        create(first.port, "Welcome to the inbox")
        create(first.port, "Bob commented on your post")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 640, "height": 560})
            url = f"http://127.0.0.1:{proxy.port}/demo/?userId={USER}"
            tab = context.new_page()
            errors = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto(url)

            # 1. The feed and the unseen count.
            wait_for(tab, "window.inbox?.connected && document.querySelectorAll('li.item').length === 2", what="the feed, live")
            assert tab.inner_text("#badge") == "2", tab.inner_text("#badge")
            screenshot(tab, "feed")

            # 2. Created by the API: on the page within 1 s, the badge up.
            created_at = time.monotonic()
            live_id = create(second.port, "Carol mentioned you")
            shown_at = wait_for(tab, f"document.querySelector('li.item[data-id=\"{live_id}\"]') !== null", what="the new notification")
            wait_for(tab, "document.querySelector('#badge').textContent === '3'", timeout=2, what="the badge at 3")
            latency = shown_at - created_at
            assert latency < 1.0, f"shown after {latency:.3f} s"
            screenshot(tab, "live")
            if os.environ.get("UPDATE_SCREENSHOT") == "1":
                tab.screenshot(path=os.path.join(e2e.ROOT, "docs", "demo-inbox.png"))

            # 3. Read in one tab: the other tab's count follows through the stream.
            other = context.new_page()
            other.goto(url)
            wait_for(other, "window.inbox?.connected && document.querySelector('#unread').textContent === '3'", what="the second tab")
            tab.click(f"li.item[data-id=\"{live_id}\"] button.read")
            wait_for(other, "document.querySelector('#unread').textContent === '2'", timeout=3, what="the second tab's count")
            screenshot(other, "second-tab")

            # 4. The instance holding the streams dies; the page reconnects to the other one and
            # shows what was created meanwhile, once.
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
            missed = [create(second.port, f"While the instance was down #{n}") for n in range(3)]
            wait_for(tab, " && ".join(f"document.querySelector('li.item[data-id=\"{id}\"]') !== null" for id in missed),
                     timeout=30, what="the notifications created during the failover")
            wait_for(tab, "window.inbox.connected", what="live again")
            ids = item_ids(tab)
            assert len(ids) == len(set(ids)) == 6, ids
            screenshot(tab, "after-failover")

            # 5. Revoked: the page gets a new token through its callback and goes on live.
            asked = tab.evaluate("window.tokenRequests")
            assert e2e.call(second.port, "POST", f"/v1/users/{USER}/tokens/revoke", headers=e2e.auth())[0] == 204
            wait_for(tab, f"window.tokenRequests > {asked}", timeout=15, what="a new token")
            time.sleep(1.1)  # tokens of the revocation's own second are refused too
            after = create(second.port, "After the revocation")
            wait_for(tab, f"document.querySelector('li.item[data-id=\"{after}\"]') !== null", timeout=30, what="live after revocation")
            # The counts follow each notification on the stream.
            wait_for(tab, "document.querySelector('#total').textContent === '7'", timeout=3, what="the counts after it")
            screenshot(tab, "after-revocation")
            assert not errors, errors
            browser.close()
        print(f"browser: feed, live in {latency * 1000:.0f} ms, second tab, failover, revocation: ok ({ARTIFACTS})")
    finally:
        e2e.shut_down(servers, first, second)


if __name__ == "__main__":
    main()
