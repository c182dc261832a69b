"""`compara app`: start the Streamlit app (compare_app.py) on localhost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compara.cli.utils import ConfigOption, SetOption, fail, load_experiment

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def streamlit_command(script: Path, host: str, port: int, open_browser: bool) -> list[str]:
    """The `streamlit run` command line: bound to ``host``, no usage statistics, no tracebacks
    in the browser (errors are messages on the page and tracebacks go to the log)."""
    import sys

    return [sys.executable, "-m", "streamlit", "run", str(script),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "false" if open_browser else "true",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--client.showErrorDetails", "none", "--theme.base", "light"]


def app_environment(config: Path | None, sets: list[str] | None) -> dict[str, str]:
    """The environment that hands the experiment config to the app's process."""
    import os

    from compara.app.config import ENV_CONFIG, ENV_SET

    env = dict(os.environ)
    env[ENV_CONFIG] = str(config.resolve()) if config else ""
    env[ENV_SET] = json.dumps(list(sets or []))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.setdefault(var, "1")  # a missing model fails fast instead of hanging on the network
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that spin while waiting fight the server's own threads (and a browser on
    # the same machine) for the cores; sleeping waiters made CPU generation in the app 2-6x
    # faster on a 2-core machine (notes/BENCHMARKS-app.md). Set OMP_WAIT_POLICY to override.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def app(
    config: ConfigOption = None,
    set_: SetOption = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Address to bind (default: app.host, 127.0.0.1). The app has no login: "
                       "bind to another address only on a trusted network.",
        show_default=False)] = None,
    port: Annotated[int | None, typer.Option(
        "--port", "-p", help="Port (default: app.port, 8501).", show_default=False)] = None,
    browser: Annotated[bool, typer.Option(
        "--browser/--no-browser", help="Open a browser tab once the server is up.")] = False,
) -> None:
    """Open the Streamlit app: answers side by side, batch runs, blind rating, leaderboard.

    Models, adapter and index are loaded once per process and shared by every browser session.
    """
    import subprocess

    from core.paths import project_root

    cfg = load_experiment(config, set_)  # a bad config fails here, with a clear message
    host = host or cfg.app.host
    port = port or cfg.app.port
    if not 1 <= port <= 65535:
        fail(f"--port must be in 1..65535, not {port}")
    script = project_root() / "compare_app.py"
    if not script.is_file():
        fail(f"{script} not found: run compara from its checkout (pip install -e .)")
    if host not in LOOPBACK:
        typer.secho(f"warning: binding to {host}: anyone who can reach it can use the app "
                    "(it has no login)", fg="yellow", err=True)
    typer.echo(f"compara app: http://{'localhost' if host in LOOPBACK else host}:{port}  "
               "(Ctrl-C stops it)")
    try:
        code = subprocess.call(streamlit_command(script, host, port, browser),
                               env=app_environment(config, set_), cwd=project_root())
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def register(app_: typer.Typer) -> None:
    app_.command("app")(app)
