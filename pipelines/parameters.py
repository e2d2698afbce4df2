"""Pipeline parameters = the flat knobs of `intentops.config` (one definition, three doors: UI, CLI, local run).

KFP reads a pipeline's parameters from its Python signature and their descriptions from the docstring's `Args:`
section, so `knob_pipeline` builds both from `flat_fields()`: every knob becomes a typed parameter `section__field`
with its default and description. KFP calls a pipeline function positionally, so the body receives the knobs as
one dict of pipeline channels, in flat_fields() order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from intentops.config import RESOURCES, RunConfig, flat_fields, knobs_docstring

Knobs = dict[str, PipelineChannel]


def portable_value(value: Any) -> Any:
    """Paths to the bundled defaults become their bundled names (`examples/...`, `configs/...`), which the config
    resolves inside whatever intentops is installed in the pod; compiled YAML does not depend on where it was built."""
    root = f"{RESOURCES}/"
    if isinstance(value, str) and value.startswith(root):
        return value[len(root) :]
    if isinstance(value, list):
        return [portable_value(item) for item in value]
    return value


def pipeline_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The flat knobs of `cfg`, portable, as arguments for a cluster run (or a compiled variant's defaults); knobs
    that took their output mode's default are 0 (= that default), as in flat_fields()."""
    return {name: 0 if name in cfg.mode_defaulted else portable_value(value) for name, value in cfg.flat().items()}


def knob_pipeline(
    name: str,
    description: str,
    body: Callable[[Knobs], None],
    defaults: Mapping[str, Any] | None = None,
) -> GraphComponent:
    """A KFP pipeline named `name` whose parameters are every knob (defaults from flat_fields() unless given)."""
    fields = flat_fields()
    names = [field.name for field in fields]
    unknown = set(defaults or {}) - set(names)
    if unknown:
        raise ValueError(f"{name}: unknown knobs in defaults: {', '.join(sorted(unknown))}")
    values = {field.name: field.default for field in fields} | dict(defaults or {})

    def pipeline_func(*channels: PipelineChannel) -> None:
        body(dict(zip(names, channels, strict=True)))

    pipeline_func.__name__ = pipeline_func.__qualname__ = name.replace("-", "_")
    pipeline_func.__doc__ = knobs_docstring(description)
    pipeline_func.__annotations__ = {field.name: field.type for field in fields}
    pipeline_func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                field.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=portable_value(values[field.name]),
                annotation=field.type,
            )
            for field in fields
        ]
    )
    return dsl.pipeline(name=name, description=description)(pipeline_func)
