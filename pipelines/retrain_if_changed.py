"""intentops-retrain-if-changed: the pipeline to schedule. Trains only when the catalog or the data changed.

    resolve-config -> convert-itag -> validate-dataset -> check-changes -> dsl.If(changed): the training
    pipeline's stages from sft-warmup on, on that very dataset

The configuration is resolved and the data converted and validated once: check-changes looks for a registered
version (champion or failed challenger) tagged with the dataset's `catalog_hash` / `dataset_hash`, and training (when
none exists, or `registry.force_retrain`) starts from the same dataset artifact. A run with nothing new ends after
check-changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components._common import apply_stage
from components.check_changes.component import SPEC as CHECK_SPEC
from components.check_changes.component import check_changes
from pipelines import training_pipeline
from pipelines.parameters import Knobs, knob_pipeline

NAME = "intentops-retrain-if-changed"
DESCRIPTION = (
    "IntentOps scheduled retraining: converts and validates the inputs and trains, gates, registers and deploys "
    "only when no registered version (champion or a challenger that failed the gate) was trained on this catalog "
    "and data, or registry__force_retrain is set."
)


def build(defaults: Mapping[str, Any] | None = None) -> GraphComponent:
    """The retrain-if-changed pipeline; `defaults` (flat knobs) replace the compiled parameter defaults."""

    def retrain_dag(knobs: Knobs) -> None:
        resolved, run = training_pipeline.resolve(knobs)
        config = resolved.outputs["config"]
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        dataset = training_pipeline.prepare_data(config, run, run_id)
        checked = apply_stage(check_changes(config=config, dataset=dataset), CHECK_SPEC, run)
        with dsl.If(checked.outputs["Output"] == True, name="inputs-changed"):  # noqa: E712 (KFP condition)
            training_pipeline.train_and_ship(config, dataset, run, run_id)

    return knob_pipeline(NAME, DESCRIPTION, retrain_dag, defaults)


retrain_if_changed = build()
