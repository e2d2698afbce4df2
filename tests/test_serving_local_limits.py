"""The local server's limits and ownership, without a model: utterance and body caps (422/413) in front of the
scoring app, `serve stop` ending every process of the server's group, and one local deploy at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from intentops.artifacts import MODEL_CARD
from intentops.config import RunConfig
from intentops.serving import local
from intentops.serving.local_app import MAX_ROWS, RequestLimits, max_body_bytes
from intentops.serving.manifests import ModelRef
from intentops.serving.outcome import DeployError


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stand-in scoring app: answers 200 with the body it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _post(app: RequestLimits, content: bytes, content_type: str = "application/json") -> httpx.Response:
    import asyncio

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            return await client.post("/invocations", content=content, headers={"content-type": content_type})

    return asyncio.run(call())


def test_overlong_utterance_is_answered_422_before_the_model_runs() -> None:
    app = RequestLimits(_echo, max_text_chars=20)
    ok = json.dumps({"dataframe_records": [{"text": "turn the volume down"}]}).encode()
    assert _post(app, ok).status_code == 200 and _post(app, ok).content == ok
    long = json.dumps({"dataframe_split": {"columns": ["text"], "data": [["x" * 21]]}}).encode()
    refused = _post(app, long)
    assert refused.status_code == 422 and "21 characters" in refused.json()["message"]
    assert _post(app, b"text\n" + b"y" * 21, "text/csv").status_code == 422


def test_body_too_large_for_any_allowed_request_is_413() -> None:
    app = RequestLimits(_echo, max_text_chars=4)
    rows = [{"text": "abcd"}] * MAX_ROWS
    assert _post(app, json.dumps({"dataframe_records": rows}).encode()).status_code == 200
    huge = b" " * (max_body_bytes(4) + 1)
    assert _post(app, huge).status_code == 413


def test_limits_leave_other_routes_alone() -> None:
    import asyncio

    async def call() -> int:
        transport = httpx.ASGITransport(app=RequestLimits(_echo, max_text_chars=1))
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            return (await client.post("/other", content=b"long text")).status_code

    assert asyncio.run(call()) == 200


def _group_with_a_stubborn_worker() -> tuple[subprocess.Popen[str], int]:
    """A leader that dies on SIGTERM and a worker in its group that ignores SIGTERM (a model busy generating)."""
    worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    leader = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {worker!r}], stdout=subprocess.PIPE, text=True)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def test_stopping_a_server_ends_its_whole_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "STOP_TIMEOUT_S", 2.0)
    process, worker = _group_with_a_stubborn_worker()
    try:
        local.stop_process_group(process.pid)
        time.sleep(0.2)
        assert process.poll() is not None
        assert not local.process_alive(worker), "a worker that ignored SIGTERM outlived `serve stop`"
    finally:
        for pid in (worker, process.pid):
            if local.process_alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)


def test_a_second_local_deploy_while_one_runs_fails_and_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTENTOPS_CACHE", str(tmp_path / "cache"))
    recorded = {"pid": 999999, "endpoint": "http://127.0.0.1:1", "port": 1, "model_uri": "models:/m/1"}
    local.local_state_path().parent.mkdir(parents=True)
    local.local_state_path().write_text(json.dumps(recorded), encoding="utf-8")
    # Another command (here: another process) is in the middle of a local deploy.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from intentops.serving import local\n"
         "with local.deploy_lock(): print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DeployError, match=r"another local deploy .*pid \d+.* is in progress"):
            local.rollout_local(RunConfig(), ModelRef("m", "2", "models:/m/2"), builder=None, port=1)  # type: ignore[arg-type]
        assert json.loads(local.local_state_path().read_text()) == recorded  # nothing stopped or replaced
    finally:
        holder.kill()
        holder.wait()


def test_concurrent_deploys_publish_a_versions_prompt_files_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("INTENTOPS_CACHE", str(tmp_path / "cache"))
    model = ModelRef("m", "3", "models:/m/3")
    seen: list[str] = []

    def slow_fetch(folder: Path) -> None:
        with open(folder / MODEL_CARD, "w", encoding="utf-8") as handle:
            handle.write('{"prompt": ')
            handle.flush()
            time.sleep(0.2)  # a reader of this folder now would find half a card
            handle.write("{}}")

    def deploy_side() -> None:
        folder = local.keep_prompt_files(model, slow_fetch)
        seen.append((folder / MODEL_CARD).read_text(encoding="utf-8"))

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(deploy_side) for _ in range(4)]:
            future.result()
    assert seen == ['{"prompt": {}}'] * 4
    assert [p.name for p in local.prompt_cache_dir(model).parent.iterdir()] == ["3"]  # no private folder left
