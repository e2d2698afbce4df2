"""GRPO straight from a base or instruct model (`sft.enabled=false`): GRPO without the supervised warm-up.

The SFT stage then trains nothing: it hands the base model on, untrained, as an IntentOps model folder (card stage
`base`, the prompt built from the configuration and the dataset's catalog), so GRPO stage 1, evaluation and serving
read it like any other stage's output. The tiny profile's base is built from the dataset as usual.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from intentops import tracking
from intentops.artifacts import CATALOG_FILE, FEWSHOT_FILE, MODEL_CARD, NOT_MODEL_FILES, TRAIN_FILE
from intentops.catalog import load_catalog
from intentops.config import RunConfig
from intentops.models import base_card, dataset_hash, invalidate_model_dir, publish_model_dir
from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

SKIPPED = "sft.enabled=false: the base model is handed on untrained"


def hand_on_base(
    dataset_dir: str | Path, base_model: str, cfg: RunConfig, out_dir: str | Path, pipeline_run_id: str | None = None
) -> Path:
    """Write the base model (given URI, `model.base_model`, or the tiny profile's model built from the dataset) to
    `out_dir` as an untrained IntentOps model folder."""
    from intentops.training.sft import load_split, resolve_base_model

    dataset_dir, out = Path(dataset_dir), Path(out_dir)
    records = load_split(dataset_dir / TRAIN_FILE)
    catalog = load_catalog(dataset_dir / CATALOG_FILE)
    out.mkdir(parents=True, exist_ok=True)
    invalidate_model_dir(out)
    with (
        tempfile.TemporaryDirectory(prefix=".base-", dir=out) as scratch,
        tracking.stage_run("sft", cfg, pipeline_run_id, params={"skipped": SKIPPED}) as run,
    ):
        base_dir = resolve_base_model(dataset_dir, base_model, cfg, Path(scratch))
        staging = out / ".staging-base"
        shutil.rmtree(staging, ignore_errors=True)
        skip = shutil.ignore_patterns(*NOT_MODEL_FILES, MODEL_CARD, CATALOG_FILE, FEWSHOT_FILE)
        shutil.copytree(base_dir, staging, ignore=skip)
        parent = base_card(base_dir)
        publish_model_dir(
            staging,
            out,
            PromptBuilder(catalog, cfg.prompt, examples=records),
            base_model=parent.get("base_model", str(base_dir)),
            stage="base",
            catalog_hash=catalog.content_hash,
            dataset_hash=dataset_hash(dataset_dir),
            parent=parent,
            skipped=SKIPPED,
            training={"records": 0, "steps": 0, "mlflow_run_id": run.info.run_id},
        )
        import mlflow

        mlflow.set_tag("intentops.skipped", SKIPPED)
    log.info("%s; GRPO starts from %s", SKIPPED, out)
    return out
