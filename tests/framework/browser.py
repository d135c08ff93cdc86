"""A real headless Chromium (Debian's ``/usr/bin/chromium``) driven over the
DevTools protocol through a pipe (``--remote-debugging-pipe``: no debugging
port is opened at all).

It is pinned to loopback: every request for another host goes to a proxy on
127.0.0.1:9 (nothing listens there) and every name resolves to nothing; the
background services that call out at start are switched off. A
:class:`LoopbackGuard` watches the sockets of the whole process tree while
the browser runs, and :attr:`Browser.requests` records every URL the page
asked for, so a test can prove that nothing left the machine.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.framework.waiting import TIMEOUT_FACTOR, wait_until_sync

CHROMIUM = Path(os.environ.get("P2PML_CHROMIUM", "/usr/bin/chromium"))

LOOPBACK_FLAGS = [
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
]


class BrowserError(AssertionError):
    pass


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


class LoopbackGuard:
    """Samples every inet socket of a process tree in a thread; any socket
    bound to or connected to an address outside loopback is a violation."""

    def __init__(self, root_pid: int, interval: float = 0.05) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.violations: list[str] = []
        self.samples = 0
        self.sockets_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-guard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.check()  # one last look after the thread ended

    def check(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                # psutil >= 6 names it net_connections; 5.x only has connections
                conns = (getattr(p, "net_connections", None) or p.connections)(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for c in conns:
                self.sockets_seen += 1
                local_ok = not c.laddr or _is_loopback(c.laddr.ip)
                remote_ok = not c.raddr or _is_loopback(c.raddr.ip)
                if not (local_ok and remote_ok):
                    self.violations.append(
                        f"pid {p.pid} ({p.name()}): {c.type.name} {c.laddr} -> {c.raddr} {c.status}"
                    )
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


class Browser:
    """One headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, profile_dir: Path, width: int = 1400, height: int = 1000) -> None:
        if not CHROMIUM.exists():
            raise BrowserError(
                f"{CHROMIUM} not found: run scripts/install-chromium (apt-get install chromium)"
            )
        profile_dir.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        self.requests: list[str] = []
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.session = ""  # the page's DevTools session, set by _open_page
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def child_fds() -> None:  # chromium reads commands on fd 3, writes replies to fd 4
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.stderr_path = profile_dir.parent / "chromium.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",  # tests run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile_dir}",
                f"--window-size={width},{height}",
                *LOOPBACK_FLAGS,
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            preexec_fn=child_fds,
            close_fds=False,  # fds 3 and 4 must survive into chromium (others are O_CLOEXEC)
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(res_w)
        self.guard = LoopbackGuard(self.proc.pid)
        self.guard.start()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        try:
            self._open_page()
        except BaseException:
            self.close()  # never leave a browser behind a failed start
            raise

    def _open_page(self) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.page_call(f"{domain}.enable")
        self.page_call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    # -- protocol ----------------------------------------------------------------

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            with self._cond:
                self._replies[msg["id"]] = msg
                self._cond.notify_all()
            return
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('url', '')}: {entry['text']}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(" ".join(str(a.get("value")) for a in params["args"]))

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise BrowserError(f"no reply to {method} (browser closed: {self._closed})")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def page_call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call(method, params, session=self.session)

    # -- page --------------------------------------------------------------------

    def goto(self, url: str) -> None:
        got = self.page_call("Page.navigate", {"url": url})
        if got.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {got['errorText']}")

    def eval(self, expression: str) -> Any:
        got = self.page_call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in got:
            raise BrowserError(f"{expression!r} threw: {got['exceptionDetails']}")
        return got["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, what: str | None = None) -> Any:
        """Wait until a JS expression is truthy in the page; return its value."""
        box: list[Any] = []

        def ready() -> bool:
            box[:] = [self.eval(expression)]
            return bool(box[0])

        wait_until_sync(ready, timeout, interval=0.05, what=what or expression)
        return box[0]

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field and type as a keyboard would (Input.insertText)."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.page_call("Input.insertText", {"text": text})

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (the viewport grown to the page's height)."""
        height = int(self.eval("document.documentElement.scrollHeight"))
        self.page_call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        data = self.page_call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    # -- teardown ----------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10 * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # helpers left behind, if any
            os.killpg(self.proc.pid, 9)
        self.guard.stop()
        with contextlib.suppress(OSError):
            os.close(self._cmd_w)
        self._reader.join(5)
        with contextlib.suppress(OSError):
            os.close(self._res_r)
        self._stderr.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
