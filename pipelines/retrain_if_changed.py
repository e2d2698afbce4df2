"""intentops-retrain-if-changed: the pipeline to schedule. Trains only when the catalog or the data changed.

    resolve-config -> convert-itag -> validate-dataset -> check-changes -> dsl.If(changed): the training
    pipeline's stages from sft-warmup on, on that very dataset

The configuration is resolved and the data converted and validated once: check-changes compares the dataset's
`catalog_hash` / `dataset_hash` with the tags of the registry's `@champion`, and training (when something changed)
starts from the same dataset artifact. A run with nothing new ends after check-changes.
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
    "IntentOps scheduled retraining: converts and validates the inputs, compares the catalog and data hashes of "
    "the dataset with the @champion's registry tags and trains, gates, registers and deploys only when either "
    "changed (or there is no champion)."
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
