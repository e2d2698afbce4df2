"""The end of the main job: a few predictions made through the deployed local endpoint, and how to call it.

The pipeline's deploy step serves the new champion only for its smoke test. After a run whose gate passed and whose
local deployment passed that test, `serve_and_predict` serves the version again exactly as a user would
(`intentops deploy --target local --detach`: MLflow's model server behind the request limits), asks it a few
utterances over HTTP with the client `intentops predict` uses, and stops the server again unless asked to keep it
(`--keep-serving`). A server this job did not start is never stopped, replaced or asked: when one is recorded the
predictions are skipped with the reason (`intentops run` refuses to start while one runs, so this is a guard).
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentops.config import RunConfig
from intentops.grammar import GrammarError, parse_calls, render_calls
from intentops.run_summary import RunSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """An utterance and the call the model should answer with."""

    text: str
    expected: str


# The utterance every run shows (a catalog example of the bundled weather_search intent).
HANGZHOU = Example("我想去杭州玩，帮我查下天气预报", "weather_search(杭州)")
DEFAULT_EXAMPLES = 5


@dataclass(frozen=True)
class Prediction:
    """One answer of the endpoint, as `IntentClient.predict` reads it, next to the expected call."""

    text: str
    expected: str
    call: str | None
    valid: bool
    latency_ms: float
    error: str = ""
    raw: str = ""  # what the model wrote, shown when it is not a call

    @property
    def correct(self) -> bool:
        return self.call is not None and canonical(self.call) == canonical(self.expected)


@dataclass
class PredictionsReport:
    """What the job asked the endpoint and what happened to the server afterwards."""

    endpoint: str = ""
    version: str = ""
    predictions: list[Prediction] = field(default_factory=list)
    started: bool = False  # this job started the server (and so may stop it)
    serving: bool = False  # the server still runs after the job
    skipped: str = ""  # why no prediction was made


def canonical(call: str) -> str:
    """A call string in the grammar's canonical form (spacing, full-width punctuation), or as given if unparsable."""
    try:
        return render_calls(parse_calls(call))
    except GrammarError:
        return call.strip()


def pick_examples(test_path: str | Path | None, intents: Sequence[str], n: int = DEFAULT_EXAMPLES) -> list[Example]:
    """HANGZHOU (when the catalog has weather_search), then the first test record of each further intent, up to n."""
    from intentops.io import read_jsonl

    examples = [HANGZHOU] if "weather_search" in intents else []
    seen = {"weather_search"} if examples else set()
    if test_path and Path(test_path).is_file():
        for record in read_jsonl(test_path):
            if len(examples) >= n:
                break
            if record.get("intent") not in seen and record.get("text") and record.get("output"):
                seen.add(record["intent"])
                examples.append(Example(str(record["text"]), str(record["output"])))
    return examples[:n]


def predict_examples(client: Any, examples: Sequence[Example]) -> list[Prediction]:
    """Ask `client` (an `IntentClient`) every example; a failed request is recorded, not raised."""
    from intentops.serving.client import ClientError

    rows: list[Prediction] = []
    for example in examples:
        try:
            answer = client.predict(example.text)
        except ClientError as exc:
            rows.append(Prediction(example.text, example.expected, None, False, 0.0, str(exc)))
            continue
        rows.append(
            Prediction(
                example.text,
                example.expected,
                answer["call"],
                bool(answer["valid"]),
                float(answer["latency_ms"]),
                raw=str(answer.get("raw") or ""),
            )
        )
    return rows


def _ask(state: dict[str, Any], examples: Sequence[Example], timeout_s: float) -> list[Prediction]:
    """Predictions through the recorded local server, with the catalog of the version it serves."""
    from intentops.prompting import PromptBuilder
    from intentops.serving.client import IntentClient

    builder = PromptBuilder.from_model_dir(state["prompt_dir"])
    kind = state.get("kind", "mlflow")
    with IntentClient(state["endpoint"], kind, builder=builder, timeout_s=timeout_s) as client:
        return predict_examples(client, examples)


def serve_and_predict(
    cfg: RunConfig,
    version: str,
    examples: Sequence[Example],
    keep_serving: bool = False,
    timeout_s: float = 60.0,
) -> PredictionsReport:
    """Serve `version` locally as `intentops deploy --target local --detach` does, ask it `examples`, then stop the
    server this call started unless `keep_serving`. A running server it did not start is left alone."""
    from intentops.serving import deploy as dp

    report = PredictionsReport(version=str(version))
    state = dp.read_local_state()
    if state is not None and dp.process_alive(int(state["pid"])):
        # Not asked either: the recorded version number may belong to another MLflow store than this run's.
        report.endpoint, report.serving = str(state.get("endpoint", "")), True
        report.skipped = (
            f"a local server this job did not start (pid {state['pid']}, {state.get('model_uri')}) serves at "
            f"{report.endpoint}; it was left as it is. Stop it (intentops serve stop) to see version {version}"
        )
        return report
    try:
        result = dp.deploy(cfg, version=version, target="local", record=False)
    except dp.DeployError as exc:
        report.skipped = f"the local server for version {version} did not start: {exc}"
        return report
    report.started, report.endpoint, report.serving = True, result.endpoint, True
    try:
        state = dp.read_local_state()
        report.predictions = _ask(state or {}, examples, timeout_s)
    finally:
        if not keep_serving:
            current = dp.read_local_state()
            if current is not None and int(current["pid"]) == result.pid:
                dp.stop_local()
            report.serving = False
    return report


# ---- how to call it ------------------------------------------------------------------------------------------------


def curl_command(endpoint: str, text: str) -> str:
    """The HTTP request the local server answers (MLflow's /invocations with one record)."""
    body = json.dumps({"dataframe_records": [{"text": text}]}, ensure_ascii=False)
    return f"curl -s {endpoint}/invocations -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def serve_command(version: str, cli_options: Sequence[str] = ()) -> str:
    """`intentops deploy` for this version on the local target, in the background (`--detach`)."""
    parts = ["intentops", "deploy", "--target", "local", "--version", str(version), "--detach", *cli_options]
    return shlex.join(parts)


def _not_a_call(raw: str, limit: int = 24) -> str:
    """An answer that is not a call, shortened: what the model wrote instead."""
    text = " ".join(raw.split())
    return f"(not a call: {json.dumps(text[:limit] + ('…' if len(text) > limit else ''), ensure_ascii=False)})"


def _columns(text: str) -> int:
    """Terminal columns of `text`: East Asian wide and full-width characters take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _columns(text))


def format_predictions(report: PredictionsReport, cli_options: Sequence[str] = ()) -> list[str]:
    """The predictions section: each answer against its expected call, then the commands to call and stop it."""
    text = report.predictions[0].text if report.predictions else HANGZHOU.text
    if report.skipped and not report.predictions:
        return [f"predictions: none - {report.skipped}"]
    lines = [f"predictions through the deployed endpoint {report.endpoint} (version {report.version}):"]
    width = min(40, max((_columns(p.text) for p in report.predictions), default=0))
    for p in report.predictions:
        answer = p.call if p.call is not None else f"error: {p.error}" if p.error else _not_a_call(p.raw)
        mark = "ok" if p.correct else f"expected {p.expected}"
        lines.append(f"  {_pad(p.text, width)}  -> {_pad(answer, 28)} {_pad(mark, 34)} {p.latency_ms:>5.0f} ms")
    right = sum(p.correct for p in report.predictions)
    lines.append(f"  {right}/{len(report.predictions)} as expected")
    predict = shlex.join(["intentops", "predict", text])
    if report.serving:
        lines += [
            f"the server keeps running at {report.endpoint}; call it:",
            f"  {predict}",
            f"  {curl_command(report.endpoint, text)}",
            "stop it: intentops serve stop" + ("" if report.started else " (this job did not start it)"),
        ]
    else:
        lines += [
            "the job stopped the server it started (intentops run --keep-serving leaves it running); serve and call it:",
            f"  {serve_command(report.version, cli_options)}",
            f"  {predict}",
            f"  {curl_command(report.endpoint, text)}",
            "  intentops serve stop",
        ]
    return lines


# ---- the section of the run summary --------------------------------------------------------------------------------


def predictions_section(
    cfg: RunConfig, summary: RunSummary, keep_serving: bool = False, cli_options: Sequence[str] = ()
) -> tuple[list[str], int]:
    """After a passed gate and a passed smoke test: predictions through the endpoint and how to call it, and the
    exit status (1 when the server could not be started for them). Nothing when nothing was deployed: the summary
    says why."""
    deployment = summary.deployment
    if not summary.gate.get("passed") or not deployment:
        return [], 0
    if deployment.get("target") != "local":
        command = shlex.join(
            [
                "intentops",
                "predict",
                "--endpoint",
                str(deployment.get("endpoint")),
                "--kind",
                "openai",
                "--version",
                str(deployment.get("version")),
                "--set",
                f"registry__tracking_uri={summary.tracking_uri}",
                HANGZHOU.text,
            ]
        )
        return [f"call it: {command}"], 0
    local_cfg = RunConfig.from_flat({"registry__tracking_uri": summary.tracking_uri}, base=cfg)
    test_path, intents = _test_split(summary.dataset_dir)
    report = serve_and_predict(local_cfg, str(deployment["version"]), pick_examples(test_path, intents), keep_serving)
    failed = bool(report.skipped) and not report.serving
    return ["", *format_predictions(report, cli_options)], 1 if failed else 0


def _test_split(dataset_dir: str) -> tuple[Path | None, list[str]]:
    """The run's test split and its catalog's intents (None and [] when the dataset folder cannot be read)."""
    from intentops.artifacts import ArtifactMissingError, Dataset
    from intentops.catalog import load_catalog

    if not dataset_dir:
        return None, []
    dataset = Dataset(dataset_dir)
    try:
        return dataset.split("test"), load_catalog(dataset.catalog_path).names
    except ArtifactMissingError:
        return None, []
