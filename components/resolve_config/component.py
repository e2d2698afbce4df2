"""resolve-config: every knob in as a typed, described parameter; the run's RunConfig YAML out.

The parameter list is built from `intentops.config.flat_fields()` when this module is imported, so a new knob in
config.py is a new parameter with nothing to regenerate. A lightweight component cannot do that (KFP ships its
function's source text, whose signature would have to be written out), so this is a container component that
runs `resolve_config_step` from the installed `components` package through KFP's own executor (`{{$}}` is the
executor input, and the executor writes the artifact metadata and outputs exactly as for a lightweight component).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kfp import dsl

from components._common import TRAINER_IMAGE
from intentops.config import RunConfig, flat_fields, knobs_docstring

FUNCTION = "resolve_config_step"
DESCRIPTION = (
    "Validate every knob together as one RunConfig (cross-field rules included) and write it as the run's config "
    "artifact, which every later stage reads; derive the GPU node selector and tolerations from the cluster knobs."
)
# Run the installed module with kfp's executor; kfp.local's SubprocessRunner also runs it (it needs executor_main).
# The module's path is looked up without importing it (that would import kfp and pydantic once more, ~1.5 s).
_RUN = (
    'python3 -m kfp.dsl.executor_main --component_module_path "$(python3 -c '
    '\'import importlib.util; print(importlib.util.find_spec("components.resolve_config.component").origin)\')" "$@"'
)


# The functional form keeps real types in __annotations__ (KFP's executor reads them; the class form would hold
# strings under `from __future__ import annotations`).
ResolvedConfig = NamedTuple("ResolvedConfig", [("gpu_node_selector", dict), ("gpu_tolerations", list)])  # noqa: UP014


def _with_knob_signature(func: Callable[..., Any], outputs: dict[str, Any], returns: Any) -> Callable[..., Any]:
    """Give `func` the parameters KFP reads: `outputs`, then one typed parameter per knob."""
    fields = flat_fields()
    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)
        for name, annotation in [*outputs.items(), *((f.name, f.type) for f in fields)]
    ]
    func.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    func.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    return func


def resolve_config_step(config: dsl.Output[dsl.Artifact], **knobs: Any) -> ResolvedConfig:
    """What runs in the pod: validate, write run_config.yaml, describe it in the UI, place the GPU stages."""
    started = time.perf_counter()
    cfg = RunConfig.from_flat(knobs)
    cfg.check_catalog()
    config.metadata.update(cfg.write_resolved(config.path))
    config.metadata["stage_seconds"] = round(time.perf_counter() - started, 3)
    return ResolvedConfig(cfg.cluster.gpu_node_selector(), cfg.cluster.gpu_tolerations())


_with_knob_signature(resolve_config_step, {"config": dsl.Output[dsl.Artifact]}, ResolvedConfig)


def _container(*_placeholders: Any) -> dsl.ContainerSpec:
    return dsl.ContainerSpec(
        image=TRAINER_IMAGE,
        command=["sh", "-ec", _RUN, "resolve-config"],
        args=["--executor_input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER, "--function_to_execute", FUNCTION],
    )


_container.__name__ = _container.__qualname__ = "resolve_config"
_container.__doc__ = knobs_docstring(DESCRIPTION)  # KFP reads each parameter's UI description from `Args:`
resolve_config = dsl.container_component(
    _with_knob_signature(
        _container,
        {
            "config": dsl.Output[dsl.Artifact],
            "gpu_node_selector": dsl.OutputPath(dict),
            "gpu_tolerations": dsl.OutputPath(list),
        },
        dsl.ContainerSpec,
    )
)
