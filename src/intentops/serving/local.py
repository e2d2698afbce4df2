"""The local target: `mlflow models serve` for a registered version as a managed background process.

The server runs in its own process group, recorded in a state file in the IntentOps cache (pid, port, endpoint,
model); `stop_local()` (`intentops serve stop`) ends that group. A failed smoke test brings the previous version back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.io import read_json, write_json
from intentops.serving import manifests as mf
from intentops.serving.client import IntentClient
from intentops.serving.outcome import DeployError, DeployResult
from intentops.serving.smoke import DEFAULT_SMOKE_REQUESTS, smoke_failure, smoke_test

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
LOCAL_STATE_FILE = "local.json"


def local_state_path() -> Path:
    from intentops.storage import default_cache_dir

    return default_cache_dir() / "serve" / LOCAL_STATE_FILE


def read_local_state() -> dict[str, Any] | None:
    """The running local server's record (pid, endpoint, model), or None when none is recorded."""
    path = local_state_path()
    if not path.exists():
        return None
    return read_json(path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(endpoint: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{endpoint}/ping", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _terminate(pid: int) -> None:
    """Stop a server started by `start_local_server` (its own process group), escalating to SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by another command): poll instead
            finished = 0 if process_alive(pid) else pid
        if finished:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _is_model_server(pid: int) -> bool:
    """Whether `pid` still runs `mlflow models serve` (a recycled pid must never be signalled)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return process_alive(pid)  # no procfs (macOS): trust the pid file
    argv = [arg.decode(errors="replace") for arg in cmdline.read_bytes().split(b"\0") if arg]
    return any("mlflow" in arg for arg in argv) and "serve" in argv


def stop_local() -> dict[str, Any] | None:
    """Stop the recorded local server and forget it; returns its record, or None when nothing was running."""
    state = read_local_state()
    if state is None:
        return None
    pid = int(state["pid"])
    if process_alive(pid) and _is_model_server(pid):
        log.info("stopping local server pid %s (%s)", pid, state.get("endpoint"))
        _terminate(pid)
    local_state_path().unlink(missing_ok=True)
    return state


def start_local_server(cfg: RunConfig, model: mf.ModelRef, port: int | None = None) -> dict[str, Any]:
    """Start `mlflow models serve` for the version in the background and wait for /ping; returns its record."""
    from intentops.tracking import resolve_tracking_uri

    port = port or cfg.serving.local_port
    endpoint = f"http://127.0.0.1:{port}"
    if _healthy(endpoint):
        raise DeployError(f"something already serves on {endpoint}; stop it (intentops serve stop) or pick a port")
    state_dir = local_state_path().parent
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"local-{port}.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model.uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    # MLflow's server execs `uvicorn` by name: put this interpreter's scripts first, so an environment used
    # without activation (make, CI, a KFP step) serves with its own uvicorn.
    scripts = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": resolve_tracking_uri(cfg),
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    }
    log.info("local: %s", " ".join(command))
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state = {
        "pid": process.pid,
        "endpoint": endpoint,
        "port": port,
        "kind": "mlflow",
        "model_name": model.name,
        "version": model.version,
        "model_uri": model.uri,
        "log": str(log_path),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    deadline = time.monotonic() + cfg.serving.ready_timeout_s
    while not _healthy(endpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            reason = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            if process.poll() is None:
                _terminate(process.pid)
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise DeployError(f"local model server for {model.uri} {reason} before /ping answered; log tail:\n{tail}")
        time.sleep(0.5)
    write_json(local_state_path(), state)
    log.info("local: %s serving at %s (pid %s)", model.uri, endpoint, process.pid)
    return state


def rollout_local(
    cfg: RunConfig,
    model: mf.ModelRef,
    builder: PromptBuilder,
    *,
    port: int | None = None,
    smoke_requests: int = DEFAULT_SMOKE_REQUESTS,
    request_timeout_s: float = 120.0,
) -> DeployResult:
    """Replace the local server with one for `model`; if its smoke test fails, bring the previous version back."""
    previous = stop_local()
    state = start_local_server(cfg, model, port)
    with IntentClient(state["endpoint"], "mlflow", builder=builder, timeout_s=request_timeout_s) as client:
        report = smoke_test(client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        reason = smoke_failure(report, cfg, state["endpoint"])
        stop_local()
        if previous is not None and previous.get("model_uri"):
            old = mf.ModelRef(previous["model_name"], str(previous["version"]), previous["model_uri"])
            start_local_server(cfg, old, int(previous["port"]))
            raise DeployError(f"{reason}; restarted version {old.version} locally", rolled_back=True)
        raise DeployError(f"{reason}; stopped the local server", rolled_back=True)
    return DeployResult(
        target="local",
        model=model,
        endpoint=state["endpoint"],
        smoke=report,
        previous_version=str(previous["version"]) if previous else None,
        pid=int(state["pid"]),
    )
