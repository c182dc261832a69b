"""The real-browser check of the app: server up, page open in headless Chromium, a question
asked, the answers waited for, screenshots saved.

    python -m compara.app.check                       # configs/sample.yaml, bench/out/app.png
    python -m compara.app.check -s model.base=tiny-random-llama -s model.quantize=none

It starts `compara app` on a free localhost port, starts Chromium headless with a fresh
profile and its DevTools protocol on a localhost port, and drives the page through that
protocol (a websocket: the `websockets` client, which Streamlit already brings). It types the
question, clicks Ask with real mouse events, waits for every answer (counting the texts the
tab showed on the way: streaming) and saves a screenshot; asks again in blind mode, checks no
arm name is in the Ask tab before the vote and saves a second screenshot; then opens a second
tab and asks in both at once (both must be answered; one is told to wait its turn). `make
app-check` installs Debian's `chromium` first if it is missing. Exit status 0 when all of that
was seen, 1 otherwise; the server's log is saved next to the screenshots.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compara.arms import Arm

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1", "--remote-debugging-address=127.0.0.1",
                  # two tabs at once: keep the one in the background running at full speed
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows",
                  "--remote-debugging-port=0"]
WIDTH = 1600
QUESTIONS = ["Em que data teve lugar a Revolução dos Cravos em Portugal?",
             "Qual era o nome verdadeiro do inconfidente conhecido como Tiradentes?",
             "De que instituição Machado de Assis foi fundador e primeiro presidente?"]


def hidden_in_blind(arms: Iterable[Arm]) -> list[str]:
    """What must not be on a blind page before the vote: each arm's name, its titles in both
    languages, and the CSS class Streamlit gives an element keyed by the name."""
    from compara.app.i18n import LANGUAGES

    out = set()
    for arm in arms:
        out |= {arm.name, f"st-key-{arm.name}", *(arm.title(lang) for lang in LANGUAGES)}
    return sorted(out)


def names_in(text: str, names: Iterable[str]) -> list[str]:
    """The ``names`` that occur in ``text`` as themselves (not inside a longer word: "rag" is
    not in "fragment", "base" is not in "database")."""
    return sorted({n for n in names
                   if re.search(rf"(?<![\w+]){re.escape(n)}(?![\w+])", text)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def start(cmd: list[str], log: Path | None = None, **kw: Any) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (lives with the process)
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def stop(proc: subprocess.Popen | None) -> None:
    """End a process this check started, and its children (its own process group)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


class Page:
    """A Chromium tab driven over the DevTools protocol."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    @classmethod
    async def connect(cls, ws_url: str) -> Page:
        from websockets.asyncio.client import connect

        return cls(await connect(ws_url, max_size=1 << 28))

    @classmethod
    async def open(cls, devtools_port: int) -> Page:
        """The tab Chromium opened with."""
        targets = json.loads(wait_http(f"http://127.0.0.1:{devtools_port}/json/list", 30))
        page = next(t for t in targets if t.get("type") == "page")
        return await cls.connect(page["webSocketDebuggerUrl"])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{what}: not seen within {timeout:.0f} s")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (so focus moves as for a user)."""
        box = await self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return r.width ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()",
            60, selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                            button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        height = await self.js("Math.max(document.querySelector('[data-testid=\"stMain\"]')"
                               "?.scrollHeight || 0, document.body.scrollHeight)")
        await self.send("Emulation.setDeviceMetricsOverride", width=WIDTH,
                        height=min(max(int(height or 0) + 200, 900), 6000), deviceScaleFactor=1,
                        mobile=False)
        await asyncio.sleep(1.0)
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


ASK_TAB = "document.querySelector('[data-testid=\"stTabs\"] [role=\"tabpanel\"]')"
# The Ask tab without the answers' own text (a model may well write "base"), for the names check.
ASK_TAB_WITHOUT_ANSWERS = (f"(() => {{ const t = {ASK_TAB}.cloneNode(true);"
                           " t.querySelectorAll('[class*=\"st-key-answer-\"]')"
                           ".forEach(e => e.remove()); return t.innerHTML; })()")
DONE = ("(() => { const e = document.querySelector('[class*=\"st-key-ask-done-\"]');"
        " return e ? [...e.classList].find(c => c.startsWith('st-key-ask-done-')) : ''; })()")


WAITING = ("Outra sessão está usando o modelo", "Another session is using the model")


async def ask(page: Page, question: str, timeout: float) -> dict[str, Any]:
    """Type ``question``, click Ask and watch until every answer is on the page: the seconds it
    took, how many different texts the tab showed on the way (streaming), whether it was told to
    wait for another session."""
    await page.wait_for("!!document.querySelector('.st-key-q_text textarea')", 120, "the page")
    before = await page.js(DONE)
    await page.js("(() => { const t = document.querySelector('.st-key-q_text textarea');"
                  " t.focus(); t.select(); })()")
    await page.send("Input.insertText", text=question)
    t0 = time.monotonic()
    await page.click(".st-key-ask_run button")
    texts, waited = set(), False
    while True:
        state = await page.js(f"(() => ({{done: {DONE}, text: {ASK_TAB}.innerText}}))()")
        texts.add(state["text"])
        waited = waited or any(w in state["text"] for w in WAITING)
        if state["done"] and state["done"] != before:
            break
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the answers: not seen within {timeout:.0f} s")
        await asyncio.sleep(0.2)
    seconds = time.monotonic() - t0
    await page.wait_for("!document.querySelector('[data-testid=\"stStatusWidget\"]')", 60,
                        "an idle page")
    return {"seconds": round(seconds, 1), "texts_seen": len(texts), "waited": waited}


async def second_tab(devtools_port: int, url: str) -> Page:
    req = urllib.request.Request(f"http://127.0.0.1:{devtools_port}/json/new?{url}", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as resp:
        target = json.loads(resp.read())
    page = await Page.connect(target["webSocketDebuggerUrl"])
    await page.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=1100,
                    deviceScaleFactor=1, mobile=False)
    return page


async def drive(url: str, devtools_port: int, questions: list[str], out: Path,
                timeout: float, hidden: list[str]) -> dict[str, Any]:
    page = await Page.open(devtools_port)
    await page.send("Page.enable")
    await page.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=1100,
                    deviceScaleFactor=1, mobile=False)
    await page.send("Page.navigate", url=url)
    report: dict[str, Any] = {"url": url, "question": questions[0]}
    report["ask"] = await ask(page, questions[0], timeout)
    report["columns"] = await page.js(f"{ASK_TAB}.querySelectorAll('[data-testid=\"stColumn\"]"
                                      " h4').length")
    report["errors_on_page"] = await page.js(
        "document.querySelectorAll('[data-testid=\"stException\"], "
        "[data-testid=\"stAlertContentError\"]').length")
    await page.screenshot(out)
    report["screenshot"] = str(out)

    await page.click(".st-key-blind label")  # blind mode on, the same question again
    await page.wait_for("document.querySelector('.st-key-blind input')?.checked", 30, "blind on")
    report["blind_ask"] = await ask(page, questions[0], timeout)
    report["names_in_blind_page"] = names_in(await page.js(ASK_TAB_WITHOUT_ANSWERS), hidden)
    blind = out.with_name(out.stem + "-blind" + out.suffix)
    await page.screenshot(blind)
    report["blind_screenshot"] = str(blind)

    # Two browser sessions asking at the same time: both must get their answers.
    other = await second_tab(devtools_port, url)
    both = await asyncio.gather(ask(page, questions[1], timeout),
                                ask(other, questions[2], timeout))
    report["two_sessions"] = both
    for p in (page, other):
        await p.ws.close()
    return report


def main(argv: list[str] | None = None) -> int:
    from core.paths import project_root

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", help="experiment YAML (default: configs/sample.yaml)")
    p.add_argument("-s", "--set", action="append", default=[], help="override key=value")
    p.add_argument("--question", action="append", default=[],
                   help="the question asked (repeat: the 2nd and 3rd are asked by two sessions "
                        "at once)")
    p.add_argument("--out", default=str(project_root() / "bench/out/app.png"))
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the answers")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args(argv)
    if not Path(args.chromium).is_file():
        print(f"chromium not found at {args.chromium} (make app-check installs Debian's chromium)",
              file=sys.stderr)
        return 2
    from compara.arms import experiment_arms
    from compara.config import load_config
    from core.errors import UserError

    try:  # the arms whose names a blind page must not show
        hidden = hidden_in_blind(experiment_arms(load_config(args.config, list(args.set))))
    except UserError as exc:
        print(f"app check: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "compara", "app", "--port", str(port), "--host", "127.0.0.1"]
    cmd += (["-c", args.config] if args.config else []) + [x for s in args.set for x in ("-s", s)]
    server = browser = None
    profile = Path(tempfile.mkdtemp(prefix="compara-chromium-"))
    try:
        server = start(cmd, out.with_name("app-server.log"), cwd=project_root())
        url = f"http://127.0.0.1:{port}/"
        wait_http(url + "_stcore/health", 120, server)
        browser = start([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                         f"--window-size={WIDTH},1100", "about:blank"])
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or browser.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        devtools = int(port_file.read_text().split()[0])
        questions = (args.question + QUESTIONS[len(args.question):])[:3]
        report = asyncio.run(drive(url, devtools, questions, out, args.timeout, hidden))
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"app check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(browser)
        stop(server)
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    ok = report["columns"] >= 1 and not report["errors_on_page"] \
        and not report["names_in_blind_page"] and len(report["two_sessions"]) == 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
