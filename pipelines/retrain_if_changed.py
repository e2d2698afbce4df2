"""intentops-retrain-if-changed: the pipeline to schedule. Trains only when the catalog or the data changed.

    resolve-config -> check-changes -> dsl.If(changed): intentops-training (the whole training DAG, as a
    sub-pipeline with the same knobs)

check-changes converts and splits the inputs exactly as the training pipeline does and compares the resulting
`catalog_hash` / `dataset_hash` with the tags of the registry's `@champion`; a run with nothing new ends there.
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
    "IntentOps scheduled retraining: compares the catalog and data hashes of the inputs with the @champion's "
    "registry tags and runs the intentops-training pipeline only when either changed (or there is no champion)."
)


def build(defaults: Mapping[str, Any] | None = None) -> GraphComponent:
    """The retrain-if-changed pipeline around a training sub-pipeline compiled with the same `defaults`."""
    training = training_pipeline.build(defaults)

    def retrain_dag(knobs: Knobs) -> None:
        resolved, run = training_pipeline.resolve(knobs)
        checked = apply_stage(check_changes(config=resolved.outputs["config"]), CHECK_SPEC, run)
        with dsl.If(checked.outputs["Output"] == True, name="inputs-changed"):  # noqa: E712 (KFP condition)
            training(**knobs)

    return knob_pipeline(NAME, DESCRIPTION, retrain_dag, defaults)


retrain_if_changed = build()
