"""deploy-vllm: registered version -> vLLM OpenAI endpoint (KServe or plain Kubernetes), smoke-tested, canaried."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="deploy-vllm",
    cpu_request="250m",
    cpu_limit="1",
    memory_request="512Mi",
    memory_limit="2Gi",
    # Changes what users are served: never skipped by a cache hit, never retried blindly (it rolls back itself).
    caching=False,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def deploy_vllm(
    config: dsl.Input[dsl.Artifact],
    version: str,
    pipeline_run_id: str,
    endpoint: dsl.Output[dsl.Artifact],
):
    """Put the registered version behind vLLM's OpenAI-compatible server on `serving.target`: render, apply, wait
    for Ready, smoke-test with structured outputs limited to the catalog, canary, then promote or roll back.

    The `local` target (no cluster, `intentops run`) starts MLflow's model server for the version, smoke-tests it
    and stops it before the step ends, so a pipeline step never leaves a process behind and the registry records no
    endpoint that is gone; `intentops deploy --target local` serves the champion for as long as you need it.

    Args:
        config: RunConfig YAML from resolve-config (`serving.*`, `registry.*`).
        version: Registered model version from register-model.
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        endpoint: Output JSON of the deployment (target, endpoint, smoke test); the same in its metadata.
    """
    import json

    from intentops.config import load_config
    from intentops.stages import deploy_vllm as stage

    summary, meta = stage(load_config(config.path), version, pipeline_run_id)
    with open(endpoint.path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, default=str)
    endpoint.metadata.update(meta)
