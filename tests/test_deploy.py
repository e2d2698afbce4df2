"""Rollout logic against a fake Kubernetes API (the real kubernetes client over HTTP) and a fake vLLM endpoint:
apply, wait, smoke test with structured outputs, canary, promotion and rollback; plus the intent client."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from intentops.artifacts import CATALOG_FILE, MODEL_CARD
from intentops.catalog import Catalog, load_catalog
from intentops.config import EXAMPLE_DIR, PromptConfig, RunConfig
from intentops.grammar import Call, render_call
from intentops.prompting import PromptBuilder
from intentops.serving import deploy as dp
from intentops.serving import manifests as mf
from intentops.serving.client import MAX_CALLS, IntentClient, structured_outputs, valid_calls
from intentops.serving.k8s_rollout import canary_replicas, rollout_k8s
from intentops.serving.kserve_rollout import rollout_kserve
from intentops.serving.kube import Cluster
from intentops.serving.smoke import smoke_probes
from tests.fake_k8s import (
    APPLY_CONTENT_TYPE,
    FakeKubernetes,
    FakeOpenAI,
    KServeController,
    deployment_ready,
    deployment_stuck,
)

SERVED = "intent-detector"
SMOKE = 4


def model(version: str) -> mf.ModelRef:
    return mf.ModelRef(name="intent-detector", version=version, storage_uri=f"s3://models/intent-detector/{version}")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE_DIR / CATALOG_FILE)


@pytest.fixture(scope="module")
def builder(catalog: Catalog) -> PromptBuilder:
    return PromptBuilder(catalog, PromptConfig())


def gold_answer(catalog: Catalog) -> Any:
    """What a perfect model answers: the intent whose example (or description) the text is, with placeholder args."""
    owner = {text: intent for intent in catalog.intents for text in (*intent.examples, intent.description)}

    def answer(text: str, constraint: dict[str, Any]) -> str:
        intent = owner[text]
        return render_call(Call(intent.name, tuple("x" for _ in intent.required_parameters)))

    return answer


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pins = tmp_path / "versions.env"
    pins.write_text("VLLM_IMAGE=vllm/vllm-openai:v0.11.0\nAWS_CLI_IMAGE=amazon/aws-cli:2.17.50\n", encoding="utf-8")
    monkeypatch.setattr(mf, "IMAGES_ENV", pins)


@pytest.fixture
def cfg() -> RunConfig:
    cfg = RunConfig()
    cfg.serving.ready_timeout_s = 3
    cfg.serving.kserve_mode = "Knative"  # canaries split traffic by revision (Knative); Standard is tested apart
    return cfg


@pytest.fixture
def fakes(catalog: Catalog, images: None) -> Iterator[tuple[FakeKubernetes, FakeOpenAI]]:
    with FakeKubernetes() as kube, FakeOpenAI(SERVED, gold_answer(catalog)) as openai:
        yield kube, openai


@pytest.fixture
def cluster(fakes: tuple[FakeKubernetes, FakeOpenAI], tmp_path: Path) -> Cluster:
    return Cluster(fakes[0].api_client(), "intentops", poll_s=0.05, discovery_cache=str(tmp_path / "discovery"))


@pytest.fixture
def kserve(fakes: tuple[FakeKubernetes, FakeOpenAI]) -> KServeController:
    controller = KServeController(fakes[1].url)
    fakes[0].on_apply("InferenceService", controller)
    return controller


def isvc_applies(kube: FakeKubernetes) -> list[tuple[str, Any]]:
    """(version label, canaryTrafficPercent) of every InferenceService apply, in order."""
    return [
        (r.body["metadata"]["labels"][mf.LABEL_MODEL_VERSION], r.body["spec"]["predictor"].get("canaryTrafficPercent"))
        for r in kube.applies("InferenceService")
    ]


# ---- KServe -----------------------------------------------------------------------------------------------------------


def test_kserve_first_rollout_applies_waits_and_smoke_tests_with_constraints(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, openai = fakes
    result = rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)

    assert [r.body["kind"] for r in kube.applies()] == ["ServiceAccount", "ServingRuntime", "InferenceService"]
    for request in kube.applies():
        assert request.content_type == APPLY_CONTENT_TYPE
        assert request.query["fieldManager"] == ["intentops"] and request.query["force"] == ["True"]
    stored = kube.get("InferenceService", "intent-detector")
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]  # nothing serves yet: no canary
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/intent-detector/1"
    assert result.endpoint == f"{openai.url}/rev1/v1"
    assert result.canary_percent is None and result.previous_version is None

    asked = openai.routed("rev1")
    assert len(asked) == SMOKE and result.smoke.valid == SMOKE and result.smoke.accuracy == 1.0
    expected_constraint = structured_outputs(builder)
    for body in asked:
        assert body["structured_outputs"] == expected_constraint
        assert body["model"] == SERVED and body["temperature"] == 0.0
        assert body["messages"] == builder.messages(body["messages"][1]["content"])


def test_kserve_canary_is_smoke_tested_on_its_own_url_then_promoted(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, openai = fakes
    rollout_kserve(cfg, model("1"), builder, cluster, 20, smoke_requests=SMOKE)
    result = rollout_kserve(cfg, model("2"), builder, cluster, 20, smoke_requests=SMOKE)

    assert isvc_applies(kube) == [("1", None), ("2", 20), ("2", None)]
    canary_step = kserve.history[1]["traffic"]
    assert [(t["tag"], t["percent"]) for t in canary_step] == [("prev", 80), ("latest", 20)]
    assert len(openai.routed("rev2")) == SMOKE and len(openai.routed("rev1")) == SMOKE
    stored = kube.get("InferenceService", "intent-detector")
    assert stored["metadata"]["labels"][mf.LABEL_MODEL_VERSION] == "2"
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]
    assert kserve.revisions[kserve.rolled_out] == "2"
    assert result.previous_version == "1" and result.canary_percent == 20
    assert result.endpoint == f"{openai.url}/rev2/v1"


@pytest.mark.parametrize("behaviour", ["error", "flaky"])
def test_kserve_canary_failing_smoke_or_error_rate_rolls_back(
    behaviour: str,
    cfg: RunConfig,
    fakes: tuple[FakeKubernetes, FakeOpenAI],
    cluster: Cluster,
    kserve: KServeController,
    builder: PromptBuilder,
) -> None:
    kube, openai = fakes
    rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    openai.behaviours["rev2"] = behaviour
    with pytest.raises(dp.DeployError, match=r"smoke test .* failed.*rolled back to version 1") as failure:
        rollout_kserve(cfg, model("2"), builder, cluster, 10, smoke_requests=SMOKE)

    assert failure.value.rolled_back
    # Traffic is pinned to the old revision first (canaryTrafficPercent 0), then the old spec is restored.
    assert isvc_applies(kube) == [("1", None), ("2", 10), ("1", 0), ("1", None)]
    assert [(t["tag"], t["percent"]) for t in kserve.history[2]["traffic"]] == [("prev", 100)]
    stored = kube.get("InferenceService", "intent-detector")
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/intent-detector/1"
    assert stored["metadata"]["labels"][mf.LABEL_MODEL_VERSION] == "1"
    assert kserve.revisions[kserve.rolled_out] == "1"


def test_kserve_replacement_without_canary_restores_the_previous_spec(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, openai = fakes
    rollout_kserve(cfg, model("1"), builder, cluster, 0, smoke_requests=SMOKE)
    openai.behaviours["rev2"] = "error"
    with pytest.raises(dp.DeployError, match="rolled back to version 1"):
        rollout_kserve(cfg, model("2"), builder, cluster, 0, smoke_requests=SMOKE)
    assert isvc_applies(kube) == [("1", None), ("2", None), ("1", None)]  # no canary, so nothing to pin
    assert kserve.revisions[kserve.rolled_out] == "1"


def test_kserve_canary_that_never_gets_ready_times_out_and_rolls_back(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, openai = fakes
    rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    kserve.ready_versions = {"1"}
    cfg.serving.ready_timeout_s = 1
    with pytest.raises(dp.DeployError, match=r"not ready after 1s: Ready=False \(RevisionFailed") as failure:
        rollout_kserve(cfg, model("2"), builder, cluster, 10, smoke_requests=SMOKE)
    assert failure.value.rolled_back and "rolled back to version 1" in str(failure.value)
    assert openai.routed("rev2") == []  # never smoke-tested
    assert kube.get("InferenceService", "intent-detector")["metadata"]["labels"][mf.LABEL_MODEL_VERSION] == "1"


def test_kserve_first_rollout_that_never_gets_ready_is_deleted(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, _ = fakes
    kserve.ready_versions = set()
    cfg.serving.ready_timeout_s = 1
    with pytest.raises(dp.DeployError, match="deleted InferenceService/intent-detector"):
        rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    assert kube.get("InferenceService", "intent-detector") is None


def test_kserve_redeploying_the_serving_version_is_no_canary(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, _ = fakes
    rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    result = rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    assert isvc_applies(kube) == [("1", None), ("1", None)]
    assert kube.get("InferenceService", "intent-detector")["metadata"]["generation"] == 1
    assert result.canary_percent is None and result.previous_version is None


# ---- plain Kubernetes -------------------------------------------------------------------------------------------------


def test_k8s_canary_weighted_by_replicas_then_promoted(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, builder: PromptBuilder
) -> None:
    kube, openai = fakes
    kube.on_apply("Deployment", deployment_ready)
    first = rollout_k8s(
        cfg, model("1"), builder, cluster, 25, replicas=3, smoke_endpoint=f"{openai.url}/pods1", smoke_requests=SMOKE
    )
    assert first.canary_percent is None and kube.get("Deployment", "intent-detector-v1")["spec"]["replicas"] == 3
    assert first.endpoint == "http://intent-detector.intentops.svc.cluster.local:80/v1"

    second = rollout_k8s(
        cfg, model("2"), builder, cluster, 25, smoke_endpoint=f"{openai.url}/pods2", smoke_requests=SMOKE
    )
    replicas = [r.body["spec"]["replicas"] for r in kube.applies("Deployment") if "v2" in r.path]
    assert replicas == [1, 3]  # 1 canary pod beside 3 stable ones (25%), then the stable size
    assert kube.names("Deployment") == ["intent-detector-v2"]
    assert kube.names("Service") == ["intent-detector", "intent-detector-v2"]
    assert kube.get("Service", "intent-detector")["spec"]["selector"] == {mf.LABEL_APP: "intent-detector"}
    assert len(openai.routed("pods2")) == SMOKE
    assert second.previous_version == "1" and second.canary_percent == 25


def test_k8s_failed_canary_is_removed_and_stable_untouched(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, builder: PromptBuilder
) -> None:
    kube, openai = fakes
    kube.on_apply("Deployment", deployment_ready)
    rollout_k8s(
        cfg, model("1"), builder, cluster, 10, replicas=2, smoke_endpoint=f"{openai.url}/pods1", smoke_requests=SMOKE
    )
    openai.behaviours["pods2"] = "error"
    with pytest.raises(dp.DeployError, match="removed intent-detector-v2, version 1 keeps serving") as failure:
        rollout_k8s(cfg, model("2"), builder, cluster, 10, smoke_endpoint=f"{openai.url}/pods2", smoke_requests=SMOKE)
    assert failure.value.rolled_back
    assert kube.names("Deployment") == ["intent-detector-v1"]
    assert kube.get("Deployment", "intent-detector-v1")["spec"]["replicas"] == 2
    assert kube.names("Service") == ["intent-detector", "intent-detector-v1"]


def test_k8s_redeploy_of_the_serving_version_keeps_its_size_and_never_deletes_it(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, builder: PromptBuilder
) -> None:
    kube, openai = fakes
    kube.on_apply("Deployment", deployment_ready)
    url = f"{openai.url}/pods1"
    rollout_k8s(cfg, model("1"), builder, cluster, 10, replicas=2, smoke_endpoint=url, smoke_requests=SMOKE)
    again = rollout_k8s(cfg, model("1"), builder, cluster, 10, smoke_endpoint=url, smoke_requests=SMOKE)
    assert again.canary_percent is None and kube.get("Deployment", "intent-detector-v1")["spec"]["replicas"] == 2
    openai.behaviours["pods1"] = "error"
    with pytest.raises(dp.DeployError, match="was already serving, nothing to roll back") as failure:
        rollout_k8s(cfg, model("1"), builder, cluster, 10, smoke_endpoint=url, smoke_requests=SMOKE)
    assert not failure.value.rolled_back and kube.names("Deployment") == ["intent-detector-v1"]


def test_k8s_rollout_stuck_before_ready_times_out(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, builder: PromptBuilder
) -> None:
    kube, openai = fakes

    def controller(obj: dict[str, Any]) -> None:
        version = obj["metadata"]["labels"][mf.LABEL_MODEL_VERSION]
        (deployment_ready if version == "1" else deployment_stuck)(obj)

    kube.on_apply("Deployment", controller)
    rollout_k8s(cfg, model("1"), builder, cluster, 10, smoke_endpoint=f"{openai.url}/pods1", smoke_requests=SMOKE)
    cfg.serving.ready_timeout_s = 1
    with pytest.raises(dp.DeployError, match=r"intent-detector-v2 .*not ready after 1s: 0/1 replicas available"):
        rollout_k8s(cfg, model("2"), builder, cluster, 10, smoke_endpoint=f"{openai.url}/pods2", smoke_requests=SMOKE)
    assert kube.names("Deployment") == ["intent-detector-v1"]
    assert openai.routed("pods2") == []


def test_unreachable_smoke_endpoint_says_how_to_reach_it(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, builder: PromptBuilder
) -> None:
    kube, _ = fakes
    kube.on_apply("Deployment", deployment_ready)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(dp.DeployError, match=r"unreachable from here.*--smoke-endpoint"):
        rollout_k8s(cfg, model("1"), builder, cluster, 10, smoke_endpoint=closed, smoke_requests=2)
    assert kube.names("Deployment") == []


def test_kserve_target_on_a_cluster_without_kserve_says_so(
    cfg: RunConfig, images: None, builder: PromptBuilder, tmp_path: Path
) -> None:
    with FakeKubernetes(kserve=False) as kube:
        cluster = Cluster(kube.api_client(), "intentops", poll_s=0.05, discovery_cache=str(tmp_path / "d"))
        with pytest.raises(
            dp.DeployError, match=r"does not serve serving\.kserve\.io/v1beta1 InferenceService.*--target k8s"
        ):
            rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
        assert kube.applies() == []  # found out before applying anything


def test_apply_rejected_by_an_admission_webhook_names_object_and_reason(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, builder: PromptBuilder
) -> None:
    kube, _ = fakes
    kube.admission["InferenceService"] = 'admission webhook "inferenceservice.kserve-webhook-server" denied the request'
    with pytest.raises(
        dp.DeployError, match="applying InferenceService/intent-detector in intentops failed: admission"
    ):
        rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    assert kube.get("InferenceService", "intent-detector") is None


@pytest.mark.parametrize(("stable", "percent", "expected"), [(1, 10, 1), (9, 10, 1), (3, 25, 1), (6, 50, 6)])
def test_canary_replicas(stable: int, percent: int, expected: int) -> None:
    assert canary_replicas(stable, percent) == expected


def test_cluster_deploy_refuses_storage_the_cluster_cannot_fetch() -> None:
    with pytest.raises(dp.DeployError, match=r"mlflow-artifacts:/1/abc.*--artifacts-destination"):
        dp.check_cluster_storage(mf.ModelRef("m", "1", "mlflow-artifacts:/1/abc/artifacts/hf_model"))


# ---- client and constraints ---------------------------------------------------------------------------------------------


def test_call_regex_admits_exactly_the_catalog_grammar(catalog: Catalog, builder: PromptBuilder) -> None:
    pattern = re.compile(structured_outputs(builder)["regex"])
    for intent in catalog.intents:
        required, total = len(intent.required_parameters), len(intent.parameters)
        for count in range(required, total + 1):
            answer = builder.target(
                render_call(Call(intent.name, tuple(["上海", "a, b"][i % 2] for i in range(count))))
            )
            assert pattern.fullmatch(answer), answer
        assert not pattern.fullmatch(f"{intent.name}({','.join(['x'] * (total + 1))})")
        if required:
            assert not pattern.fullmatch(f"{intent.name}()")
    assert pattern.fullmatch("music_pause();weather_search(杭州)")
    assert not pattern.fullmatch(";".join(["music_pause()"] * (MAX_CALLS + 1)))
    assert not pattern.fullmatch("order_pizza(large)") and not pattern.fullmatch("weather_search(杭州")


def test_constraints_follow_the_prompt_options(catalog: Catalog) -> None:
    numbered = PromptBuilder(
        catalog,
        PromptConfig(output_mode="thought", thought_template="think_answer", numeric_labels=True, uncertain_label=True),
    )
    pattern = re.compile(structured_outputs(numbered)["regex"])
    gold = numbered.target("weather_search(杭州)")
    assert gold.startswith("<think>") and pattern.fullmatch(gold)
    assert pattern.fullmatch(f"<think>unclear</think><answer>#{len(numbered.labels)}()</answer>")
    assert not pattern.fullmatch("<think>x</think><answer>weather_search(杭州)</answer>")  # names are numbers here
    react = PromptBuilder(catalog, numbered.cfg.model_copy(update={"thought_template": "react"}))
    react_pattern = re.compile(structured_outputs(react)["regex"])
    assert react.target("weather_search(杭州)") == "Thought:\nAction: #10(杭州)\nFinish!"
    assert react_pattern.fullmatch("Thought:\nAction: #10(杭州)\nFinish!")
    assert react_pattern.fullmatch(f"Thought: unclear\nAction: #{len(react.labels)}()\nFinish!")
    assert not react_pattern.fullmatch("Thought: x\nAction: #10(杭州)")  # no Finish!

    parameterless = PromptBuilder(catalog.subset(["music_pause", "music_next", "volume_up"]), PromptConfig())
    assert structured_outputs(parameterless, max_calls=1) == {
        "choice": ["music_pause()", "music_next()", "volume_up()"]
    }
    assert "regex" in structured_outputs(parameterless)


def test_valid_calls_checks_names_and_arity(builder: PromptBuilder) -> None:
    assert valid_calls(builder, [Call("weather_search", ("杭州",))])
    assert not valid_calls(builder, [Call("weather_search", ())])
    assert not valid_calls(builder, [Call("order_pizza", ("x",))])
    assert not valid_calls(builder, None)


def test_intent_client_against_openai_endpoint(fakes: tuple[FakeKubernetes, FakeOpenAI], builder, catalog) -> None:
    _, openai = fakes
    with IntentClient(f"{openai.url}/rev1", "openai", builder=builder) as client:
        answer = client.predict("What's the weather like in London?")
    assert answer["intent"] == "weather_search" and answer["params"] == ["x"] and answer["valid"]
    assert answer["call"] == "weather_search(x)" and answer["latency_ms"] > 0
    assert openai.routed("rev1")[-1]["model"] == SERVED  # discovered through /v1/models

    # The fake enforces what vLLM needs: a request without the constraint is refused, so the client test can fail.
    from openai import BadRequestError, OpenAI

    with pytest.raises(BadRequestError, match="structured_outputs"):
        OpenAI(base_url=f"{openai.url}/rev1/v1", api_key="x", max_retries=0).chat.completions.create(
            model=SERVED, messages=builder.messages("Play some Taylor Swift")
        )
    with pytest.raises(ValueError, match="pass builder="):
        IntentClient(openai.url, "openai")


def test_smoke_probes_cover_intents_round_robin(catalog: Catalog) -> None:
    probes = smoke_probes(catalog, len(catalog.intents) + 3)
    first_round = [intent for _, intent in probes[: len(catalog.intents)]]
    assert first_round == catalog.names
    assert all(text in catalog.get(intent).examples for text, intent in probes)


class _MlflowHandler(BaseHTTPRequestHandler):
    """A model server whose pyfunc answers a call outside the catalog."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(
            {"predictions": [{"intent": "rm_rf", "params": ["/"], "call": "rm_rf(/)", "raw": "rm_rf(/)"}]}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())


def test_predict_checks_an_mlflow_endpoints_answer_against_the_catalog(
    tmp_path: Path, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    from intentops.cli import main

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    catalog.to_yaml(model_dir / CATALOG_FILE)
    (model_dir / MODEL_CARD).write_text(json.dumps({"prompt": PromptConfig().model_dump()}), encoding="utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MlflowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        code = main(
            ["predict", "delete everything", "--endpoint", endpoint, "--kind", "mlflow", "--model-dir", str(model_dir)]
        )
        answer = json.loads(capsys.readouterr().out)
    finally:
        server.shutdown()
    assert answer["call"] == "rm_rf(/)" and answer["valid"] is False and code == 1
    with pytest.raises(ValueError, match="checked against the catalog"):
        IntentClient(endpoint, "mlflow")


# ---- KServe modes, addresses, credentials ----------------------------------------------------------------------------


def test_kserve_standard_mode_replaces_in_place_and_restores_on_failure(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, openai = fakes
    cfg.serving.kserve_mode = "Standard"
    rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    result = rollout_kserve(cfg, model("2"), builder, cluster, 10, smoke_requests=SMOKE)
    assert isvc_applies(kube) == [("1", None), ("2", None)]  # no traffic split in Standard mode: no canary
    stored = kube.get("InferenceService", "intent-detector")
    assert stored["metadata"]["annotations"][mf.KSERVE_DEPLOYMENT_MODE] == "Standard"
    assert mf.KSERVE_TAG_ROUTING not in stored["metadata"]["annotations"]
    assert result.canary_percent is None and result.previous_version == "1" and len(openai.routed("rev2")) == SMOKE

    openai.behaviours["rev3"] = "error"
    with pytest.raises(dp.DeployError, match="rolled back to version 2"):
        rollout_kserve(cfg, model("3"), builder, cluster, 10, smoke_requests=SMOKE)
    assert kube.get("InferenceService", "intent-detector")["metadata"]["labels"][mf.LABEL_MODEL_VERSION] == "2"


def test_kserve_auto_mode_follows_what_the_cluster_runs(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    kube, _ = fakes
    cfg.serving.kserve_mode = "auto"
    kserve.default_mode = "Knative"  # this cluster's KServe defaults to Knative
    rollout_kserve(cfg, model("1"), builder, cluster, 20, smoke_requests=SMOKE)
    assert mf.KSERVE_DEPLOYMENT_MODE not in kube.get("InferenceService", "intent-detector")["metadata"]["annotations"]
    second = rollout_kserve(cfg, model("2"), builder, cluster, 20, smoke_requests=SMOKE)
    assert second.canary_percent == 20  # the live InferenceService runs Knative: canary
    # A knob that disagrees with the live mode cannot switch it (KServe keeps the mode): the live one is used.
    cfg.serving.kserve_mode = "Standard"
    third = rollout_kserve(cfg, model("3"), builder, cluster, 20, smoke_requests=SMOKE)
    assert third.canary_percent == 20


def test_kserve_smoke_test_uses_the_cluster_internal_address(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], cluster: Cluster, kserve: KServeController, builder
) -> None:
    _, openai = fakes
    result = rollout_kserve(cfg, model("1"), builder, cluster, 10, smoke_requests=SMOKE)
    stored = fakes[0].get("InferenceService", "intent-detector")
    assert stored["status"]["url"].endswith(".example.com")  # the external host, unreachable from here
    assert result.smoke.errors == 0 and result.endpoint == f"{openai.url}/rev1/v1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://latest-intent-detector-predictor.intentops.example.com", "http://latest-intent-detector-predictor.intentops.svc.cluster.local"),
        ("https://intent-detector.intentops.models.corp.net/v1", "http://intent-detector.intentops.svc.cluster.local/v1"),
        ("http://intent-detector-predictor.intentops.svc.cluster.local", "http://intent-detector-predictor.intentops.svc.cluster.local"),
        ("http://127.0.0.1:8080/rev1", "http://127.0.0.1:8080/rev1"),
    ],
)  # fmt: skip
def test_knative_urls_in_cluster(url: str, expected: str) -> None:
    from intentops.serving.kserve_rollout import cluster_local_url

    assert cluster_local_url(url, "intentops") == expected


def test_deploy_authenticates_with_the_vllm_api_key_secret(
    cfg: RunConfig, fakes: tuple[FakeKubernetes, FakeOpenAI], kserve: KServeController, builder, monkeypatch
) -> None:
    import base64

    kube, openai = fakes
    openai.api_key = "s3cr3t"
    cfg.serving.api_key_secret = "intentops-vllm"
    ref = model("1")
    monkeypatch.setattr(dp, "resolve_model", lambda *args, **kwargs: (ref, builder))
    with pytest.raises(dp.DeployError, match="Secret/intentops-vllm not found in intentops"):
        dp.deploy(cfg, target="kserve", api_client=kube.api_client(), smoke_requests=SMOKE, poll_s=0.05, record=False)
    kube.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "intentops-vllm"},
            "data": {"VLLM_API_KEY": base64.b64encode(b"s3cr3t").decode()},
        }
    )
    result = dp.deploy(
        cfg, target="kserve", api_client=kube.api_client(), smoke_requests=SMOKE, poll_s=0.05, record=False
    )
    assert result.smoke.valid == SMOKE


@pytest.mark.parametrize(
    "source", ["mlflow-artifacts:/3/abc/artifacts/hf_model", "mlflow-artifacts://mlflow:5000/3/abc/artifacts/hf_model"]
)
def test_proxied_artifacts_map_onto_the_servers_destination(source: str) -> None:
    assert dp.proxied_to_store(source, "s3://mlflow/artifacts/") == "s3://mlflow/artifacts/3/abc/artifacts/hf_model"
    assert dp.proxied_to_store(source, None) == source
    assert dp.proxied_to_store("s3://b/k", "s3://other") == "s3://b/k"
    with pytest.raises(dp.DeployError, match="MLFLOW_ARTIFACTS_DESTINATION"):
        dp.check_cluster_storage(mf.ModelRef("m", "1", source))


def test_dry_run_renders_what_the_mode_allows(cfg: RunConfig, images: None) -> None:
    cfg.serving.kserve_mode = "auto"
    *_, service = dp.render(cfg, model("1"), "kserve", canary_percent=10)
    assert "canaryTrafficPercent" not in service["spec"]["predictor"]  # mode unknown offline: no canary
    cfg.serving.kserve_mode = "Knative"
    *_, canary = dp.render(cfg, model("1"), "kserve", canary_percent=10)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert [o["kind"] for o in dp.render(cfg, model("1"), "k8s")] == ["Service", "Service", "Deployment"]
    with pytest.raises(dp.DeployError, match="has no manifests"):
        dp.render(cfg, model("1"), "local")
