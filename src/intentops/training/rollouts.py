"""Rollout logs: one parquet row per scored completion (sample id, step, generation, completion, reward components).

Two kinds share the columns: GRPO's own rollouts as training goes ("training", `RolloutLog`) and the RCS scoring
pass over every training record ("scoring", `intentops.training.scoring`). Parquet metadata carries the reward
weights (what total a perfect rollout has), the kind and the training set's hash, so hard-sample mining can refuse a
log that was not made from the training file it is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from intentops.artifacts import ROLLOUT_COLUMNS
from intentops.rewards import REWARD_WEIGHTS_METADATA

KIND_METADATA = "intentops.rollout_kind"  # "training" (GRPO's own rollouts) or "scoring" (the RCS pass)
TRAIN_SET_HASH_METADATA = "intentops.train_set_hash"
SKIPPED_METADATA = "intentops.skipped_ids"
GENERATIONS_METADATA = "intentops.num_generations"


def train_set_hash(records: Sequence[dict[str, Any]]) -> str:
    """Hash of the set of record ids (ids are content hashes, so equal sets mean equal records), order-free."""
    digest = hashlib.sha256()
    for record_id in sorted({str(record["id"]) for record in records}):
        digest.update(record_id.encode("utf-8") + b"\n")
    return digest.hexdigest()


def rollout_schema(reward_weights: Sequence[float], kind: str, **metadata: Any) -> Any:
    """The rollout log's columns; the weights, the log's kind and `metadata` (JSON) ride along as parquet metadata."""
    import pyarrow as pa

    types = {"sample_id": pa.string(), "generation": pa.int64(), "step": pa.int64(), "completion": pa.string()}
    return pa.schema(
        [(name, types.get(name, pa.float64())) for name in ROLLOUT_COLUMNS],
        metadata={
            REWARD_WEIGHTS_METADATA: json.dumps(list(reward_weights)),
            KIND_METADATA: kind,
            **{key: json.dumps(value) for key, value in metadata.items()},
        },
    )


class RolloutLog:
    """Appends scored rollouts to a parquet file as training goes; `close()` moves it into place atomically.

    The generation index counts a sample's completions within a step (0..num_generations-1). Under several processes
    the rows are gathered to the main process, which alone writes.
    """

    def __init__(self, path: Path, reward_weights: Sequence[float], train_hash: str = "") -> None:
        self.path = path
        self._schema = rollout_schema(reward_weights, "training", **{TRAIN_SET_HASH_METADATA: train_hash})
        self._partial = path.with_name(f".{path.name}.partial")
        self._writer: Any = None
        self._seen: Counter[tuple[int, str]] = Counter()
        self.rows = 0

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from accelerate.utils import gather_object

        from intentops.training.launch import distributed_state

        state = distributed_state()
        if state.num_processes > 1:
            rows = gather_object(rows)
            if not state.is_main_process:
                return
        records = []
        for row in rows:
            key = (int(row["step"]), str(row["sample_id"]))
            records.append(
                {
                    "sample_id": key[1],
                    "step": key[0],
                    "generation": self._seen[key],
                    "completion": row["completion"],
                    "reward_format": row["format"],
                    "reward_intent": row["intent"],
                    "reward_params": row["params"],
                    "reward_total": row["total"],
                }
            )
            self._seen[key] += 1
        if self._writer is None:
            self._partial.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._partial, self._schema)
        self._writer.write_table(pa.Table.from_pylist(records, schema=self._schema))
        self.rows += len(records)

    def close(self, target: Path | None = None) -> Path | None:
        """Finish the file and rename it to `target` (default: the log's path); None when nothing was logged."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        final = target or self.path
        os.replace(self._partial, final)
        return final

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._partial.unlink(missing_ok=True)
