"""Open a page in headless Chromium and report what a person would see: title, console errors,
uncaught exceptions, every URL it requested, values read from the DOM, and a screenshot.

Driven over the DevTools protocol (one websocket, flattened target sessions) rather than
``chromium --screenshot`` plus log scraping: ``--enable-logging`` prints console messages in a
format that changes between releases and drops exceptions thrown before the first frame, while
Runtime.consoleAPICalled / Runtime.exceptionThrown / Log.entryAdded (CSP violations, failed
loads) are structured events, Network.requestWillBeSent lists every fetch, and Runtime.evaluate
reads the DOM of the very page that was checked.

The browser runs with ``--no-sandbox`` only when we are root: Chromium refuses to start its
sandbox as root ("Running as root without --no-sandbox is not supported"), and CI and the
developer machines run as root. The page it opens is our own report, loaded from a local file,
with DNS resolution switched off (--host-resolver-rules) so nothing can be fetched either way.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
SETTLE_S = 0.3          # console messages from the load's last tasks arrive just after loadEventFired


def find_browser() -> str | None:
    """$MLOS_CHROMIUM, else the first Chromium on PATH (Debian's package: /usr/bin/chromium)."""
    env = os.environ.get("MLOS_CHROMIUM")
    return env if env and Path(env).exists() else next(filter(None, map(shutil.which, CANDIDATES)), None)


class BrowserError(RuntimeError):
    pass


@dataclass
class PageReport:
    title: str = ""
    console_errors: list[str] = field(default_factory=list)   # console.error/assert, Log errors
    exceptions: list[str] = field(default_factory=list)       # uncaught, with their description
    requests: list[str] = field(default_factory=list)         # every URL the page asked for
    values: dict = field(default_factory=dict)                # name -> Runtime.evaluate result
    screenshot: Path | None = None


class _Cdp:
    """A minimal DevTools client: numbered calls answered by id, events kept and awaited."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self._id = ws, 0
        self._calls: dict[int, asyncio.Future] = {}
        self._waits: dict[str, list[asyncio.Future]] = {}
        self.events: list[dict] = []

    async def pump(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._calls.pop(data["id"], None)
                if fut is None or fut.done():
                    continue
                if "error" in data:
                    fut.set_exception(BrowserError(f"{data['error']}"))
                else:
                    fut.set_result(data.get("result", {}))
            else:
                self.events.append(data)
                for fut in self._waits.pop(data["method"], []):
                    if not fut.done():
                        fut.set_result(data)
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(BrowserError("the browser closed the DevTools connection"))

    def expect(self, method: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waits.setdefault(method, []).append(fut)
        return fut

    async def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = self._calls[self._id] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps(msg))
        return await fut


def _launch(binary: str, profile: str, width: int, height: int) -> subprocess.Popen:
    args = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars", f"--window-size={width},{height}",
            "about:blank"]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")
    log = open(Path(profile) / "chromium.log", "wb")    # never a pipe: a full pipe would block it
    # its own process group: Chromium's helpers (zygote, renderers, crash handler) go with it
    return subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies write nothing: they do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop Chromium and every process of its group, and return only when none of them can
    still write into the profile (removing the profile earlier raced with them: ENOTEMPTY)."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + grace
    while _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if time.monotonic() > deadline - grace / 2 else signal.SIGTERM)
        if time.monotonic() > deadline:
            raise BrowserError(f"chromium's process group {proc.pid} did not exit")
        time.sleep(0.05)


async def _devtools_url(proc: subprocess.Popen, profile: str, timeout: float) -> str:
    # Chromium writes the port it chose and the browser target's path to DevToolsActivePort.
    port_file = Path(profile) / "DevToolsActivePort"
    for _ in range(int(timeout / 0.05)):
        if proc.poll() is not None:
            log = (Path(profile) / "chromium.log").read_text(errors="replace")[-2000:]
            raise BrowserError(f"chromium exited with {proc.returncode} before DevTools was up:\n{log}")
        lines = port_file.read_text().split() if port_file.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise BrowserError(f"chromium did not open DevTools within {timeout:.0f} s")


def _args_text(args: list[dict]) -> str:
    return " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)


def _collect(events: list[dict], report: PageReport) -> None:
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            report.console_errors.append(_args_text(p.get("args", [])))
        elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
            entry = p["entry"]
            report.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        elif e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            report.exceptions.append((d.get("exception") or {}).get("description") or d.get("text", ""))
        elif e["method"] == "Network.requestWillBeSent":
            report.requests.append(p["request"]["url"])


async def _drive(cdp: _Cdp, url: str, evaluate: dict[str, str], screenshot: Path | None) -> PageReport:
    targets = await cdp.call("Target.getTargets")
    page = next(t for t in targets["targetInfos"] if t["type"] == "page")
    session = (await cdp.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}))["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        await cdp.call(f"{domain}.enable", session=session)
    loaded = cdp.expect("Page.loadEventFired")
    nav = await cdp.call("Page.navigate", {"url": url}, session=session)
    if nav.get("errorText"):
        raise BrowserError(f"{url}: {nav['errorText']}")
    await loaded
    await asyncio.sleep(SETTLE_S)
    report = PageReport()
    for name, expr in {"__title": "document.title", **evaluate}.items():
        res = await cdp.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
        if "exceptionDetails" in res:
            raise BrowserError(f"evaluating {name}: {res['exceptionDetails'].get('text')}")
        report.values[name] = res["result"].get("value")
    report.title = report.values.pop("__title")
    if screenshot is not None:
        # the whole page, not just the window: size the viewport to the content first
        size = (await cdp.call("Page.getLayoutMetrics", session=session))["cssContentSize"]
        await cdp.call("Emulation.setDeviceMetricsOverride", {"width": int(size["width"]), "height": int(size["height"]),
                                                              "deviceScaleFactor": 1, "mobile": False}, session=session)
        shot = await cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        report.screenshot = screenshot
    _collect(cdp.events, report)
    return report


async def inspect_page(path, *, evaluate: dict[str, str] | None = None, screenshot=None,
                       width: int = 1280, height: int = 900, timeout: float = 60.0,
                       binary: str | None = None) -> PageReport:
    """Load the local file ``path`` and report on it; ``evaluate`` maps names to JS expressions
    whose (JSON-able) values come back in ``PageReport.values``."""
    binary = binary or find_browser()
    if binary is None:
        raise BrowserError(f"no Chromium found (looked for {', '.join(CANDIDATES)} and $MLOS_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="mlos-chromium-") as profile:
        proc = _launch(binary, profile, width, height)
        try:
            ws_url = await _devtools_url(proc, profile, timeout)
            async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
                cdp = _Cdp(ws)
                pump = asyncio.create_task(cdp.pump())
                try:
                    return await asyncio.wait_for(
                        _drive(cdp, url, evaluate or {}, Path(screenshot) if screenshot else None), timeout)
                finally:
                    pump.cancel()
        finally:
            _stop(proc)


def inspect_page_sync(path, **kw) -> PageReport:
    return asyncio.run(inspect_page(path, **kw))
