"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

Why this approach: Chromium's `--remote-debugging-pipe` speaks the DevTools protocol (CDP) as
NUL-separated JSON over file descriptors 3 and 4, so a client needs nothing but `os.pipe`, `json`
and `subprocess` — no websocket library, no port, no Playwright (whose browser download needs the
network). Over CDP the test sees every console message, uncaught exception, security (CSP) report
and network request the page makes, queries the live DOM, and takes a full-page screenshot;
`--dump-dom` or parsing `--enable-logging` output could do only part of that, less reliably.

Run: .ci/setup_report_tools.sh, then `pytest -m browser`. Screenshots go to test-output/.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from deploybench.report.render import render_report
from tests.fixtures.report_demo import demo_frame, demo_settings

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (.ci/setup_report_tools.sh)"),
]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "workflow" / "templates"
OUTPUT = ROOT / "test-output"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]


class CDPPipe:
    """A minimal DevTools-protocol client over --remote-debugging-pipe (fd 3: commands in, fd 4: out)."""

    def __init__(self, chromium: str = "chromium", timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="report-chromium-")
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Move the child's ends above the low fds so the dup2 to 3 and 4 cannot clobber them.
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 20)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 20)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def child_fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(hi_r)
        os.close(hi_w)
        self.wfd, self.rfd = to_chrome_w, from_chrome_r
        self.next_id = 0
        self.replies: dict[int, queue.Queue] = {}
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line.decode(errors="replace").rstrip())

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.rfd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self.lock:
                        q = self.replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    self.events.append(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        with self.lock:
            self.next_id += 1
            mid = self.next_id
            q = self.replies[mid] = queue.Queue()
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no reply to {method} within {self.timeout} s; chromium stderr: {self.stderr[-5:]}"
            ) from None
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str | None = None, timeout: float | None = None) -> dict:
        end = time.monotonic() + (timeout or self.timeout)
        seen = 0
        while time.monotonic() < end:
            for ev in self.events[seen:]:
                if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                    return ev
            seen = 0  # events only grow; rescanning is cheap for one page
            time.sleep(0.02)
        raise TimeoutError(f"no {method} event within {timeout or self.timeout} s")

    def open(self, url: str, width: int = 1280, height: int = 900) -> str:
        """A new page at `url`, with console, log, network and page events on; returns its session."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        self.send("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def screenshot(self, session: str, path: Path, clip: dict | None = None) -> Path:
        if clip is None:
            size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        params = {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}}
        data = self.send("Page.captureScreenshot", params, session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self, session: str) -> list[str]:
        """Console errors/warnings, uncaught exceptions and log errors (CSP reports among them)."""
        out = []
        for ev in self.events:
            if ev.get("sessionId") != session:
                continue
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                e = p["entry"]
                out.append(f"log {e.get('source')}/{e.get('level')}: {e.get('text')} {e.get('url', '')}")
        return out

    def requests(self, session: str) -> list[str]:
        return [
            ev["params"]["request"]["url"]
            for ev in self.events
            if ev.get("sessionId") == session and ev.get("method") == "Network.requestWillBeSent"
        ]

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


DOM_PROBE = """JSON.stringify({
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  tables: Array.from(document.querySelectorAll('figure.table')).map(f => ({
      id: f.id, rows: f.querySelectorAll('tbody tr').length,
      visible: f.getBoundingClientRect().height > 0})),
  charts: Array.from(document.querySelectorAll('figure.chart')).map(f => {
      const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
      return {id: f.id, w: r.width, h: r.height, marks: s ? s.querySelectorAll('polyline,rect,path,circle').length : 0};
  }),
  skipped: Array.from(document.querySelectorAll('[data-skipped=true]')).map(e => e.id),
  text: document.body.innerText,
  overflowX: document.documentElement.scrollWidth > window.innerWidth + 1,
})"""


def _render(tmp: Path, variant: str, **frame_kw) -> tuple[Path, dict]:
    paths = render_report(demo_frame(variant, **frame_kw), demo_settings(variant), tmp, TEMPLATES, pdf=False)
    return paths["html"], json.loads(paths["manifest"].read_text())


@pytest.fixture(scope="module")
def browser():
    b = CDPPipe()
    yield b
    b.close()


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_report_renders_in_chromium(browser, tmp_path, variant):
    html, manifest = _render(tmp_path, variant)
    session = browser.open(html.resolve().as_uri())
    probe = json.loads(browser.evaluate(session, DOM_PROBE))
    shot = browser.screenshot(session, OUTPUT / f"report-{variant}.png")

    assert browser.problems(session) == [], "console errors or warnings in the report"
    foreign = [u for u in browser.requests(session) if not u.startswith(("file:", "data:", "about:"))]
    assert foreign == [], f"the report asked the network for {foreign}"

    ids = set(probe["ids"])
    expected = set(manifest["tables"]) | set(manifest["figures"]) | set(manifest["sections"])
    assert expected - ids == set(), f"missing from the DOM: {sorted(expected - ids)}"
    assert len(probe["ids"]) == len(ids), "duplicate element ids"

    drawn = {c["id"]: c for c in probe["charts"]}
    for fid, meta in manifest["figures"].items():
        if meta["skipped"]:
            assert fid in probe["skipped"], f"{fid} is skipped but not marked so"
        else:
            assert drawn[fid]["w"] > 200 and drawn[fid]["h"] > 150, f"{fid} is not drawn at a readable size"
            assert drawn[fid]["marks"] > 3, f"{fid} has no marks"
    shown = {t["id"]: t for t in probe["tables"]}
    for tid, meta in manifest["tables"].items():
        if not meta["skipped"]:
            assert shown[tid]["rows"] == meta["rows"] and shown[tid]["visible"], tid
    # innerText separates table cells with tabs: a word boundary, not a space, is what to look for.
    leaked = re.search(r"(?<![\w-])(NaN|None|undefined|nan%|inf)(?![\w-])", probe["text"])
    assert leaked is None, f"{leaked and leaked[0]!r} printed in the report"
    assert not probe["overflowX"], "the page scrolls sideways at 1280 px"
    assert shot.stat().st_size > 10_000


def test_report_with_only_failed_cells_renders(browser, tmp_path):
    df = demo_frame("gpu", imported=False)
    df["status"] = "failed"
    df["failure_kind"] = "oom"
    df["error"] = "CUDA out of memory. Tried to allocate 2.00 GiB"
    paths = render_report(df, demo_settings("gpu"), tmp_path, TEMPLATES, pdf=False)
    session = browser.open(paths["html"].resolve().as_uri())
    text = browser.evaluate(session, "document.body.innerText")
    browser.screenshot(session, OUTPUT / "report-only-failed.png")
    assert browser.problems(session) == []
    assert "Every measured cell failed" in text
    assert "every cell failed (oom)" in text
