"""The local target: MLflow's model server for a registered version as a managed background process.

The server (`local_app`: MLflow's scoring app behind utterance and body limits) runs in its own process group,
recorded in a state file in the IntentOps cache (pid, port, endpoint, model); `stop_local()` (`intentops serve stop`)
ends every process of that group. One local deploy runs at a time (`deploy_lock`), so the recorded server is the one
that serves. A failed smoke test brings the previous version back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.io import read_json, write_json
from intentops.serving import manifests as mf
from intentops.serving.client import IntentClient
from intentops.serving.local_app import MAX_TEXT_CHARS_ENV, MODEL_URI_ENV
from intentops.serving.outcome import DeployError, DeployResult
from intentops.serving.smoke import DEFAULT_SMOKE_REQUESTS, smoke_failure, smoke_test

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
LOCAL_STATE_FILE = "local.json"
DEPLOY_LOCK_FILE = "deploy.lock"
APP_FACTORY = "intentops.serving.local_app:create_app"


def max_text_chars(cfg: RunConfig) -> int:
    """The longest utterance the local server accepts: serving.max_text_chars, else data.max_text_chars."""
    return cfg.serving.max_text_chars or cfg.data.max_text_chars


def local_state_path() -> Path:
    from intentops.storage import default_cache_dir

    return default_cache_dir() / "serve" / LOCAL_STATE_FILE


def prompt_cache_dir(model: mf.ModelRef) -> Path:
    """Where a served version's prompt files (card, catalog) are kept for clients of the local server."""
    return local_state_path().parent / "prompt" / mf.label_value(model.name) / mf.label_value(model.version)


def keep_prompt_files(model: mf.ModelRef, fetch: Callable[[Path], object]) -> Path:
    """The version's prompt files (card, catalog) in the cache, for clients of the local server.

    `fetch(folder)` downloads them into a private folder, which is then renamed into place whole: concurrent deploys
    never read a half-written card, and a version's files, which never change, are fetched once.
    """
    dest = prompt_cache_dir(model)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    try:
        fetch(scratch)
        os.rename(scratch, dest)
    except OSError:
        if not dest.is_dir():  # not "another deploy published it first"
            raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return dest


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collect the leader's exit status when it is our child, so a zombie does not keep the group alive."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process_group(pid: int) -> None:
    """End a server started by `start_local_server` and every process of its group (it leads its own session).

    SIGTERM first; whatever is still in the group after STOP_TIMEOUT_S (a worker stuck in generation ignores the
    graceful shutdown) gets SIGKILL. Returns when no process of the group is left.
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    log.warning("local server group %s ignored SIGTERM for %.0f s: killing it", pid, STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid):
        _reap(pid)
        time.sleep(0.05)


@contextlib.contextmanager
def deploy_lock() -> Iterator[None]:
    """Hold the local deploy lock: one local deploy at a time, so the recorded server is the one that serves.

    An exclusive `flock` on a file next to the state file, taken without waiting; a second deploy fails at once
    naming the holder. The kernel releases it when the holder exits, however it exits.
    """
    import fcntl

    path = local_state_path().parent / DEPLOY_LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise DeployError(
                f"another local deploy (pid {holder}) is in progress; wait for it, or stop it, then deploy again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_model_server(pid: int) -> bool:
    """Whether `pid` still runs the local model server (a recycled pid must never be signalled)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return process_alive(pid)  # no procfs (macOS): trust the pid file
    argv = [arg.decode(errors="replace") for arg in cmdline.read_bytes().split(b"\0") if arg]
    return APP_FACTORY in argv or (any("mlflow" in arg for arg in argv) and "serve" in argv)


def stop_local() -> dict[str, Any] | None:
    """Stop the recorded local server and forget it; returns its record, or None when nothing was running."""
    state = read_local_state()
    if state is None:
        return None
    pid = int(state["pid"])
    if process_alive(pid) and _is_model_server(pid):
        log.info("stopping local server pid %s (%s)", pid, state.get("endpoint"))
        stop_process_group(pid)
    local_state_path().unlink(missing_ok=True)
    return state


def start_local_server(
    cfg: RunConfig, model: mf.ModelRef, port: int | None = None, prompt_dir: Path | None = None
) -> dict[str, Any]:
    """Start the model server for the version in the background (own session) and wait for /ping; its record."""
    from intentops.tracking import resolve_tracking_uri

    port = port or cfg.serving.local_port
    endpoint = f"http://127.0.0.1:{port}"
    if _healthy(endpoint):
        raise DeployError(f"something already serves on {endpoint}; stop it (intentops serve stop) or pick a port")
    state_dir = local_state_path().parent
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"local-{port}.log"
    # MLflow's scoring app (what `mlflow models serve` runs) behind the request limits of local_app.
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        APP_FACTORY,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        str(int(STOP_TIMEOUT_S)),
    ]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": resolve_tracking_uri(cfg),
        MODEL_URI_ENV: model.uri,
        MAX_TEXT_CHARS_ENV: str(max_text_chars(cfg)),
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(cfg.serving.request_timeout_s),
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
        "prompt_dir": str(prompt_dir) if prompt_dir else None,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    deadline = time.monotonic() + cfg.serving.ready_timeout_s
    while not _healthy(endpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            reason = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            if process.poll() is None:
                stop_process_group(process.pid)
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
    prompt_dir: Path | None = None,
) -> DeployResult:
    """Replace the local server with one for `model`; if its smoke test fails, bring the previous version back.

    `prompt_dir` (the version's card and catalog) is recorded so clients validate answers against its catalog.
    """
    with deploy_lock():
        return _replace_local(cfg, model, builder, port, smoke_requests, request_timeout_s, prompt_dir)


def _replace_local(
    cfg: RunConfig,
    model: mf.ModelRef,
    builder: PromptBuilder,
    port: int | None,
    smoke_requests: int,
    request_timeout_s: float,
    prompt_dir: Path | None,
) -> DeployResult:
    previous = stop_local()
    state = start_local_server(cfg, model, port, prompt_dir)
    with IntentClient(state["endpoint"], "mlflow", builder=builder, timeout_s=request_timeout_s) as client:
        report = smoke_test(client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        reason = smoke_failure(report, cfg, state["endpoint"])
        stop_local()
        if previous is not None and previous.get("model_uri"):
            old = mf.ModelRef(previous["model_name"], str(previous["version"]), previous["model_uri"])
            old_prompt = Path(previous["prompt_dir"]) if previous.get("prompt_dir") else None
            start_local_server(cfg, old, int(previous["port"]), old_prompt)
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
