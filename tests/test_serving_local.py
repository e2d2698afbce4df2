"""The registry-to-endpoint loop on this machine: register a tiny SFT model as champion on a real MLflow server,
`intentops deploy --target local` serves it with `mlflow models serve`, `intentops predict` answers with a catalog
intent, `intentops serve stop` stops it; and a cluster deploy of the same champion against the fake Kubernetes API
resolves its S3 location and records the endpoint in the registry."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from intentops import registry
from intentops.artifacts import GATE_JSON, ModelFolder
from intentops.cli import main
from intentops.config import RunConfig
from intentops.io import write_json
from intentops.prompting import PromptBuilder
from intentops.serving import deploy as dp
from intentops.serving import manifests as mf
from intentops.serving.local import LOCAL_STATE_FILE
from tests.fake_k8s import FakeKubernetes, FakeOpenAI, KServeController


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def champion(mlflow_server: str, sft_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """A config whose registry holds the tiny SFT model as version 1 @champion (the gate passed)."""
    gate = tmp_path_factory.mktemp("gate") / GATE_JSON
    bound = {"model": {"content_hash": ModelFolder(sft_model_dir).content_hash()}}  # the gate judged this model
    write_json(gate, {"passed": True, "mode": "enabled", "reasons": [], "candidate": bound, "champion": None})
    cfg = RunConfig()
    cfg.registry.tracking_uri = mlflow_server
    cfg.registry.experiment = f"serving-{uuid.uuid4().hex[:8]}"
    cfg.registry.model_name = f"serving-{uuid.uuid4().hex[:8]}"
    version = registry.register_model(
        sft_model_dir, cfg, pipeline_run_id=f"serve-{uuid.uuid4().hex[:8]}", gate_path=gate
    )
    assert version.is_champion
    return cfg


def _cli_overrides(cfg: RunConfig, port: int) -> list[str]:
    # The session's tiny SFT model answers most, not 95%, of the catalog examples in the call grammar.
    return [
        "--set", f"registry__tracking_uri={cfg.registry.tracking_uri}",
        "--set", f"registry__model_name={cfg.registry.model_name}",
        "--set", f"serving__local_port={port}",
        "--set", "serving__smoke_min_valid=0.5",
    ]  # fmt: skip


@pytest.fixture
def serve_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private IntentOps cache (where the local server's pid file lives); stops any server left behind."""
    monkeypatch.setenv("INTENTOPS_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "serve" / LOCAL_STATE_FILE
    dp.stop_local()


def test_local_target_serves_the_champion_and_predict_answers(
    champion: RunConfig, sft_model_dir: Path, serve_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    builder = PromptBuilder.from_model_dir(sft_model_dir)
    code = main(["deploy", "--target", "local", "--detach", "--smoke-requests", "3", *_cli_overrides(champion, port)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    deployed = json.loads(printed.out)
    endpoint = f"http://127.0.0.1:{port}"
    assert deployed["endpoint"] == endpoint and deployed["model"]["version"] == "1"
    state = json.loads(serve_state.read_text())
    assert state["pid"] == deployed["pid"] and dp.process_alive(state["pid"])
    assert httpx.get(f"{endpoint}/ping", timeout=5).status_code == 200

    assert main(["predict", "Turn the volume down"]) == 0  # default endpoint: the recorded local server
    answer = json.loads(capsys.readouterr().out)
    assert answer["valid"] and answer["intent"] in builder.labels
    assert isinstance(answer["params"], list) and answer["latency_ms"] > 0

    version = registry.get_version(champion, "1")
    assert version.tags[registry.DEPLOYMENT_ENDPOINT_TAG] == endpoint
    assert version.tags[registry.DEPLOYMENT_TARGET_TAG] == "local"

    # An utterance over the limit (data.max_text_chars) is refused before the model runs.
    limit = champion.data.max_text_chars
    too_long = httpx.post(
        f"{endpoint}/invocations", json={"dataframe_records": [{"text": "x" * (limit + 1)}]}, timeout=30
    )
    assert too_long.status_code == 422 and f"at most {limit}" in too_long.text
    assert main(["predict", "y" * (limit + 1)]) == 1
    assert "422" in capsys.readouterr().err

    assert main(["serve", "stop"]) == 0
    assert not serve_state.exists() and not dp.process_alive(state["pid"])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{endpoint}/ping", timeout=2)


def test_two_concurrent_local_deploys_on_one_port_leave_one_owner(champion: RunConfig, serve_state: Path) -> None:
    cfg = champion.model_copy(deep=True)
    cfg.serving.smoke_min_valid = 0.5
    port = _free_port()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(dp.deploy, cfg, target="local", port=port, smoke_requests=2) for _ in range(2)]
        outcomes = [f.exception() or f.result() for f in futures]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(served) == 1 and len(failed) == 1, outcomes
    assert isinstance(failed[0], dp.DeployError) and "another local deploy" in str(failed[0])
    state = json.loads(serve_state.read_text())
    assert state["pid"] == served[0].pid and dp.process_alive(state["pid"])

    assert main(["serve", "stop"]) == 0
    assert not dp.process_alive(state["pid"])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2)


def test_cluster_deploy_of_the_champion_uses_its_s3_copy_and_training_prompt(
    champion: RunConfig, sft_model_dir: Path
) -> None:
    builder = PromptBuilder.from_model_dir(sft_model_dir)
    owner = {text: i for i in builder.catalog.intents for text in (*i.examples, i.description)}

    def answer(text: str, constraint: dict[str, Any]) -> str:
        intent = owner[text]
        return f"{intent.name}({','.join('x' for _ in intent.required_parameters)})"

    cfg = champion.model_copy(deep=True)
    cfg.serving.ready_timeout_s = 5
    with FakeKubernetes() as kube, FakeOpenAI(cfg.serving.service_name, answer) as openai:
        kube.on_apply("InferenceService", KServeController(openai.url))
        with pytest.raises(dp.DeployError, match="which a cluster cannot fetch"):
            dp.deploy(cfg, target="kserve", api_client=kube.api_client(), smoke_requests=2)
        result = dp.deploy(
            cfg,
            target="kserve",
            api_client=kube.api_client(),
            artifacts_destination="s3://mlflow-artifacts",
            smoke_requests=3,
            poll_s=0.05,
        )
        stored = kube.get("InferenceService", cfg.serving.service_name)
        asked = openai.routed("rev1")

    storage = stored["spec"]["predictor"]["model"]["storageUri"]
    assert storage.startswith("s3://mlflow-artifacts/") and storage.endswith("/hf_model")
    assert stored["metadata"]["labels"][mf.LABEL_MODEL_NAME] == cfg.registry.model_name
    assert len(asked) == 3 and all(b["messages"] == builder.messages(b["messages"][1]["content"]) for b in asked)
    assert result.smoke.valid == 3
    tags = registry.get_version(cfg, "1").tags
    assert tags[registry.DEPLOYMENT_ENDPOINT_TAG] == result.endpoint == f"{openai.url}/rev1/v1"
    assert tags[registry.DEPLOYMENT_TARGET_TAG] == "kserve"
