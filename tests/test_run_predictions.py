"""The end of the main job: predictions through a served endpoint, the commands to call it, and the server's fate.

A small HTTP server stands in for the local model server (MLflow's /invocations answering like the registered
pyfunc), so the real `IntentClient` makes real requests; `deploy` and the local server's record are replaced where
the lifecycle (start, keep, stop, never touch another's server) is checked.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from intentops import run_predictions as rp
from intentops.artifacts import CATALOG_FILE, MODEL_CARD
from intentops.catalog import load_catalog
from intentops.config import EXAMPLE_DIR, RunConfig
from intentops.io import write_jsonl
from intentops.serving import deploy as dp

ANSWERS = {
    rp.HANGZHOU.text: "weather_search(杭州)",
    "把音量调小一点": "volume_up()",
    "lights": "turn the lights on",
}


class _Invocations(BaseHTTPRequestHandler):
    """MLflow's scoring protocol: one record in, one prediction record (call + raw) out."""

    def do_GET(self) -> None:  # /ping
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["dataframe_records"][0]["text"]
        raw = ANSWERS.get(text, "")
        call = raw if "(" in raw else None  # the pyfunc's call is None when the answer does not parse
        reply = json.dumps({"predictions": [{"call": call, "raw": raw}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Invocations)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def prompt_dir(tmp_path: Path) -> Path:
    """What a deploy keeps for clients of the local server: the version's card and catalog."""
    folder = tmp_path / "prompt"
    folder.mkdir()
    (folder / MODEL_CARD).write_text(json.dumps({"prompt": {}}), encoding="utf-8")
    (folder / CATALOG_FILE).write_text((EXAMPLE_DIR / CATALOG_FILE).read_text(encoding="utf-8"), encoding="utf-8")
    return folder


EXAMPLES = [rp.HANGZHOU, rp.Example("把音量调小一点", "volume_down()")]


class _LocalServer:
    """The local server's record as `intentops.serving.deploy` keeps it, and who stopped what."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, state: dict | None) -> None:
        self.state, self.deployed, self.stopped = state, [], []
        monkeypatch.setattr(dp, "read_local_state", lambda: self.state)
        monkeypatch.setattr(dp, "process_alive", lambda pid: self.state is not None and self.state["pid"] == pid)
        monkeypatch.setattr(dp, "stop_local", self._stop)
        monkeypatch.setattr(dp, "deploy", self._deploy)

    def _stop(self) -> dict | None:
        self.stopped.append(self.state)
        state, self.state = self.state, None
        return state

    def _deploy(self, cfg: RunConfig, version: str, target: str, record: bool) -> SimpleNamespace:
        assert (target, record) == ("local", False)
        self.deployed.append(version)
        self.state = {**self.pending, "version": version}
        return SimpleNamespace(endpoint=self.state["endpoint"], pid=self.state["pid"])


def test_predictions_go_through_the_endpoint_and_say_how_to_call_it(endpoint: str, prompt_dir: Path) -> None:
    from intentops.prompting import PromptBuilder
    from intentops.serving.client import IntentClient

    with IntentClient(endpoint, "mlflow", builder=PromptBuilder.from_model_dir(prompt_dir)) as client:
        rows = rp.predict_examples(client, [*EXAMPLES, rp.Example("lights", "turn_on_light()")])
    assert [(r.call, r.valid, r.correct) for r in rows] == [
        ("weather_search(杭州)", True, True),
        ("volume_up()", True, False),
        (None, False, False),
    ]
    report = rp.PredictionsReport(endpoint=endpoint, version="3", predictions=rows, started=True, serving=False)
    text = "\n".join(rp.format_predictions(report, ["--set", "registry__tracking_uri=sqlite:////w/mlflow.db"]))
    assert f"predictions through the deployed endpoint {endpoint} (version 3):" in text
    assert "我想去杭州玩，帮我查下天气预报" in text and "-> weather_search(杭州)" in text
    assert "expected volume_down()" in text and "1/3 as expected" in text
    assert '-> (not a call: "turn the lights on")' in text
    assert (
        "intentops deploy --target local --version 3 --detach --set registry__tracking_uri=sqlite:////w/mlflow.db"
        in text
    )
    assert "intentops serve stop" in text
    predict = next(line.strip() for line in text.splitlines() if line.strip().startswith("intentops predict"))
    assert shlex.split(predict) == ["intentops", "predict", rp.HANGZHOU.text]
    curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl"))
    argv = shlex.split(curl)
    assert argv[2] == f"{endpoint}/invocations"
    assert json.loads(argv[-1]) == {"dataframe_records": [{"text": rp.HANGZHOU.text}]}


@pytest.mark.parametrize("keep_serving", [False, True])
def test_the_job_stops_only_the_server_it_started(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, prompt_dir: Path, keep_serving: bool
) -> None:
    server = _LocalServer(monkeypatch, None)
    server.pending = {"pid": 4242, "endpoint": endpoint, "kind": "mlflow", "prompt_dir": str(prompt_dir)}
    report = rp.serve_and_predict(RunConfig(), "2", EXAMPLES, keep_serving=keep_serving)
    assert server.deployed == ["2"] and report.started
    assert [p.call for p in report.predictions] == ["weather_search(杭州)", "volume_up()"]
    assert report.serving is keep_serving
    assert len(server.stopped) == (0 if keep_serving else 1)
    text = "\n".join(rp.format_predictions(report))
    assert ("the server keeps running" in text) is keep_serving


def test_a_server_the_job_did_not_start_is_left_alone(monkeypatch: pytest.MonkeyPatch, endpoint: str, prompt_dir: Path):
    other = {"pid": 777, "endpoint": endpoint, "version": "1", "model_uri": "models:/intent-detector/1"}
    server = _LocalServer(monkeypatch, dict(other))
    report = rp.serve_and_predict(RunConfig(), "2", EXAMPLES)
    assert server.deployed == [] and server.stopped == [] and server.state == other
    assert report.predictions == [] and "did not start (pid 777, models:/intent-detector/1)" in report.skipped
    # Not even the same version number is asked: it may be another MLflow store's version 1.
    report = rp.serve_and_predict(RunConfig(), "1", EXAMPLES)
    assert report.predictions == [] and server.stopped == [] and server.deployed == []
    assert "predictions: none - a local server this job did not start" in "\n".join(rp.format_predictions(report))


def test_examples_are_the_hangzhou_utterance_then_one_test_record_per_intent(tmp_path: Path) -> None:
    test = tmp_path / "test.jsonl"
    write_jsonl(
        test,
        [
            {"text": "北京天气", "output": "weather_search(北京)", "intent": "weather_search"},
            {"text": "play jazz", "output": "play_music(jazz)", "intent": "play_music"},
            {"text": "play rock", "output": "play_music(rock)", "intent": "play_music"},
            {"text": "lights on", "output": "turn_on_light()", "intent": "turn_on_light"},
        ],
    )
    names = load_catalog(EXAMPLE_DIR / CATALOG_FILE).names
    examples = rp.pick_examples(test, names, n=3)
    assert examples == [
        rp.HANGZHOU,
        rp.Example("play jazz", "play_music(jazz)"),
        rp.Example("lights on", "turn_on_light()"),
    ]
    assert rp.pick_examples(test, ["play_music"], n=5)[0] == rp.Example("北京天气", "weather_search(北京)")


def test_the_job_does_not_start_while_a_server_it_did_not_start_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """The pipeline's local deploy step replaces the recorded server: the run stops before anything is touched."""
    from intentops.cli import main

    other = {"pid": 777, "endpoint": "http://127.0.0.1:5000", "version": "1", "model_uri": "models:/intent-detector/1"}
    server = _LocalServer(monkeypatch, dict(other))
    assert main(["run", "--workdir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "a local model server is running (models:/intent-detector/1 at http://127.0.0.1:5000, pid 777)" in err
    assert "intentops serve stop" in err
    assert server.stopped == [] and server.deployed == [] and not (tmp_path / "run").exists()
