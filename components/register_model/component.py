"""register-model: gated candidate -> new MLflow model version, @challenger, and @champion when the gate passed."""

from typing import NamedTuple

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="register-model",
    cpu_request="1",
    cpu_limit="2",
    memory_request="4Gi",
    memory_limit="8Gi",
    # Writes to the registry (aliases move); registration is idempotent per pipeline run, so one retry is safe.
    caching=False,
    retries=1,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def register_model(
    config: dsl.Input[dsl.Artifact],
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    decision: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    registered: dsl.Output[dsl.Artifact],
) -> NamedTuple("RegisterOutputs", [("version", str)]):
    """Log the candidate (weights, tokenizer, catalog, prompt config) and register it as a new version of
    `registry.model_name`, tagged with catalog hash, dataset hash, pipeline run id and git commit.

    Re-running the same pipeline run returns the same version instead of creating a second one.

    Args:
        config: RunConfig YAML from resolve-config (`registry.*`).
        model: Candidate model folder.
        evaluation: evaluate output folder (metrics logged with the version).
        decision: gate output folder (its decision sets the @champion alias).
        dataset: validate-dataset output folder (its manifest gives the dataset hash).
        pipeline_run_id: Idempotency key of the registration and MLflow grouping.
        registered: Output registered version as JSON; metadata: name, version, aliases, model_uri.

    Returns:
        version: The registered model version, for deploy-vllm.
    """
    import json

    from intentops.config import load_config
    from intentops.stages import register_model as stage

    cfg = load_config(config.path)
    version, meta = stage(cfg, model.path, evaluation.path, decision.path, dataset.path, pipeline_run_id)
    with open(registered.path, "w", encoding="utf-8") as handle:
        json.dump(version.to_dict(), handle, indent=2)
    registered.metadata.update(meta)
    outputs = NamedTuple("RegisterOutputs", [("version", str)])  # noqa: UP014
    return outputs(version.version)
