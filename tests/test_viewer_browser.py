"""The HTML tree viewer in real headless Chromium: it renders, and nodes expand on click.

Slow lane (``make test-slow``): installs Debian's ``chromium`` and ``chromium-driver`` with
apt when root and missing, then drives the page over ChromeDriver's W3C WebDriver HTTP API
(plain urllib, no client library). Chromium runs with the flags this machine needs (no
sandbox as root, no GPU, no background networking).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import rao_envs
from rao_envs.rollout import run_sync
from rao_envs.viewer import write_html
from tests.procs import stop_process

pytestmark = pytest.mark.slow

CHROME_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
]


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, apt-installing them when root and missing."""
    chrome, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chrome and driver):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("the viewer test needs chromium and chromedriver: sudo apt-get install chromium chromium-driver")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True,
                       capture_output=True, env=env, timeout=900)
        chrome, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return chrome, driver


class WebDriver:
    """The few W3C WebDriver commands the test needs, over urllib."""

    def __init__(self, port: int, chrome: str, profile: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chrome, "args": [*CHROME_ARGS, f"--user-data-dir={profile}"]}}}}
        self.sid = self._req("POST", "/session", caps)["sessionId"]

    def _req(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._req(method, f"/session/{self.sid}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        value = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(value.values()))

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def displayed(self, css: str) -> bool:
        return bool(self.cmd("GET", f"/element/{self.find(css)}/displayed"))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self._req("DELETE", f"/session/{self.sid}")
        except OSError:
            pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome, driver_bin = ensure_chromium()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([driver_bin, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        wd = WebDriver(port, chrome, str(tmp_path_factory.mktemp("chrome-profile")))
        try:
            yield wd
        finally:
            wd.quit()
    finally:
        stop_process(proc)


def test_viewer_renders_and_nodes_expand(browser, tmp_path):
    trees = []
    for seed in (0, 0, 1):
        eng = rao_envs.make_engine("TextCraft-v0", difficulty="hard", lam=0.4)  # hard always delegates
        trees.append(run_sync(eng, eng.task.oracle(), seed=seed))
    trees[1].root.score = 0.0  # make the group's advantages non-zero
    page = tmp_path / "trees.html"
    write_html(trees, str(page))
    browser.get(page.as_uri())
    for _ in range(50):
        if browser.js("return document.body.dataset.ready") == "1":
            break
        time.sleep(0.1)
    counts = browser.js("return [document.querySelectorAll('details.tree').length,"
                        " document.querySelectorAll('details.node').length, document.getElementById('summary').textContent]")
    assert counts[0] == 3 and counts[1] == sum(len(t.nodes) for t in trees)
    assert counts[2] == f"3 trees, {counts[1]} nodes"
    # the first tree is open, its root node closed: the root's transcript is hidden until clicked
    root = 'details.tree[data-tree="0"] > details.node[data-node="0"]'
    assert browser.displayed(f"{root} > summary")
    assert not browser.displayed(f"{root} > .body .transcript")
    browser.click(f"{root} > summary")
    assert browser.js(f"return document.querySelector('{root}').open") is True
    assert browser.displayed(f"{root} > .body > .transcript")
    first_msg = browser.js(f"return document.querySelector('{root} > .body > .transcript .msg.system').textContent")
    assert first_msg.startswith("system") and "Action space" in first_msg
    summary = browser.js(f"return document.querySelector('{root} > summary').textContent")
    assert "finished" in summary and "A=" in summary and "steps" in summary
    # a closed tree opens on click; "Expand all" opens every node
    browser.click('details.tree[data-tree="2"] > summary')
    assert browser.js("return document.querySelector('details.tree[data-tree=\"2\"]').open") is True
    browser.click("#expand-all")
    assert browser.js("return [...document.querySelectorAll('details')].every(d => d.open)") is True
    child = 'details.tree[data-tree="0"] details.node[data-node="0.0"] > .body > .transcript'
    assert browser.displayed(child)
    browser.screenshot(tmp_path / "viewer.png")
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
    browser.click("#collapse-all")
    assert browser.js("return [...document.querySelectorAll('details')].some(d => d.open)") is False
