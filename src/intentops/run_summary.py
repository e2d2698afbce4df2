"""What one pipeline run did, read back from its task outputs: stage times, metrics, gate, registry, deployment.

A local run (kfp.local) leaves one folder per task with `executor_output.json`, the KFP executor's output record
(parameter values and output artifacts with their metadata). That layout belongs to kfp.local, not to IntentOps:
`task_outputs` is the only function that reads it, so a change there is a change in one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import GATE_MD
from intentops.run_verdict import UNDERPOWERED_NOTE, champion_version, verdict_lines

EXECUTOR_OUTPUT = "executor_output.json"
# Stage order of the summary (task names in the compiled pipeline).
STAGES = (
    "resolve-config",
    "convert-itag",
    "validate-dataset",
    "sft-warmup",
    "grpo-stage1",
    "mine-hard-samples",
    "grpo-stage2",
    "evaluate",
    "evaluate-champion",
    "gate",
    "register-model",
    "deploy-vllm",
)


@dataclass
class RunSummary:
    """What one local run did, read back from its outputs (also written to WORKDIR/summary.json)."""

    pipeline_run_id: str
    run_dir: str
    wall_seconds: float
    stage_seconds: dict[str, float]
    skipped: list[str]
    evaluation: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str = ""
    # The whole gate decision (gate.json: checks, paired comparisons with the champion, detectability), the
    # dataset folder (the test split the predictions draw on) and the gate folder (its report), when they exist.
    decision: dict[str, Any] = field(default_factory=dict)
    dataset_dir: str = ""
    gate_dir: str = ""

    @property
    def stages_total(self) -> float:
        return sum(self.stage_seconds.values())

    @property
    def overhead_seconds(self) -> float:
        """Wall time not spent inside a stage's own code: process start-up, kfp.local bookkeeping, artifacts."""
        return max(0.0, self.wall_seconds - self.stages_total)

    @property
    def overhead_share(self) -> float:
        return self.overhead_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "stages_total_seconds": round(self.stages_total, 3),
            "overhead_seconds": round(self.overhead_seconds, 3),
            "overhead_share": round(self.overhead_share, 4),
        }


def task_outputs(task_dir: Path) -> dict[str, Any]:
    """One task's executor output as {parameters, artifacts: {name: metadata}, uris: {name: folder}}; {} when the
    task did not run."""
    path = task_dir / EXECUTOR_OUTPUT
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    first = {name: (block.get("artifacts") or [{}])[0] for name, block in (raw.get("artifacts") or {}).items()}
    return {
        "parameters": raw.get("parameterValues") or {},
        "artifacts": {name: artifact.get("metadata", {}) for name, artifact in first.items()},
        "uris": {name: str(artifact.get("uri", "")) for name, artifact in first.items()},
    }


def _gate_decision(gate_dir: str) -> dict[str, Any]:
    """gate.json of the gate's output folder; {} when there is none (the gate did not run, or another layout)."""
    from intentops.artifacts import ArtifactMissingError, GateResult

    if not gate_dir:
        return {}
    try:
        return GateResult(gate_dir).decision()
    except (ArtifactMissingError, ValueError):
        return {}


def summarize_run(run_dir: Path, wall_seconds: float, tracking_uri: str) -> RunSummary:
    """Read stage times, metrics, the gate decision, the registered version and the deployment from a local run."""
    outputs = {stage: task_outputs(run_dir / stage) for stage in STAGES}
    stage_seconds: dict[str, float] = {}
    for stage, out in outputs.items():
        seconds = [meta["stage_seconds"] for meta in out.get("artifacts", {}).values() if "stage_seconds" in meta]
        if seconds:
            stage_seconds[stage] = float(max(seconds))
    artifacts = {stage: out.get("artifacts", {}) for stage, out in outputs.items()}
    gate = dict(artifacts["gate"].get("decision", {}))
    gate_dir = outputs["gate"].get("uris", {}).get("decision", "")
    if "Output" in outputs["gate"].get("parameters", {}):
        gate["passed"] = bool(outputs["gate"]["parameters"]["Output"])
    return RunSummary(
        pipeline_run_id=str(artifacts["convert-itag"].get("records", {}).get("pipeline_run_id", "")),
        run_dir=str(run_dir),
        wall_seconds=round(wall_seconds, 3),
        stage_seconds=stage_seconds,
        skipped=[stage for stage in STAGES if not outputs[stage]],
        evaluation=dict(artifacts["evaluate"].get("evaluation", {})),
        gate=gate,
        registered=dict(artifacts["register-model"].get("registered", {})),
        deployment=dict(artifacts["deploy-vllm"].get("endpoint", {})),
        tracking_uri=tracking_uri,
        decision=_gate_decision(gate_dir),
        dataset_dir=outputs["validate-dataset"].get("uris", {}).get("dataset", ""),
        gate_dir=gate_dir,
    )


def mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def deployment_lines(summary: RunSummary) -> list[str]:
    """The deployment, or why there is none and what to do about it."""
    dep = summary.deployment
    if dep:
        stopped = " - stopped after the smoke test" if dep.get("stopped_after_smoke_test") else ""
        return [
            f"deployment: {dep.get('target')} {dep.get('endpoint')} version {dep.get('version')}, smoke test "
            f"{dep.get('smoke_valid_share', 0):.0%} valid{stopped}"
        ]
    if "deploy-vllm" not in summary.skipped:
        return []
    if summary.gate.get("passed") is False:
        report = f"{summary.gate_dir}/{GATE_MD}" if summary.gate_dir else "the gate report"
        lines = [
            "deployment: skipped - the gate did not pass, so this candidate is not served (no predictions)",
            f"  what to do: read why in {report}; train more (e.g. --set sft__epochs=...) or on more data and run",
            "  again; to try the serving half with this model anyway, run with --set gate__mode=dry_run (records the",
            "  failures and promotes regardless: for a demo, never for production)",
        ]
        champion = champion_version(summary.decision)
        if champion:
            lines.append(
                f"  the champion v{champion} is unchanged; serve it: intentops deploy --target local --alias champion "
                f"--detach --set registry__tracking_uri={summary.tracking_uri}"
            )
        return lines
    return ["deployment: skipped (the deploy step did not run; its task folder holds no output)"]


def format_summary(summary: RunSummary) -> str:
    lines = [
        "",
        f"IntentOps local run {summary.pipeline_run_id or '?'}: {summary.wall_seconds:.1f} s wall",
        "",
        f"  {'stage':<20}{'seconds':>9}",
    ]
    for stage in STAGES:
        if stage in summary.stage_seconds:
            lines.append(f"  {stage:<20}{summary.stage_seconds[stage]:>9.1f}")
        elif stage in summary.skipped:
            lines.append(f"  {stage:<20}{'skipped':>9}")
    lines.append(
        f"  stages {summary.stages_total:.1f} s; orchestration overhead {summary.overhead_seconds:.1f} s "
        f"({summary.overhead_share:.1%} of the wall time: process start-up, kfp.local, artifact bookkeeping)"
    )
    ev = summary.evaluation
    if ev:
        lines.append(
            f"evaluation: intent accuracy {ev.get('intent_accuracy', 0):.3f}, parameter accuracy "
            f"{ev.get('param_accuracy', 0):.3f}, format errors {ev.get('format_error_rate', 0):.3f} "
            f"on {int(ev.get('n', 0))} test records ({ev.get('decoding', '')})"
        )
    if summary.gate:
        verdict = "PASSED" if summary.gate.get("passed") else "FAILED"
        reasons = str(summary.gate.get("reasons", ""))
        if summary.decision:  # the failed checks are listed under the verdict: here only the gate's notes
            failed = set(summary.decision.get("failed") or [])
            notes = [str(r) for r in summary.decision.get("reasons") or [] if r not in failed]
            # The detectability warnings are summarised under the paired comparisons.
            reasons = "; ".join(r for r in notes if not r.startswith(UNDERPOWERED_NOTE))
        lines.append(f"gate ({summary.gate.get('mode', '?')}): {verdict} - {reasons}")
    lines += verdict_lines(summary.decision, summary.registered, summary.gate.get("passed"))
    reg = summary.registered
    if reg:
        lines.append(
            f"registry: {reg.get('name')} version {reg.get('version')} aliases [{reg.get('aliases', '')}] "
            f"({reg.get('model_uri', '')})"
        )
    else:
        lines.append("registry: nothing registered (the gate did not pass)")
    lines += deployment_lines(summary)
    lines += [
        f"look: {mlflow_ui_command(summary.tracking_uri)}",
        f"      pipeline outputs: {summary.run_dir}",
        "",
    ]
    return "\n".join(lines)
