"""The artifacts the pipeline stages hand each other: file names, reading, writing, and what the UI shows.

Every folder one stage writes and another reads is described here once: its file names, the stage that writes it
(so a missing file is reported as "the <stage> stage should have written it"), and the metadata a person sees on
the artifact in the Kubeflow UI. Folders are written through `intentops.io` (`Artifact.writing` renames a complete
folder into place), so a crash never leaves a complete-looking result. Evaluation metrics are a typed object,
`EvaluationMetrics`, read the same way by the gate, the registry, the CLI and the run summary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from intentops.io import atomic_path, read_json, sha256_file, write_json

# records (convert-itag)
RECORDS_FILE = "records.jsonl"
QUICKSTART_FILE = "train.json"
REJECTS_FILE = "rejects.jsonl"
CONVERT_REPORT_FILE = "report.json"
# dataset (validate-dataset); a hard set reuses TRAIN_FILE for the records GRPO stage 2 trains on
SPLITS = ("train", "val", "test")
TRAIN_FILE = "train.jsonl"

CATALOG_FILE = "catalog.yaml"
DATASET_MANIFEST = "manifest.json"
# validation report folder (inside the dataset from validate-dataset; anywhere from `intentops validate`)
VALIDATION_DIR = "validation"
VALIDATION_JSON = "report.json"
VALIDATION_MD = "report.md"
FLAGGED_FILE = "flagged.jsonl"
VALIDATION_REPORT_MD = f"{VALIDATION_DIR}/{VALIDATION_MD}"
# model folder (sft-warmup, grpo-stage1, grpo-stage2): Hugging Face files plus these
MODEL_CARD = "intentops.json"
FEWSHOT_FILE = "fewshot_examples.jsonl"  # the prompt's few-shot examples, when the prompt shows any
# a model folder by reference (storage.models_uri): the artifact holds only this file (uri, size, content hash)
MODEL_REF_FILE = "model-ref.json"
# rollouts (grpo-stage1, grpo-stage2): GRPO's own training rollouts, and (grpo-stage1) the scoring pass over every
# training record, the only log hard-sample mining reads
ROLLOUTS_FILE = "rollouts.parquet"
SCORES_FILE = "rollouts.scoring.parquet"
COLLAPSED_ROLLOUTS_FILE = "rollouts.collapsed.parquet"
# grpo-stage1 with the uncertain label taught: the relabelled training records it trained on, and the relabel report
UNCERTAIN_REPORT = "uncertain.json"
REJECTED_PROMPTS_FILE = "rejected_prompts.jsonl"
ROLLOUT_COLUMNS = (
    "sample_id",
    "step",
    "generation",
    "completion",
    "reward_format",
    "reward_intent",
    "reward_params",
    "reward_total",
)
# Training leftovers that live next to a model's weights but are not part of the model (never copied or registered).
NOT_MODEL_FILES = (
    "checkpoints",
    "rollouts*.parquet",
    REJECTED_PROMPTS_FILE,
    "runs",
    ".staging-*",
    ".*.partial",
    "*.tmp",
)
# hard set (mine-hard-samples)
MINING_REPORT_JSON = "mining_report.json"
MINING_REPORT_MD = "mining_report.md"
# evaluation (evaluate, evaluate-champion)
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CONFUSION_PNG = "confusion_matrix.png"
NO_MODEL_FILE = "no_model.json"
# gate decision (gate)
GATE_JSON = "gate.json"
GATE_MD = "gate.md"
GATE_HTML = "gate.html"
# `intentops gate --out DIR` keeps the champion's evaluation beside the decision
CHAMPION_EVALUATION_DIR = "champion"


def split_file(split: str) -> str:
    """The file name of one dataset split (`train`, `val`, `test`)."""
    return f"{split}.jsonl"


class ArtifactMissingError(FileNotFoundError):
    """A file an artifact must contain is not there; the message names the file and the stage that writes it."""


@dataclass(frozen=True)
class Artifact:
    """A folder written by one stage; subclasses name the stage and the files."""

    path: Path
    KIND: ClassVar[str] = "artifact"
    WRITTEN_BY: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def file(self, name: str) -> Path:
        """The path of `name` in the folder; an error naming the file and its stage when it is not there."""
        path = self.path / name
        if not path.exists():
            raise ArtifactMissingError(
                f"{path}: no {name} in the {self.KIND} folder {self.path}; the {self.WRITTEN_BY} stage writes it "
                "(did it run to the end, and is this the right folder?)"
            )
        return path

    def exists(self) -> bool:
        """Whether every required file is there (a finished folder)."""
        return all((self.path / name).exists() for name in self.REQUIRED)

    def check(self) -> None:
        """Raise `ArtifactMissingError` for the first missing required file."""
        for name in self.REQUIRED:
            self.file(name)

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        try:
            return read_json(path)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg}); the {self.WRITTEN_BY} stage writes it") from None

    @classmethod
    @contextmanager
    def writing(cls, path: str | Path) -> Iterator[Path]:
        """A temporary folder renamed onto `path` when the block succeeds (replacing an older one)."""
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            yield tmp

    def metadata(self) -> dict[str, Any]:
        """What the Kubeflow UI shows on this artifact (scalars only)."""
        return {}


class Records(Artifact):
    KIND, WRITTEN_BY = "records", "convert-itag"
    REQUIRED = (RECORDS_FILE, CONVERT_REPORT_FILE)

    @property
    def records(self) -> Path:
        return self.file(RECORDS_FILE)


class Dataset(Artifact):
    KIND, WRITTEN_BY = "dataset", "validate-dataset"
    REQUIRED = (*(split_file(split) for split in SPLITS), CATALOG_FILE, DATASET_MANIFEST)

    def split(self, name: str) -> Path:
        return self.file(split_file(name))

    @property
    def train(self) -> Path:
        return self.file(TRAIN_FILE)

    @property
    def catalog_path(self) -> Path:
        return self.file(CATALOG_FILE)

    @property
    def validation_report(self) -> Path:
        return self.file(VALIDATION_REPORT_MD)

    def manifest(self) -> dict[str, Any]:
        """manifest.json: counts per split and intent, `dataset_hash`, `catalog_hash`, unseen intents."""
        manifest = self.read_json(DATASET_MANIFEST)
        if not isinstance(manifest, dict) or not manifest.get("dataset_hash"):
            raise ValueError(f"{self.path / DATASET_MANIFEST}: no 'dataset_hash' field")
        return manifest

    @property
    def dataset_hash(self) -> str:
        return str(self.manifest()["dataset_hash"])

    def metadata(self) -> dict[str, Any]:
        manifest = self.manifest()
        counts = manifest.get("counts", {})
        return {
            "dataset_hash": manifest.get("dataset_hash", ""),
            "catalog_hash": manifest.get("catalog_hash", ""),
            **{f"{split}_records": counts[split]["total"] for split in SPLITS if split in counts},
            "unseen_intents": len(manifest.get("unseen_intents", [])),
        }


class ModelFolder(Artifact):
    """A Hugging Face folder plus the model card and the catalog it was trained with."""

    KIND, WRITTEN_BY = "model", "sft-warmup / grpo-stage1 / grpo-stage2"
    REQUIRED = (MODEL_CARD, CATALOG_FILE)

    @property
    def catalog_path(self) -> Path:
        return self.file(CATALOG_FILE)

    def card(self) -> dict[str, Any]:
        card = self.read_json(MODEL_CARD)
        if not isinstance(card, dict) or "stage" not in card:
            raise ValueError(f"{self.path / MODEL_CARD}: not a model card (no 'stage')")
        return card

    def files(self) -> list[Path]:
        """The files that make up the model (what the registry ships), training leftovers left out, sorted."""
        from fnmatch import fnmatch

        def shipped(path: Path) -> bool:
            parts = path.relative_to(self.path).parts
            return not any(fnmatch(part, pattern) for part in parts for pattern in NOT_MODEL_FILES)

        return sorted(path for path in self.path.rglob("*") if path.is_file() and shipped(path))

    def content_hash(self) -> str:
        """sha256 over every shipped file's relative path and bytes: which model an evaluation or gate judged."""
        import hashlib

        self.check()
        digest = hashlib.sha256()
        for path in self.files():
            with path.open("rb") as handle:
                file_digest = hashlib.file_digest(handle, "sha256").hexdigest()
            digest.update(f"{path.relative_to(self.path).as_posix()}\0{file_digest}\n".encode())
        return digest.hexdigest()

    def metadata(self) -> dict[str, Any]:
        card = self.card()
        return {
            "stage": card.get("stage", ""),
            "base_model": str(card.get("base_model", "")),
            "catalog_hash": card.get("catalog_hash", ""),
            "dataset_hash": card.get("dataset_hash", ""),
        }

    def reference(self) -> dict[str, Any] | None:
        """The model-ref.json of a folder published by reference (`uri`, `size`, `sha256`), None for a plain one."""
        if not (self.path / MODEL_REF_FILE).is_file():
            return None
        ref = self.read_json(MODEL_REF_FILE)
        if not isinstance(ref, dict) or not all(key in ref for key in ("uri", "size", "sha256")):
            raise ValueError(f"{self.path / MODEL_REF_FILE}: not a model reference (needs uri, size and sha256)")
        return ref

    def resolved(self, cache_dir: str | Path | None = None) -> ModelFolder:
        """This folder, or the one its reference names, downloaded once into the cache and checked against the
        reference's content hash; readers call it so a model by reference reads like a plain folder."""
        ref = self.reference()
        if ref is None:
            return self
        from intentops.storage import ensure_local

        local = ensure_local(ref["uri"], cache_dir)
        found = model_content_hash(local)
        if found != ref["sha256"]:
            raise ValueError(
                f"{ref['uri']}: content hash {found[:16]} differs from {self.path / MODEL_REF_FILE} "
                f"({str(ref['sha256'])[:16]}); the referenced model changed after this run wrote it"
            )
        return ModelFolder(local)

    def publish_by_reference(self, uri: str) -> dict[str, Any]:
        """Upload this finished folder's model files to `uri`, then leave only model-ref.json (and the non-model
        leftovers such as rejected prompts) in it; the training checkpoints are dropped. Returns the reference."""
        from intentops.storage import upload

        card = self.card()  # only a finished model is published
        staging = self.path.parent / f".{self.path.name}.by-reference"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.path, staging, ignore=shutil.ignore_patterns(*NOT_MODEL_FILES))
        try:
            files = [path for path in staging.rglob("*") if path.is_file()]
            ref = {
                "uri": upload(staging, uri),
                "size": sum(path.stat().st_size for path in files),
                "sha256": model_content_hash(staging),
                "stage": card.get("stage", ""),
            }
            for path in files:
                (self.path / path.relative_to(staging)).unlink()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(self.path / "checkpoints", ignore_errors=True)
        for folder in sorted((p for p in self.path.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        write_json(self.path / MODEL_REF_FILE, ref)
        return ref


def model_content_hash(folder: Path) -> str:
    """sha256 over every file's relative path and sha256: equal for equal content, wherever the folder lies."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\t{sha256_file(path)}\n".encode())
    return digest.hexdigest()


class Rollouts(Artifact):
    """The stage-1 scoring pass (one row per scored completion of every training record): what mining reads.

    When stage 1 relabelled its least-confident records `uncertain()`, the records it trained on (`train.jsonl`) and
    the relabel report (`uncertain.json`) come with it: mining joins the scores to those records, not the dataset's.
    """

    KIND, WRITTEN_BY = "rollouts", "grpo-stage1"
    REQUIRED = (SCORES_FILE,)

    @property
    def table(self) -> Path:
        return self.file(SCORES_FILE)

    def trained_on(self, dataset_train: Path) -> Path:
        """The training records stage 1 rolled out: its relabelled copy when there is one, else the dataset's."""
        relabelled = self.path / TRAIN_FILE
        return relabelled if relabelled.is_file() else dataset_train

    def relabel_report(self) -> dict[str, Any] | None:
        path = self.path / UNCERTAIN_REPORT
        return read_json(path) if path.is_file() else None

    def metadata(self) -> dict[str, Any]:
        import pyarrow.parquet as pq

        def rows(name: str) -> int:
            path = self.path / name
            return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0

        relabel = self.relabel_report() or {}
        return {
            "rows": rows(ROLLOUTS_FILE),
            "scoring_rows": rows(SCORES_FILE),
            **({"uncertain_relabelled": relabel["relabelled"]} if relabel else {}),
        }


class HardSet(Artifact):
    KIND, WRITTEN_BY = "hard set", "mine-hard-samples"
    REQUIRED = (TRAIN_FILE, MINING_REPORT_JSON, MINING_REPORT_MD)

    @property
    def train(self) -> Path:
        return self.file(TRAIN_FILE)

    @property
    def report_md(self) -> Path:
        return self.file(MINING_REPORT_MD)


class EvaluatedDataset(BaseModel):
    """Which records an evaluation scored: two evaluations are comparable only when these agree."""

    model_config = ConfigDict(extra="allow")

    dir: str = ""
    split: str = "test"
    hash: str | None = None
    catalog_hash: str | None = None
    max_samples: int = 0
    n: int = 0


class EvaluationMetrics(BaseModel):
    """metrics.json: the headline figures as fields, every other block (per intent, by language, ...) kept as is.

    Strict: a figure stored as text ("0.9") or a boolean is refused rather than converted; the file was edited or
    corrupted, and the gate and the registry must not decide on a guess.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    n: int
    intent_accuracy: float
    param_accuracy: float
    format_error_rate: float | None = None
    macro_f1: float | None = None
    exact_match: float | None = None
    decoding: str = ""
    constrained: bool | None = None
    copy_arguments: bool | None = None
    dataset: EvaluatedDataset = Field(default_factory=EvaluatedDataset)
    model: dict[str, Any] = Field(default_factory=dict)
    mlflow_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def headline(self) -> dict[str, Any]:
        """The figures a one-line summary (CLI output, run summary) shows."""
        keys = ("n", "intent_accuracy", "param_accuracy", "macro_f1", "format_error_rate")
        return {key: getattr(self, key) for key in keys}


class Evaluation(Artifact):
    """metrics.json, predictions.jsonl and the reports; or only no_model.json when there was no model to score."""

    KIND, WRITTEN_BY = "evaluation", "evaluate"
    REQUIRED = (METRICS_FILE, PREDICTIONS_FILE)

    @property
    def evaluated(self) -> bool:
        """False for the evaluation of a model that does not exist (e.g. no champion registered yet)."""
        return not (self.path / NO_MODEL_FILE).is_file()

    def no_model_reason(self) -> str:
        return str(self.read_json(NO_MODEL_FILE).get("reason", ""))

    def no_model_registry(self) -> dict[str, Any] | None:
        """What the registry said when there was no model (e.g. `{"version": ""}`: no champion); None if not asked."""
        return self.read_json(NO_MODEL_FILE).get("registry")

    @classmethod
    def write_no_model(cls, path: str | Path, reason: str, registry: dict[str, Any] | None = None) -> None:
        """Record that there was nothing to evaluate, so the reader decides without a model instead of failing."""
        with cls.writing(path) as tmp:
            write_json(tmp / NO_MODEL_FILE, {"reason": reason, **({"registry": registry} if registry else {})})

    def metrics(self) -> EvaluationMetrics:
        from pydantic import ValidationError

        data = self.read_json(METRICS_FILE)
        try:
            return EvaluationMetrics.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(part) for part in error['loc'])}: {error['msg']} (got {error.get('input')!r})"
                for error in exc.errors()
            )
            raise ValueError(f"{self.path / METRICS_FILE}: not evaluation metrics: {problems}") from None

    @property
    def report_md(self) -> Path:
        return self.file(REPORT_MD)

    @property
    def report_html(self) -> Path:
        return self.file(REPORT_HTML)

    def metadata(self) -> dict[str, Any]:
        if not self.evaluated:
            return {"evaluated": False, "reason": self.no_model_reason()}
        metrics = self.metrics()
        return {
            "evaluated": True,
            "intent_accuracy": metrics.intent_accuracy,
            "param_accuracy": metrics.param_accuracy,
            "format_error_rate": metrics.format_error_rate,
            "n": metrics.n,
            "decoding": metrics.decoding,
            "dataset_hash": metrics.dataset.hash or "",
            "mlflow_run_id": metrics.mlflow_run_id,
        }


class GateResult(Artifact):
    """gate.json (passed, mode, reasons, candidate, champion, checks) and gate.md."""

    KIND, WRITTEN_BY = "gate decision", "gate"
    REQUIRED = (GATE_JSON, GATE_MD)

    @property
    def json_path(self) -> Path:
        return self.file(GATE_JSON)

    @property
    def report_md(self) -> Path:
        return self.file(GATE_MD)

    def decision(self) -> dict[str, Any]:
        return self.read_decision(self.file(GATE_JSON))

    @staticmethod
    def read_decision(path: str | Path) -> dict[str, Any]:
        """A gate decision file (gate.json, or a copy under another name), checked for its `passed` flag."""
        if not Path(path).is_file():
            raise ArtifactMissingError(f"{path}: gate decision not found; the gate stage writes it")
        decision = read_json(path)
        if not isinstance(decision, dict) or not isinstance(decision.get("passed"), bool):
            raise ValueError(f"{path}: expected a gate decision with a boolean 'passed' field")
        return decision

    def metadata(self) -> dict[str, Any]:
        decision = self.decision()
        champion = decision.get("champion") or {}
        return {
            "passed": decision["passed"],
            "mode": decision.get("mode", ""),
            "failed_checks": len(decision.get("failed") or []),
            "reasons": "; ".join(str(reason) for reason in decision.get("reasons") or []),
            "champion_version": str((champion.get("registry") or {}).get("version") or ""),
        }
