"""Wall time of a stage, recorded in its artifact metadata.

Each stage function opens its `timed` block before it imports its own libraries (mlflow, torch, TRL): loading them
is the stage's work wherever it runs. What a run summary calls orchestration overhead is what is left of the wall
time: starting a process per task, the KFP executor around the stage function, kfp.local's bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def timed(metadata: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Add `stage_seconds` (wall time of the block) to `metadata` when the block succeeds."""
    started = time.perf_counter()
    yield metadata
    metadata["stage_seconds"] = round(time.perf_counter() - started, 3)
