"""intentops-training: the whole DAG, iTAG manifest to a gated, registered and deployed intent detector.

    resolve-config -> convert-itag -> validate-dataset -> sft-warmup -> grpo-stage1 -> mine-hard-samples
    -> grpo-stage2 -> evaluate -> evaluate-champion -> gate -> register-model (@challenger; @champion only if
    passed)
    -> dsl.If(gate.passed): deploy-vllm

Every knob of `intentops.config` is a pipeline parameter (see parameters.py). Composition only: what a stage does
lives in components/<stage>/component.py and, below that, in the intentops library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components._common import RunSettings, StageSpec, apply_stage
from components.convert_itag.component import SPEC as CONVERT_SPEC
from components.convert_itag.component import convert_itag
from components.deploy_vllm.component import SPEC as DEPLOY_SPEC
from components.deploy_vllm.component import deploy_vllm
from components.evaluate.component import SPEC as EVALUATE_SPEC
from components.evaluate.component import evaluate
from components.evaluate_champion.component import SPEC as EVALUATE_CHAMPION_SPEC
from components.evaluate_champion.component import evaluate_champion
from components.gate.component import SPEC as GATE_SPEC
from components.gate.component import gate
from components.grpo_stage1.component import SPEC as GRPO1_SPEC
from components.grpo_stage1.component import grpo_stage1
from components.grpo_stage2.component import SPEC as GRPO2_SPEC
from components.grpo_stage2.component import grpo_stage2
from components.mine_hard_samples.component import SPEC as MINE_SPEC
from components.mine_hard_samples.component import mine_hard_samples
from components.register_model.component import SPEC as REGISTER_SPEC
from components.register_model.component import register_model
from components.resolve_config.component import resolve_config
from components.sft_warmup.component import SPEC as SFT_SPEC
from components.sft_warmup.component import sft_warmup
from components.validate_dataset.component import SPEC as VALIDATE_SPEC
from components.validate_dataset.component import validate_dataset
from pipelines.parameters import Knobs, knob_pipeline

NAME = "intentops-training"
DESCRIPTION = (
    "IntentOps training: iTAG manifest -> validated dataset -> SFT warm-up -> GRPO stage 1 -> hard-sample mining "
    "(RCS) -> GRPO stage 2 -> evaluation of the candidate and of the champion on the same test set -> gate "
    "(thresholds + no regression vs the champion) -> MLflow registration (@challenger; @champion if passed) -> if "
    "passed: vLLM deployment. Every parameter is a RunConfig knob `section__field`."
)

# A pure function of the knobs: cached, and it needs neither S3 nor MLflow.
RESOLVE_SPEC = StageSpec(
    name="resolve-config",
    cpu_request="100m",
    cpu_limit="500m",
    memory_request="256Mi",
    memory_limit="1Gi",
    caching=True,
    s3=False,
    mlflow=False,
)


def resolve(knobs: Knobs) -> tuple[dsl.PipelineTask, RunSettings]:
    """The resolve-config task and the per-run pod settings derived from it and from the cluster knobs."""
    resolved = resolve_config(**knobs)
    run = RunSettings(
        gpus=knobs["cluster__gpus_per_training_stage"],
        gpu_node_selector=resolved.outputs["gpu_node_selector"],
        gpu_tolerations=resolved.outputs["gpu_tolerations"],
        s3_secret=knobs["cluster__s3_secret"],
        mlflow_secret=knobs["cluster__mlflow_secret"],
    )
    apply_stage(resolved, RESOLVE_SPEC, run)
    return resolved, run


def prepare_data(config: Any, run: RunSettings, run_id: str) -> Any:
    """convert-itag -> validate-dataset; returns the dataset output channel."""
    converted = apply_stage(convert_itag(config=config, pipeline_run_id=run_id), CONVERT_SPEC, run)
    validated = apply_stage(
        validate_dataset(config=config, records=converted.outputs["records"], pipeline_run_id=run_id),
        VALIDATE_SPEC,
        run,
    )
    return validated.outputs["dataset"]


def train_and_ship(config: Any, dataset: Any, run: RunSettings, run_id: str) -> None:
    """Training chain, evaluation of candidate and champion, gate, registration and (if passed) deployment."""
    sft = apply_stage(sft_warmup(config=config, dataset=dataset, pipeline_run_id=run_id), SFT_SPEC, run)
    grpo1 = apply_stage(
        grpo_stage1(config=config, dataset=dataset, sft_model=sft.outputs["model"], pipeline_run_id=run_id),
        GRPO1_SPEC,
        run,
    )
    mined = apply_stage(
        mine_hard_samples(config=config, rollouts=grpo1.outputs["rollouts"], dataset=dataset, pipeline_run_id=run_id),
        MINE_SPEC,
        run,
    )
    grpo2 = apply_stage(
        grpo_stage2(
            config=config,
            hard_set=mined.outputs["hard_set"],
            grpo1_model=grpo1.outputs["model"],
            pipeline_run_id=run_id,
        ),
        GRPO2_SPEC,
        run,
    )
    candidate = grpo2.outputs["model"]
    evaluated = apply_stage(
        evaluate(config=config, model=candidate, dataset=dataset, pipeline_run_id=run_id), EVALUATE_SPEC, run
    )
    # The same evaluate stage on the registry's champion, with the candidate's test-set settings.
    champion = apply_stage(
        evaluate_champion(
            config=config,
            candidate_evaluation=evaluated.outputs["evaluation"],
            dataset=dataset,
            pipeline_run_id=run_id,
        ),
        EVALUATE_CHAMPION_SPEC,
        run,
    )
    gated = apply_stage(
        gate(
            config=config,
            evaluation=evaluated.outputs["evaluation"],
            champion_evaluation=champion.outputs["evaluation"],
            dataset=dataset,
            pipeline_run_id=run_id,
        ),
        GATE_SPEC,
        run,
    )
    # Every candidate is registered as @challenger; register_model moves @champion only when the gate passed.
    registered = apply_stage(
        register_model(
            config=config,
            model=candidate,
            evaluation=evaluated.outputs["evaluation"],
            decision=gated.outputs["decision"],
            dataset=dataset,
            pipeline_run_id=run_id,
        ),
        REGISTER_SPEC,
        run,
    )
    with dsl.If(gated.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition, not Python)
        apply_stage(
            deploy_vllm(config=config, version=registered.outputs["version"], pipeline_run_id=run_id),
            DEPLOY_SPEC,
            run,
        )


def training_dag(knobs: Knobs) -> None:
    resolved, run = resolve(knobs)
    config = resolved.outputs["config"]
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    train_and_ship(config, prepare_data(config, run, run_id), run, run_id)


def build(defaults: Mapping[str, Any] | None = None) -> GraphComponent:
    """The training pipeline; `defaults` (flat knobs) replace flat_fields() defaults in the compiled parameters."""
    return knob_pipeline(NAME, DESCRIPTION, training_dag, defaults)


training_pipeline = build()
