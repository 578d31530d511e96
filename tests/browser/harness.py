"""JupyterLab (or a marimo app) on 127.0.0.1 and headless Debian Chromium, for browser tests and the repaint
benchmark.

Verified recipe: ``shared/recipes/browser-tests.md``. JupyterLab runs from this interpreter (so its
``python3`` kernel is this environment) with a random free port, a token and temporary config, data,
runtime, settings and workspace folders (nothing under ``~/.jupyter`` is read or written); the news
toast is off and widget state is saved with notebooks. Chromium is ``/usr/bin/chromium`` driven by
Playwright's sync API (never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 60
STEP_MS = 20_000  # default wait of one step in a page

# Kernel ready in JupyterLab: the status bar's "<kernel> | Idle" (the notebook's execution indicator alone
# reads "idle" too early on a fresh workspace, and a Run All sent then is dropped).
KERNEL_IDLE_LAB = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
      .some(e => / \\| Idle$/.test(e.textContent.trim()))
  && !!document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')"""


ALL_CELLS_RUN = """() => {
  const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')];
  return cells.length > 0 && cells.every(c => /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent))
    && !!document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]');
}"""


@dataclass(frozen=True)
class Server:
    base: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # served folder
    runtime_dir: Path  # kernel connection files
    data_dir: Path  # JUPYTER_DATA_DIR: the notebook signatures (trust) live here
    log: Path

    def api(self, method: str, path: str):
        """Call the REST API; returns the decoded JSON body (None if empty)."""
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            body = response.read()
        return json.loads(body) if body else None

    def lab_url(self, notebook: str) -> str:
        """JupyterLab on ``notebook`` in a fresh workspace (``?reset``)."""
        return f"{self.base}/lab/tree/{notebook}?reset&token={self.token}"

    def notebook7_url(self, notebook: str) -> str:
        return f"{self.base}/notebooks/{notebook}?token={self.token}"

    def write_notebook(self, name: str, nb, *, trusted: bool) -> Path:
        """Write ``nb`` (an ``nbformat`` v4 node) into the served folder, signed as trusted or not.

        A trusted notebook is one the server has a signature for, as for a notebook the user saved in
        JupyterLab; JupyterLab then renders its HTML unsanitized and its widget views. An untrusted one
        (say, executed elsewhere) gets sanitized HTML and no widget views.
        """
        import nbformat
        from nbformat.sign import NotebookNotary

        path = self.root / name
        nbformat.write(nb, path)
        if trusted:
            NotebookNotary(data_dir=str(self.data_dir)).sign(nbformat.read(path, as_version=4))
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(tmp: Path) -> Iterator[Server]:
    """Run JupyterLab serving ``tmp / "root"`` until the block ends (then stop it and its kernels).

    Raises:
        RuntimeError: If the server does not answer ``/api/status`` within ``SERVER_START_S`` seconds
            (the message ends with the server's log).
    """
    root, settings, workspaces = tmp / "root", tmp / "user-settings", tmp / "workspaces"
    root.mkdir(parents=True, exist_ok=True)
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    runtime, data = tmp / "runtime", tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces),
    )
    port, token = _free_port(), uuid.uuid4().hex
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        "--allow-root",
        f"--ServerApp.root_dir={root}",
        "--expose-app-in-browser",
        "--LabApp.news_url=None",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workspaces}",
        "--JupyterNotebookApp.expose_app_in_browser=True",
        f"--JupyterNotebookApp.user_settings_dir={settings}",
        f"--JupyterNotebookApp.workspaces_dir={workspaces}",
    ]
    log_path = tmp / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        try:
            server = Server(f"http://127.0.0.1:{port}", token, root, runtime, data, log_path)
            deadline = time.monotonic() + SERVER_START_S
            while True:
                try:
                    server.api("GET", "/api/status")
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not answer /api/status within {SERVER_START_S} s (exit code "
                        f"{proc.poll()}); its log ends:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.2)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def marimo_app(notebook: Path, tmp: Path) -> Iterator[str]:
    """Run ``marimo run notebook`` (app mode: every cell runs on page load) until the block ends.

    The server is this interpreter's marimo on 127.0.0.1 with a free port, no token, and its home and
    config folders under ``tmp`` (nothing under ``~`` is read or written). Yields the app's URL.

    Raises:
        RuntimeError: If the server does not answer within ``SERVER_START_S`` seconds (the message ends
            with the server's log).
    """
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    port = _free_port()
    cmd = [sys.executable, "-m", "marimo", "run", str(notebook), "--headless", "--host", "127.0.0.1",
           f"--port={port}", "--no-token", "--no-sandbox", "--no-skew-protection"]
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp / "marimo.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=notebook.parent)
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=20):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"marimo did not answer {url} within {SERVER_START_S} s (exit code {proc.poll()}); "
                        f"its log ends:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def kernel_client(server: Server):
    """A second client (``jupyter_client.BlockingKernelClient``) of the one kernel ``server`` runs, to drive or
    read the notebook's Python objects directly; call ``stop_channels()`` when done.

    Raises:
        ValueError: If the server does not run exactly one session.
    """
    from jupyter_client import BlockingKernelClient

    (session,) = server.api("GET", "/api/sessions")
    client = BlockingKernelClient(connection_file=str(server.runtime_dir / f"kernel-{session['kernel']['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


def run_code(client, code: str, timeout: float = 60) -> str:
    """Execute ``code`` in the kernel of ``client``; returns what it printed.

    Raises:
        RuntimeError: If the code raised (the message carries the traceback).
    """
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = client.execute_interactive(code, output_hook=hook, timeout=timeout)
    if reply["content"]["status"] != "ok":
        raise RuntimeError("kernel error:\n" + "".join(out))
    return "".join(out)


def launch_chromium(playwright):
    """Headless ``/usr/bin/chromium`` (Playwright ``Browser``).

    Raises:
        FileNotFoundError: If Debian's chromium is not installed.
    """
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class PageLog:
    """Console errors and uncaught exceptions of a page, for failure messages."""

    def __init__(self, page: Page):
        self.lines: list[str] = []
        page.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))

    def __str__(self) -> str:
        return "\n".join(self.lines[-20:]) or "(no console errors)"


def wait_for(page: Page, expression: str, what: str, log: PageLog, timeout_ms: int = STEP_MS, arg=None):
    """``page.wait_for_function`` that fails with ``what``, the page's status bar and console errors."""
    try:
        return page.wait_for_function(expression, arg=arg, timeout=timeout_ms, polling=100)
    except PlaywrightError as err:
        if "Timeout" not in str(err):
            raise
        status = page.evaluate(
            "() => [...document.querySelectorAll('.jp-StatusBar-TextItem, .jp-KernelStatus')]"
            ".map(e => e.textContent.trim()).join(' | ')"
        )
        errors = page.evaluate(
            "() => [...document.querySelectorAll("
            "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
            ".map(e => e.textContent.slice(0, 500)).join('\\n')"
        )
        pytest.fail(
            f"timed out after {timeout_ms / 1000:.0f} s waiting for {what}\nstatus bar: {status}\n"
            f"stderr outputs: {errors or '(none)'}\n{log}",
            pytrace=False,
        )
