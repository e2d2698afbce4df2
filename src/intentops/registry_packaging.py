"""Candidate packaging: a model folder, its evaluation and gate decision -> an MLflow pyfunc model version.

Everything is read and checked (`read_candidate`) before anything reaches the registry. The version is an
`registry_pyfunc.IntentDetectorModel` carrying the Hugging Face folder itself (training leftovers such as checkpoints
and rollout logs left out), tagged with catalog hash, dataset hash, pipeline run id, git commit, the gate decision and
the headline metrics. Which aliases a version gets is `intentops.registry`'s job.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.artifacts import (
    METRICS_FILE,
    MODEL_CARD,
    NOT_MODEL_FILES,
    ArtifactMissingError,
    Dataset,
    Evaluation,
    EvaluationMetrics,
    GateResult,
    ModelFolder,
)
from intentops.catalog import load_catalog
from intentops.config import RunConfig
from intentops.tracking import stage_run

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "intent_detector"
# What the pyfunc imports at load time; pinned to the versions installed where the model was registered.
PYFUNC_REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "scikit-learn",
    "tqdm",
)
MAX_TAG_CHARS = 5000
MODEL_DESCRIPTION = (
    "IntentOps intent detector (pyfunc: text -> intent, params, confidence; Hugging Face folder in artifacts/hf_model). "
    "@champion serves and moves only through the promotion gate, `intentops promote` or `intentops rollback`; "
    "@challenger is the newest candidate."
)


class RegistryError(ValueError):
    """A registry operation that cannot proceed; the message names the model, version or file."""


def git_commit() -> str:
    """$GIT_COMMIT (set by CI and the pipeline images), else this checkout's HEAD (`-dirty` if modified)."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty.returncode == 1 else head


@dataclass(frozen=True)
class Candidate:
    """Everything registration reads from disk, checked before anything is written to the registry."""

    model_dir: Path
    card: dict[str, Any]
    catalog_hash: str
    dataset_hash: str
    metrics: EvaluationMetrics | None
    evaluation: Evaluation | None
    gate: dict[str, Any] | None
    gate_path: Path | None
    examples: list[str]

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate and self.gate.get("passed") is True)

    @property
    def gate_mode(self) -> str:
        return str(self.gate.get("mode", "")) if self.gate else ""

    @property
    def expected_champion(self) -> str | None:
        """The registry champion the gate compared with ("" = there was none); None when the gate did not look."""
        expected = self.gate.get("expected_champion") if self.gate else None
        return None if expected is None else str(expected)


def read_candidate(
    model_dir: Path, eval_dir: Path | None, gate_path: Path | None, dataset_manifest: Path | None
) -> Candidate:
    """Read and check everything registration needs; nothing has touched the registry yet."""
    model = ModelFolder(model_dir)
    try:
        card = model.card()
        catalog = load_catalog(model.catalog_path)
        dataset_hash = ""
        if dataset_manifest is not None:
            dataset = Dataset(dataset_manifest if dataset_manifest.is_dir() else dataset_manifest.parent)
            manifest = dataset.manifest()
            dataset_hash = str(manifest["dataset_hash"])
            if manifest.get("catalog_hash") and manifest["catalog_hash"] != catalog.content_hash:
                log.warning(
                    "registry: dataset %s was built for catalog %s, the model ships catalog %s",
                    dataset.path,
                    manifest["catalog_hash"],
                    catalog.content_hash,
                )
        evaluation = Evaluation(eval_dir) if eval_dir is not None else None
        metrics = evaluation.metrics() if evaluation is not None else None
        gate = None
        if gate_path is not None:
            gate_path = GateResult(gate_path).json_path if gate_path.is_dir() else gate_path
            gate = GateResult.read_decision(gate_path)
    except ArtifactMissingError:
        raise
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    _check_judged_this_model(model, metrics, evaluation, gate, gate_path)
    if card.get("catalog_hash") and card["catalog_hash"] != catalog.content_hash:
        log.warning(
            "registry: %s says catalog_hash %s but its catalog hashes to %s; tagging the catalog actually shipped",
            model_dir,
            card["catalog_hash"],
            catalog.content_hash,
        )
    dataset_hash = dataset_hash or str(card.get("dataset_hash") or "")
    if not dataset_hash:
        raise RegistryError(
            f"{model_dir}: no dataset hash in the model card and no dataset manifest given; "
            "pass the dataset folder so the version records what it was trained on"
        )
    return Candidate(
        model_dir=model_dir,
        card=card,
        catalog_hash=catalog.content_hash,
        dataset_hash=dataset_hash,
        metrics=metrics,
        evaluation=evaluation,
        gate=gate,
        gate_path=gate_path,
        examples=_input_examples(catalog),
    )


def _check_judged_this_model(
    model: ModelFolder,
    metrics: EvaluationMetrics | None,
    evaluation: Evaluation | None,
    gate: dict[str, Any] | None,
    gate_path: Path | None,
) -> None:
    """Refuse metrics or a gate decision made on another model: they would promote a model nobody evaluated."""
    judged = []
    if metrics is not None and evaluation is not None:
        judged.append((f"evaluation {evaluation.path}", metrics.model.get("content_hash")))
    if gate is not None:
        judged.append(
            (f"gate decision {gate_path}", ((gate.get("candidate") or {}).get("model") or {}).get("content_hash"))
        )
    if not judged:
        return
    actual = model.content_hash()
    for what, content_hash in judged:
        if not content_hash:
            raise RegistryError(
                f"{what} does not say which model it judged (no model content_hash); re-run `intentops evaluate` "
                f"and the gate on {model.path} so the decision is bound to it"
            )
        if content_hash != actual:
            raise RegistryError(
                f"{what} judged model {content_hash[:12]}, but {model.path} is model {actual[:12]}: "
                "register the model that was evaluated, or evaluate and gate this one"
            )


def _input_examples(catalog: Any) -> list[str]:
    """One Chinese and one English utterance from the catalog's examples (the model serves both languages)."""
    examples = [text for intent in catalog.intents for text in intent.examples]
    chinese = next((t for t in examples if any("\u4e00" <= ch <= "\u9fff" for ch in t)), "帮我查一下明天杭州的天气")
    english = next((t for t in examples if t.isascii()), "What's the weather in Hangzhou tomorrow?")
    return [chinese, english]


def _headline_tags(metrics: EvaluationMetrics | None) -> dict[str, str]:
    """Top-level scalar metrics (intent_accuracy, param_accuracy, macro_f1, ...) as version tags."""
    if metrics is None:
        return {}
    return {
        key: f"{value:.6g}"
        for key, value in metrics.to_dict().items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def version_tags(candidate: Candidate, pipeline_run_id: str) -> dict[str, str]:
    tags = {
        "catalog_hash": candidate.catalog_hash,
        "dataset_hash": candidate.dataset_hash,
        "pipeline_run_id": pipeline_run_id,
        "git_commit": git_commit(),
        "model_stage": str(candidate.card.get("stage", "")),
        "base_model": str(candidate.card.get("base_model", "")),
        "gate_passed": str(candidate.gate_passed).lower() if candidate.gate is not None else "not_evaluated",
    }
    if candidate.gate is not None:
        tags["gate_mode"] = candidate.gate_mode
        reasons = candidate.gate.get("reasons") or []
        tags["gate_reasons"] = "; ".join(str(r) for r in reasons)[:MAX_TAG_CHARS]
    tags.update(_headline_tags(candidate.metrics))
    return tags


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in PYFUNC_REQUIREMENTS:
        try:
            installed = version(package)
        except PackageNotFoundError:
            log.warning("registry: %s is not installed here; the pyfunc's requirements leave it out", package)
            continue
        # A local label such as +cpu/+cu128 names a wheel index, not a release; serving picks its own build.
        pins.append(f"{package}=={installed.split('+', 1)[0]}")
    return pins


def _pyfunc_model_config(cfg: RunConfig) -> dict[str, Any]:
    decoding = "label_scoring" if cfg.evaluation.decoding == "label_scoring" else "generate"
    return {
        "decoding": decoding,
        "batch_size": cfg.evaluation.batch_size,
        "max_new_tokens": cfg.evaluation.max_new_tokens,
        "dtype": cfg.model.dtype,
        "constrained": cfg.evaluation.constrained,
        "copy_arguments": cfg.evaluation.copy_arguments,
        "label_score": cfg.evaluation.label_score,
        "label_normalization": cfg.evaluation.label_normalization,
    }


def _log_pyfunc(candidate: Candidate, cfg: RunConfig, staging: Path) -> ModelInfo:
    """Log the model folder as the IntentDetectorModel pyfunc, with its catalog, card, metrics and gate."""
    import mlflow
    import pandas as pd

    from intentops import registry_pyfunc

    hf_dir = staging / registry_pyfunc.HF_MODEL_ARTIFACT
    shutil.copytree(candidate.model_dir, hf_dir, ignore=shutil.ignore_patterns(*NOT_MODEL_FILES))
    artifacts = {
        registry_pyfunc.HF_MODEL_ARTIFACT: str(hf_dir),
        "catalog": str(ModelFolder(hf_dir).catalog_path),
        "model_card": str(ModelFolder(hf_dir).file(MODEL_CARD)),
    }
    if candidate.evaluation is not None:
        artifacts["metrics"] = str(candidate.evaluation.file(METRICS_FILE))
    if candidate.gate_path is not None:
        artifacts["gate"] = str(candidate.gate_path)
    # The package travels with the model (code_paths) so the pyfunc loads where intentops is not installed.
    package_dir = Path(registry_pyfunc.__file__).resolve().parent
    code_dir = staging / "code" / package_dir.name
    shutil.copytree(package_dir, code_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=registry_pyfunc.__file__,
        artifacts=artifacts,
        code_paths=[str(code_dir)],
        model_config=_pyfunc_model_config(cfg),
        signature=registry_pyfunc.signature(),
        input_example=pd.DataFrame({registry_pyfunc.TEXT_COLUMN: candidate.examples}),
        pip_requirements=_requirements(),
        metadata={
            "catalog_hash": candidate.catalog_hash,
            "dataset_hash": candidate.dataset_hash,
            "base_model": candidate.card.get("base_model", ""),
            "model_stage": candidate.card.get("stage", ""),
        },
    )


def create_version(
    candidate: Candidate, cfg: RunConfig, pipeline_run_id: str, tags: dict[str, str], client: MlflowClient
) -> str:
    """Log the pyfunc inside the pipeline's `register` stage run and register it; returns the new version."""
    import mlflow

    name = cfg.registry.model_name
    params = {
        "model_dir": str(candidate.model_dir),
        "model_name": name,
        "gate_passed": tags["gate_passed"],
        "catalog_hash": candidate.catalog_hash,
        "dataset_hash": candidate.dataset_hash,
    }
    with stage_run("register", cfg, pipeline_run_id, params=params), tempfile.TemporaryDirectory() as staging:
        log.info("registry: logging %s as an MLflow pyfunc", candidate.model_dir)
        info = _log_pyfunc(candidate, cfg, Path(staging))
        from intentops.evaluation.report import scalar_metrics

        scalars = scalar_metrics(candidate.metrics.to_dict()) if candidate.metrics is not None else {}
        if scalars:
            mlflow.log_metrics(scalars, model_id=info.model_id)
        if candidate.evaluation is not None:
            mlflow.log_artifacts(str(candidate.evaluation.path), artifact_path="evaluation")
        if candidate.gate_path is not None:
            mlflow.log_artifact(str(candidate.gate_path), artifact_path="gate")
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
    log.info("registry: registered %s version %s from %s", name, mv.version, info.model_uri)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)
    return str(mv.version)
