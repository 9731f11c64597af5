"""Headless Chromium driven through the DevTools protocol (CDP), for the page-layout tests and screenshots.

Debian's ``/usr/bin/chromium`` is started with ``--remote-debugging-port=0``: it picks a free port and
writes it to ``DevToolsActivePort`` in its user-data folder, so parallel runs never race for a port. The
protocol is JSON over one WebSocket; the few frames it needs (masked text out, text/continuation/ping/close
in; RFC 6455) are written here with the standard library, so no browser download and no client package is
needed. One page target is attached in flattened mode (``sessionId`` on each message).

Use::

    with Chromium() as browser:
        page = browser.new_page(width=1400)
        page.goto(Path("report.html").as_uri())
        page.evaluate("document.title")
        page.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHROMIUM = Path(os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium"))
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


def available() -> bool:
    """Whether the browser binary exists and is executable."""
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


class CDPError(RuntimeError):
    """The browser answered a command with an error, closed the connection or did not answer in time."""


class _WebSocket:
    """The client side of one WebSocket connection (text messages only, as CDP uses)."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode("ascii"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CDPError("the browser closed the connection during the WebSocket handshake")
            head += chunk
        head, self._buffer = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode("ascii")).digest()).decode("ascii")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if " 101 " not in lines[0] + " " or headers.get("sec-websocket-accept") != accept:
            raise CDPError(f"WebSocket handshake refused: {lines[0]}")

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise CDPError("the browser closed the DevTools connection")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        # XOR with the repeated mask, as one big integer (fast enough for the small commands sent here)
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def recv(self) -> str:
        """The next whole text message (continuation frames joined; pings answered)."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if opcode == 0x8:
                raise CDPError("the browser closed the DevTools connection")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if b0 & 0x80:
                return message.decode("utf-8")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class Page:
    """One browser tab (a CDP session): size it, open a URL, run JavaScript, take screenshots."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def set_width(self, width: int, height: int = 900) -> None:
        """Emulate a desktop window ``width`` CSS px wide (device scale factor 1)."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait for its load event and its fonts."""
        self.send("Page.navigate", url=url)
        self.browser.wait_event("Page.loadEventFired", self.session, timeout)
        self.evaluate("document.fonts.ready.then(() => true)")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited; the result returned by value)."""
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript error: {text}")
        return reply["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = True, clip: dict[str, float] | None = None) -> Path:
        """A PNG of the page (the whole document with ``full_page``) or of ``clip`` (CSS px, page coordinates)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is None and full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    """A headless Chromium process with one DevTools connection; a context manager that always kills it."""

    def __init__(self, binary: Path = CHROMIUM, timeout: float = 30.0) -> None:
        self.binary, self.timeout = binary, timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.profile: str | None = None
        self.ws: _WebSocket | None = None
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    def start(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="assay-chromium-")
        args = [str(self.binary), "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
                "--hide-scrollbars", "--force-color-profile=srgb", "about:blank"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CDPError(f"chromium exited with code {self.process.returncode} before DevTools was ready")
            if port_file.is_file():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    break
            time.sleep(0.05)
        else:
            raise CDPError(f"chromium did not write {port_file} within {self.timeout:.0f} s")
        self.ws = _WebSocket(f"ws://127.0.0.1:{int(lines[0])}{lines[1]}", self.timeout)
        return self

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send a command and return its result; events that arrive meanwhile are kept for :meth:`wait_event`."""
        assert self.ws is not None, "start() the browser first"
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error'].get('message')}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str, session: str | None, timeout: float) -> dict[str, Any]:
        """The first event ``method`` (of ``session``) received since the last wait, waiting up to ``timeout``."""
        assert self.ws is not None, "start() the browser first"
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method and event.get("sessionId") == session:
                    del self._events[: i + 1]
                    return event
            if time.monotonic() > deadline:
                raise CDPError(f"no {method} event within {timeout:.0f} s")
            self.ws.sock.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                reply = json.loads(self.ws.recv())
            except TimeoutError:
                continue
            finally:
                self.ws.sock.settimeout(self.timeout)
            if "method" in reply:
                self._events.append(reply)

    def new_page(self, width: int = 1400, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.set_width(width, height)
        return page

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(CDPError, OSError):
                self.send("Browser.close")
            self.ws.close()
            self.ws = None
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            # the browser runs in its own session: this ends its renderer and helper processes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
            self.process = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def __enter__(self) -> Chromium:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


#: JavaScript that measures the layout of an Assay report page (CSS px, rounded to 0.1): the window and
#: page widths, and per plot (``svg.assay-plot``) its box, its natural width (the ``width`` attribute), the
#: width its figure could give it, whether it is alone in its row, the text that sticks out of its box,
#: its title lines (``text.title``) and the pairs of overlapping labels (``text.label``: point labels,
#: thumbnail captions and headers).
LAYOUT_PROBE = r"""
(() => {
  const r1 = v => Math.round(v * 10) / 10;
  const box = e => { const b = e.getBoundingClientRect();
    return {left: r1(b.left + scrollX), top: r1(b.top + scrollY), right: r1(b.right + scrollX),
            bottom: r1(b.bottom + scrollY), width: r1(b.width), height: r1(b.height)}; };
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5
                         && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5;
  const content = e => { const s = getComputedStyle(e);
    return e.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight); };
  const plots = [...document.querySelectorAll('svg.assay-plot')].map(svg => {
    const own = box(svg);
    const figure = svg.closest('figure') || svg.parentElement;
    const grid = figure.parentElement;
    const fig = box(figure);
    const alone = ![...grid.children].some(other => other !== figure && (() => { const o = box(other);
      return Math.min(o.bottom, fig.bottom) - Math.max(o.top, fig.top) > 0.5; })());
    const texts = [...svg.querySelectorAll('text')].filter(t => (t.textContent || '').trim());
    const outside = texts.map(t => ({text: t.textContent, box: box(t)})).filter(t =>
      t.box.left < own.left - 1 || t.box.right > own.right + 1 || t.box.top < own.top - 1
      || t.box.bottom > own.bottom + 1);
    const labels = [...svg.querySelectorAll('text.label')].map(t => ({text: t.textContent, box: box(t)}));
    const overlaps = [];
    for (let i = 0; i < labels.length; i++)
      for (let j = i + 1; j < labels.length; j++)
        if (overlap(labels[i].box, labels[j].box)) overlaps.push([labels[i].text, labels[j].text]);
    return {id: figure.id || '', label: svg.getAttribute('aria-label'), box: own, figure: fig,
            natural_width: parseFloat(svg.getAttribute('width')), alone: alone,
            room: r1(content(grid) - (figure.offsetWidth - content(figure))),
            titles: [...svg.querySelectorAll('text.title')].map(t => ({text: t.textContent, box: box(t)})),
            n_texts: texts.length, labels: labels.map(l => l.text), outside: outside, overlaps: overlaps};
  });
  return {inner_width: innerWidth, scroll_width: document.documentElement.scrollWidth,
          scroll_height: document.documentElement.scrollHeight, plots: plots,
          heading: (document.querySelector('h1') || {}).textContent || '',
          banner: (document.querySelector('#verdict') || {}).textContent || ''};
})()
"""
