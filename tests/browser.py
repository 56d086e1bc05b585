"""Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4), so no WebSocket client or port is needed.

``open_page(path)`` loads a local file, waits for the load event and for the page to settle, and
returns every network request the page made, the failed ones, and what a script run in the page
returned; ``screenshot`` saves the whole page as a PNG.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class Browser:
    def __init__(self, executable: str, width: int = 1280, height: int = 900):
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        # fd 3: our commands -> chromium; fd 4: chromium's replies and events -> us
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
                "about:blank"]  # fmt: skip

        def child_fds():  # in the child: the pipe ends to 3 and 4 (via fds >= 10, so neither overwrites the other)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w)]
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target)

        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=child_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(cmd_r)
        os.close(out_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    # --- protocol --------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe (exit code {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """One command; returns its result. Events read meanwhile are kept in ``events``."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read_message(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- pages -----------------------------------------------------------------------------------
    def open_page(self, path: Path, script: str, settle: float = 1.0) -> dict:
        """Load ``path`` (file://) in a new tab; after the load event and ``settle`` seconds without a new
        request, run ``script`` (an expression) in the page. Returns {"session", "requests": [url, ...],
        "failed": [(url, error text)], "result": the script's value}."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired")
        while True:  # settle: no new event for `settle` seconds (late requests of scripts would show here)
            seen = len(self.events)
            time.sleep(settle)
            self.send("Runtime.evaluate", {"expression": "1"}, session=session)
            if len(self.events) == seen:
                break
        value = self.send("Runtime.evaluate", {"expression": script, "returnByValue": True, "awaitPromise": True},
                          session=session)  # fmt: skip
        mine = [e for e in self.events if e.get("sessionId") == session]
        requests = [e["params"]["request"]["url"] for e in mine if e.get("method") == "Network.requestWillBeSent"]
        ids = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in mine if e.get("method") == "Network.requestWillBeSent"}
        failed = [(ids.get(e["params"]["requestId"], "?"), e["params"].get("errorText", "") + " " + e["params"].get("blockedReason", ""))
                  for e in mine if e.get("method") == "Network.loadingFailed"]  # fmt: skip
        if "exceptionDetails" in value:
            raise RuntimeError(f"script failed in the page: {value['exceptionDetails']}")
        return {"session": session, "requests": requests, "failed": failed, "result": value["result"].get("value")}

    def screenshot(self, session: str, out: Path, max_height: int = 8000) -> None:
        """The whole page (up to ``max_height`` px tall) as a PNG."""
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        shot = self.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                         session=session)  # fmt: skip
        Path(out).write_bytes(base64.b64decode(shot["data"]))


# Every <img>: its source (the first 40 characters), whether it finished loading and its natural size.
IMAGES = """[...document.images].map(i => ({src: i.currentSrc.slice(0, 40), complete: i.complete,
                                        width: i.naturalWidth, height: i.naturalHeight}))"""


def overview(shot: Path, out: Path, columns: int, scale: float = 0.5) -> None:
    """A tall screenshot cut into ``columns`` strips, side by side at ``scale`` (256 colours): the README's picture."""
    from PIL import Image

    with Image.open(shot) as img:
        page = img.convert("RGB")
    h = -(-page.height // columns)
    w, sh = round(page.width * scale), round(h * scale)
    canvas = Image.new("RGB", (columns * w + (columns - 1) * 10, sh), "white")
    for k in range(columns):
        canvas.paste(page.crop((0, k * h, page.width, (k + 1) * h)).resize((w, sh), Image.LANCZOS), (k * (w + 10), 0))
    canvas.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


if __name__ == "__main__":  # python tests/browser.py PAGE.html OUT.png [COLUMNS]: a screenshot, e.g. for the README
    import sys

    exe = find_chromium()
    if exe is None or len(sys.argv) not in (3, 4):
        sys.exit("usage: python tests/browser.py PAGE.html OUT.png [COLUMNS] (needs chromium)")
    out, columns = Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 1
    with Browser(exe) as browser:
        opened = browser.open_page(Path(sys.argv[1]), IMAGES)
        browser.screenshot(opened["session"], out)
    if columns > 1:
        overview(out, out, columns)
    print(f"{out}: {len(opened['requests'])} requests, {len(opened['failed'])} failed")
