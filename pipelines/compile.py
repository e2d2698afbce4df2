"""Compile the IntentOps pipelines to YAML (what `intentops compile` runs, and what the staleness test checks).

The committed pipelines/*.yaml are compiled with the flat_fields() defaults; `defaults` (e.g. a GPU config's
knobs) produce a variant whose UI defaults are that config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kfp import compiler
from kfp.dsl.graph_component import GraphComponent

PIPELINES_DIR = Path(__file__).resolve().parent


def builders() -> dict[str, Callable[[Mapping[str, Any] | None], GraphComponent]]:
    """File stem -> pipeline builder (imported on use: building a pipeline builds every component)."""
    from pipelines import retrain_if_changed, training_pipeline

    return {"training_pipeline": training_pipeline.build, "retrain_if_changed": retrain_if_changed.build}


def compile_pipeline(stem: str, path: str | Path, defaults: Mapping[str, Any] | None = None) -> Path:
    """Compile one pipeline (`training_pipeline` or `retrain_if_changed`) to `path`."""
    known = builders()
    if stem not in known:
        raise ValueError(f"unknown pipeline {stem!r}; known: {', '.join(known)}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(known[stem](defaults), str(target))
    return target


def compile_all(out_dir: str | Path = PIPELINES_DIR, defaults: Mapping[str, Any] | None = None) -> list[Path]:
    return [compile_pipeline(stem, Path(out_dir) / f"{stem}.yaml", defaults) for stem in builders()]


if __name__ == "__main__":
    for written in compile_all():
        print(written)
