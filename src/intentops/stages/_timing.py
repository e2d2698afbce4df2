"""Wall time of a stage, recorded in its artifact metadata."""

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
