"""What a user sees in a real browser: the report built by ``rlbench-report`` and the MLflow UI
at the link rlbench prints, on one store of hand-logged runs (``log_run`` of the report tests).

Chromium from the OS packages (``/usr/bin/chromium``; ``.ci/run`` installs it), driven through
the DevTools protocol over a pipe (``--remote-debugging-pipe``: no port, no websocket client,
no new dependency). Each page opens in a browser context of its own, a fresh profile (MLflow's UI
keeps its "GenAI | Model training" toggle in local storage; a fresh one shows the default).

One browser, one ``mlflow server --workers 1`` and one report for the file. The server starts
first (it needs ~15-30 s) and comes up while the runs are logged and the report is built.
Screenshots land in the test's output folder (``first_screen.png``, ``report_full.png``,
``mlflow_runs.png``, ``mlflow_run.png``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_report_build import SCORES, log_run

from rlbench.results import plots
from rlbench.tracking import links, schema

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = (1280, 800)  # a laptop's first screen
MIN_TEXT_PX = 9.0
SEEDS = 3  # of the five per cell in SCORES: enough for ranks, fewer runs to log

pytestmark = [
    pytest.mark.xdist_group("browser"),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]


# --------------------------------------------------------------------------- DevTools protocol
class Browser:
    """Headless Chromium spoken to over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, profile: Path, log: Path) -> None:
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()

        def wire() -> None:  # in the child: the pipe ends on fds 3 and 4, whatever they were
            a, b = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(a, 3)
            os.dup2(b, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
                 f"--user-data-dir={profile}", "about:blank"]  # fmt: skip
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(CHROMIUM), *flags], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                pass_fds=(3, 4), preexec_fn=wire, start_new_session=True,
            )  # fmt: skip
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._next_id = 0
        self.closed = False

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:  # fmt: skip
        """Send one command, return its result (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()}) during {method}")
            self._buffer += chunk

    def new_page(self, width: int, height: int) -> Page:
        """A tab in a fresh browser context (its own storage: a new profile), sized."""
        context = self.call("Target.createBrowserContext")["browserContextId"]
        target = self.call(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        size = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        page.call("Emulation.setDeviceMetricsOverride", size)
        return page

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.browser.call(method, params, self.session, timeout)

    def eval(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event (documents, images, scripts)."""
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", timeout, f"{url} to load")

    def wait_for(self, condition: str, timeout: float, what: str) -> Any:
        """Poll a JavaScript condition until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {what}")
            time.sleep(0.25)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, "
                             "document.documentElement.scrollHeight]")  # fmt: skip
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}  # fmt: skip
        data = self.call("Page.captureScreenshot", params, timeout=60)["data"]
        path.write_bytes(base64.b64decode(data))
        return path


# --------------------------------------------------------------------------- fixtures
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server --workers 1`` on a loopback port, started now, waited for on use."""

    def __init__(self, uri: str, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "mlflow-server.log"
        exe = Path(sys.executable).parent / "mlflow"
        env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true",
                            # no job runner (huey) processes: the UI does not need them
                            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(exe), "server", "--workers", "1", "--host", "127.0.0.1",
                 "--port", str(self.port), "--backend-store-uri", uri,
                 "--default-artifact-root", (folder / "server-artifacts").as_uri()],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
                start_new_session=True,
            )  # fmt: skip
        self._ready = False

    def ready(self, timeout: float = 120.0) -> str:
        """The UI's address once ``/health`` answers."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer,
            ):
                self._ready = answer.status == 200
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not up after {timeout} s: {self.log}")
            time.sleep(0.25)
        return self.url

    def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # the CLI and its uvicorn child
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# Session-scoped, not module-scoped: xdist sends other modules' tests between these (the group
# only keeps them on one worker), and pytest tears a module's fixtures down at each switch. The
# server and the browser are stopped after this file's last test instead (_release).
_STOP: list[Callable[[], None]] = []
_DONE: set[str] = set()


@pytest.fixture(autouse=True)
def _release(request):
    """After the last of this file's tests on this worker: stop the server and the browser."""
    yield
    mine = {item.nodeid for item in request.session.items if item.path == request.node.path}
    _DONE.add(request.node.nodeid)
    if mine <= _DONE:
        while _STOP:
            _STOP.pop()()


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="session")
def store(mlflow_template, folder):
    """The store, its MLflow server (starting), and runs logged as rlbench-train logs them:
    renamed at the end with their score, described; the experiment as rlbench creates it."""
    from rlbench.tracking.store import store_for

    db = folder / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    uri = f"sqlite:///{db}"
    server = MlflowServer(uri, folder)  # comes up while the runs are logged
    _STOP.append(server.stop)
    try:
        exp_id = store_for(uri).prepare("rlbench", (folder / "art").as_uri())
        client = store_for(uri).client
        files = folder / "files"
        files.mkdir()
        names, runs = {}, {}
        for (load, algo), values in SCORES.items():
            for seed, score in enumerate(values[:SEEDS]):
                run_id = log_run(client, exp_id, files, algo=algo, load=load, seed=seed,
                                 score=score)  # fmt: skip
                name = links.scored_name(f"{algo}-autoscaling-{load}-s{seed}", score)
                text = links.description(algo, "autoscaling", load, seed, score, 5)
                client.set_tag(run_id, schema.RUN_NAME_TAG, name)
                client.set_tag(run_id, schema.NOTE_TAG, text)
                names[name] = links.number(score)
                runs[name] = run_id
        yield {
            "uri": uri,
            "exp_id": exp_id,
            "server": server,
            "names": names,  # run name -> its score as written in the name
            "runs": runs,  # run name -> run id
        }
    finally:
        server.stop()


class ReportBuild:
    """``rlbench-report`` on the store, linking runs to the file's MLflow server, started now
    (the MLflow pages are checked while it runs), waited for on use."""

    def __init__(self, store: dict, folder: Path) -> None:
        exe = str(Path(sys.executable).parent / "rlbench-report")
        env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        args = [f"tracking.uri={store['uri']}", f"tracking.ui_url={store['server'].url}",
                "bootstrap.reps=200", "name=browser"]  # fmt: skip
        self.log = folder / "rlbench-report.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [exe, *args], cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.path = folder / "outputs" / "reports" / "browser" / "report.html"

    def html(self) -> Path:
        code = self.proc.wait(timeout=300)
        assert code == 0, self.log.read_text()[-2000:]
        return self.path

    def stop(self) -> None:
        if self.proc.poll() is None:  # a failed test left it running
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def report(store, folder):
    build = ReportBuild(store, folder)
    _STOP.append(build.stop)
    yield build
    build.stop()


@pytest.fixture(scope="session")
def browser(folder):
    chrome = Browser(folder / "chromium-profile", folder / "chromium.log")
    _STOP.append(chrome.close)
    try:
        yield chrome
    finally:
        chrome.close()


@pytest.fixture(scope="session")
def report_page(browser, report, folder) -> Page:
    """report.html in a fresh profile, at a laptop's viewport; screenshots of the first screen
    and of the whole page."""
    page = browser.new_page(*VIEWPORT)
    page.open(report.html().as_uri())
    page.screenshot(folder / "first_screen.png")
    page.screenshot(folder / "report_full.png", full_page=True)
    return page


# --------------------------------------------------------------------------- what a user sees
# the bounding box of an element, and whether it lies within the first screen
BOX = """(el) => { const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
            inside: r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth,
            text: el.innerText}; }"""

# every rendered, non-blank text node: its computed font size and its first characters
TEXT_SIZES = """(() => {
  const out = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim(), el = node.parentElement;
    if (!text || !el) continue;
    const style = getComputedStyle(el), range = document.createRange();
    range.selectNodeContents(node);
    if (style.visibility !== 'visible' || !range.getClientRects().length) continue;  // not drawn
    out.push({size: parseFloat(style.fontSize), text: text.slice(0, 40)});
  }
  return out;
})()"""

# every image: loaded?, its natural and rendered width
IMAGES = """[...document.images].map(img => ({alt: img.alt, complete: img.complete,
    natural: img.naturalWidth, shown: img.getBoundingClientRect().width}))"""


def run_names_readable(page: Page, names: dict[str, str]) -> list[dict]:
    """Each run name (name -> its score as written) as the runs table draws it: ``rows``, whether
    its score's characters lie vertically within the viewport and every box that clips them (the
    row is on screen); ``whole``, whether they lie horizontally within them too (an ellipsis
    hides the end of a cut name); the font size."""
    script = """(names) => Object.entries(names).map(([name, score]) => {
      const el = [...document.querySelectorAll('body *')].find(
          e => e.childElementCount === 0 && e.textContent.trim() === name);
      if (!el) return {name, found: false};
      const node = [...el.childNodes].find(n => n.nodeType === Node.TEXT_NODE);
      const at = node.textContent.lastIndexOf(score), range = document.createRange();
      range.setStart(node, at);
      range.setEnd(node, at + score.length);
      const r = range.getBoundingClientRect();
      let row = r.height > 0 && r.top >= 0 && r.bottom <= innerHeight;
      let whole = r.width > 0 && r.left >= 0 && r.right <= innerWidth;
      for (let a = el; a && a !== document.body; a = a.parentElement) {
        const s = getComputedStyle(a), box = a.getBoundingClientRect();
        if (s.overflowY !== 'visible' && (r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5))
          row = false;
        if (s.overflowX !== 'visible' && (r.left < box.left - 0.5 || r.right > box.right + 0.5))
          whole = false;
      }
      return {name, found: true, row, whole, size: parseFloat(getComputedStyle(el).fontSize)};
    })"""
    return page.eval(f"({script})({json.dumps(names)})")


# --------------------------------------------------------------------------- MLflow's UI
def test_mlflow_link_opens_the_runs_table_with_every_score_readable(browser, store, report, folder):
    """The runs view rlbench links to (the report's "runs view", checked there), in training
    mode; the report is built meanwhile (``report`` starts it)."""
    url = links.runs_url(store["server"].url, store["exp_id"])
    page = browser.new_page(*VIEWPORT)
    store["server"].ready()
    page.open(url)
    scores = store["names"]
    first = next(iter(scores))
    try:
        page.wait_for(f"document.body.innerText.includes({json.dumps(first)})", 60, "the runs")
    finally:
        page.screenshot(folder / "mlflow_runs.png")
    state = page.eval("({hash: location.hash, text: document.body.innerText})")
    assert "/runs" in state["hash"] and "workflowType=machine_learning" in state["hash"], state
    assert "Token Usage" not in state["text"]  # not the GenAI overview
    assert "Run Name" in state["text"]
    rows = run_names_readable(page, scores)
    assert all(r["found"] for r in rows), [r["name"] for r in rows if not r["found"]]
    on_screen = [r for r in rows if r["row"]]
    assert len(on_screen) >= 8, rows  # a first screen of runs
    hidden = [r["name"] for r in on_screen if not r["whole"] or r["size"] < MIN_TEXT_PX]
    assert not hidden, f"runs whose score the runs table does not show: {hidden}"


def test_mlflow_run_link_opens_the_run_with_its_score_and_description(
    browser, store, report, folder
):
    """The link ``rlbench-train`` prints after a single run (``open in MLflow: ...``)."""
    name = next(n for n in store["runs"] if n.endswith("ppo-autoscaling-steady-s0"))
    url = links.run_url(store["server"].ready(), store["exp_id"], store["runs"][name])
    page = browser.new_page(*VIEWPORT)
    page.open(url)
    try:
        page.wait_for(f"document.body.innerText.includes({json.dumps(name)})", 60, "the run")
        page.wait_for("document.body.innerText.includes('held-out test episodes')", 10,
                      "the run's description")  # fmt: skip
    finally:
        page.screenshot(folder / "mlflow_run.png")
    title = page.eval(f"({BOX})(document.querySelector('h1, h2'))")
    assert title["text"].strip() == name and title["inside"], title
    text = page.eval("document.body.innerText")
    assert f"seed 0: test score {store['names'][name]}" in text  # the description, rendered
    assert "workflowType=machine_learning" in page.eval("location.hash")


# --------------------------------------------------------------------------- the report
def test_report_first_screen_shows_the_verdict_and_the_summary_table(report_page):
    page = report_page
    assert page.eval("[innerWidth, innerHeight, devicePixelRatio]") == [*VIEWPORT, 1]
    table = page.eval(f"({BOX})(document.querySelector('table'))")
    assert table["text"].startswith("algorithm\tspike\tsteady\toverall (normalised)"), table
    assert table["inside"], f"the summary table is not on the first screen: {table}"
    assert table["text"].count("★") >= 3  # the rank-1 groups are marked
    verdict = page.eval(f"({BOX})(document.querySelector('h1 + p'))")
    assert f"Each cell rests on {SEEDS} seeds" in verdict["text"], verdict  # the verdict
    assert verdict["inside"], verdict


def test_report_images_load_and_no_text_is_below_9_px(report_page, report):
    page = report_page
    images = page.eval(IMAGES)
    html = report.html().read_text()
    pngs = [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    assert len(images) == len(pngs) >= 8
    from PIL import Image

    small = []
    for image, png in zip(images, pngs, strict=True):
        assert image["complete"] and image["natural"] > 0, f"image not loaded: {image}"
        info = Image.open(io.BytesIO(png))
        assert info.width == image["natural"]
        shown = float(info.info[plots.MIN_TEXT_KEY]) * image["shown"] / image["natural"]
        if shown < MIN_TEXT_PX:
            small.append((image["alt"], round(shown, 1), image["natural"], image["shown"]))
    texts = page.eval(TEXT_SIZES)
    assert len(texts) > 50  # the whole report was walked
    small += [(t["text"], t["size"]) for t in texts if t["size"] < MIN_TEXT_PX]
    assert not small, f"text below {MIN_TEXT_PX} px where shown: {small}"


def test_report_links_the_runs_view_checked_above(report, store):
    url = links.runs_url(store["server"].url, store["exp_id"])
    assert f'href="{url}"' in report.html().read_text()
