"""Convert a PAI iTAG export manifest into IntentOps records, accounting for every line.

The usual throwaway script loads the whole file, takes the first `label-*` key it meets
(often the machine pre-label), prints and drops anything odd and dumps one big list at the end. Here the
manifest is streamed in chunks (local or s3://), the reviewed label `label-<id>` wins over the pre-label
`label-<id>-system`, every excluded line is written to rejects.jsonl with a reason id, and all outputs are
written as they go into a temporary folder that only becomes DIR when the run completes.

Manifest line (one JSON object per line):

    {"data": {"instruction": "我想聽音樂"},
     "label-194...-system": {"results": [{"MarkResult": "<JSON string>"}], "abandonFlag": 0},
     "label-194...": {"results": [{"MarkResult": "<JSON string>"}]},
     "abandonFlag": 0}

where the MarkResult string holds `{"annotations": [{"labels": {"output": "play_music()"}}], ...}`.
The per-line rules live in `itag_rules`, the conversion of one block of lines (fast path and careful path) in
`itag_chunk`; this module streams the manifest, runs blocks in worker processes and writes the outputs.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from intentops.artifacts import CONVERT_REPORT_FILE, QUICKSTART_FILE, RECORDS_FILE, REJECTS_FILE
from intentops.data import itag_chunk, itag_rules
from intentops.io import atomic_path, write_json
from intentops.storage import is_s3, open_uri

log = logging.getLogger(__name__)

REJECT_REASONS = itag_rules.REJECT_REASONS
RAW_CHARS = itag_chunk.RAW_CHARS
detect_lang = itag_rules.detect_lang
join_turns = itag_rules.join_turns
_convert_chunk = itag_chunk.convert_chunk  # looked up at call time, so a test can make one block fail
_CHUNK = 4 << 20
_PARALLEL_FROM_BYTES = 64 << 20


class RejectRateError(ValueError):
    """More manifest lines were rejected than the configured maximum allows."""


@dataclass
class ConvertReport:
    """What happened to every line of a manifest; written to DIR/report.json."""

    manifest_uri: str
    manifest_sha256: str
    manifest_bytes: int
    out_dir: str
    max_reject_rate: float
    total_lines: int = 0
    empty_lines: int = 0
    converted: int = 0
    abandoned: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    human_overrides: int = 0
    reviewed: int = 0
    system_only: int = 0
    multi_intent: int = 0
    multi_turn: int = 0
    languages: dict[str, int] = field(default_factory=dict)
    intents: dict[str, int] = field(default_factory=dict)
    workers: int = 1
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def reject_rate(self) -> float:
        """Rejected share of the non-empty lines."""
        lines = self.total_lines - self.empty_lines
        return self.rejected_total / lines if lines else 0.0

    @property
    def passed(self) -> bool:
        return self.converted > 0 and self.reject_rate <= self.max_reject_rate

    @property
    def message(self) -> str:
        summary = (
            f"{self.converted} converted, {self.abandoned} abandoned, {self.rejected_total} rejected, "
            f"{self.empty_lines} empty of {self.total_lines} lines; {self.human_overrides} human overrides"
        )
        if self.converted == 0:
            return f"no usable record in {self.manifest_uri} ({summary})"
        if self.reject_rate > self.max_reject_rate:
            reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.rejected.items()))
            return (
                f"reject rate {self.reject_rate:.2%} exceeds the maximum {self.max_reject_rate:.2%} "
                f"({reasons}; see {Path(self.out_dir) / 'rejects.jsonl'}) - {summary}"
            )
        return summary

    def raise_for_status(self) -> None:
        """Raise RejectRateError when the conversion should stop the pipeline."""
        if not self.passed:
            raise RejectRateError(self.message)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        manifest = {
            "uri": data.pop("manifest_uri"),
            "sha256": data.pop("manifest_sha256"),
            "bytes": data.pop("manifest_bytes"),
        }
        return {
            "passed": self.passed,
            "message": self.message,
            "manifest": manifest,
            **data,
            "rejected_total": self.rejected_total,
            "reject_rate": round(self.reject_rate, 6),
            "outputs": {
                RECORDS_FILE: self.converted,
                QUICKSTART_FILE: self.converted,
                REJECTS_FILE: self.rejected_total,
            },
        }


class _Chunker:
    """Cuts a binary stream into blocks of whole lines, counting lines and bytes on the way.

    A helper thread hashes the blocks (hashlib releases the GIL on large buffers), so the manifest digest costs
    the converting thread nothing. Lines are counted only with `count_lines` (worker processes need each block's
    first line number up front; one process numbers on from the previous block's batch, which saves a pass
    over the bytes). Use as a context manager; `sha256()` waits for the last block.
    """

    def __init__(self, stream: IO[bytes], progress: tqdm, count_lines: bool) -> None:
        self.stream = stream
        self.progress = progress
        self.count_lines = count_lines
        self.bytes_read = 0
        self.lines = 0
        self._digest = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest-sha256")

    def __enter__(self) -> _Chunker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hasher.shutdown(wait=True)

    def sha256(self) -> str:
        self._hasher.shutdown(wait=True)
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        """(number of the first line, or 0 without `count_lines`; byte offset; block of whole lines including
        their newlines)."""
        while block := self.stream.read(_CHUNK):
            if not block.endswith(b"\n"):
                block += self.stream.readline()  # finish the last line
            self._hasher.submit(self._digest.update, block)
            yield (self.lines + 1 if self.count_lines else 0), self.bytes_read, block
            self.bytes_read += len(block)
            if self.count_lines:
                self.lines += block.count(b"\n") + (not block.endswith(b"\n"))
            self.progress.update(len(block))


def _sequential(chunks: Iterator[tuple[int, int, bytes]]) -> Iterator[itag_chunk.Batch]:
    """Convert chunks one after the other in this process, numbering each on from the previous one."""
    first = 1
    for _, _, chunk in chunks:
        batch = _convert_chunk(first, chunk)
        first += batch.lines
        yield batch


def _parallel(
    chunks: Iterator[tuple[int, int, bytes]], workers: int, local_path: str | None
) -> Iterator[itag_chunk.Batch]:
    """Convert chunks in worker processes, yielding results in order with a bounded number in flight.

    Workers read blocks of a local manifest from the file themselves; blocks of an S3 stream are sent to them.
    """
    context = multiprocessing.get_context("spawn")  # safe even when the caller runs threads (boto3, moto)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    pending: deque[Future[itag_chunk.Batch]] = deque()
    try:
        for first, offset, chunk in chunks:
            if local_path is not None:
                pending.append(pool.submit(itag_chunk.convert_file_chunk, local_path, offset, len(chunk), first))
            else:
                pending.append(pool.submit(itag_chunk.convert_chunk, first, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers(manifest_bytes: int | None) -> int:
    """One process for small manifests (worker start-up would dominate), else up to 4 worker processes."""
    if manifest_bytes is not None and manifest_bytes < _PARALLEL_FROM_BYTES:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


class _Writer:
    """records.jsonl, train.json (a JSON array written element by element) and rejects.jsonl."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.records = open(folder / RECORDS_FILE, "wb", buffering=1 << 20)  # noqa: SIM115
        self.rejects = open(folder / REJECTS_FILE, "wb", buffering=1 << 20)  # noqa: SIM115
        self.train = open(folder / QUICKSTART_FILE, "wb", buffering=1 << 20)  # noqa: SIM115
        self.train.write(b"[")
        self._separator = b"\n"

    def write(self, batch: itag_chunk.Batch) -> None:
        self.records.write(batch.records)
        self.rejects.writelines(batch.rejects)
        if batch.train:
            self.train.write(self._separator)
            self.train.write(batch.train)
            self._separator = b",\n"

    def close(self) -> None:
        self.train.write(b"\n]\n")
        for handle in (self.records, self.rejects, self.train):
            handle.close()


def convert_manifest(
    manifest_uri: str | Path,
    out_dir: str | Path,
    max_reject_rate: float = 0.05,
    workers: int | None = None,
) -> ConvertReport:
    """Stream an iTAG manifest (local or s3://) into records.jsonl, train.json, rejects.jsonl, report.json.

    Memory stays flat whatever the manifest length: the file is read in 4 MiB blocks and each block is
    written out before more than a few are in flight. `workers` processes convert blocks in parallel (None:
    one for small files, else up to 4); the output is identical for any worker count. The report is always
    written, also when the reject rate is above `max_reject_rate` (check `report.passed`, or call
    `report.raise_for_status()`), so nothing is lost.
    """
    uri = str(manifest_uri)
    size = Path(uri).stat().st_size if not is_s3(uri) and Path(uri).is_file() else None
    processes = workers if workers is not None else default_workers(size)
    report = ConvertReport(uri, "", 0, str(out_dir), max_reject_rate)
    totals = itag_chunk.Batch()
    started = time.perf_counter()
    with (
        open_uri(uri, "rb") as stream,
        atomic_path(out_dir) as tmp,
        tqdm(total=size, unit="B", unit_scale=True, desc="convert-itag", disable=None) as progress,
        _Chunker(stream, progress, count_lines=processes > 1) as chunker,
    ):
        writer = _Writer(tmp)
        chunks = iter(chunker)
        batches = _sequential(chunks) if processes <= 1 else _parallel(chunks, processes, None if is_s3(uri) else uri)
        for batch in batches:
            writer.write(batch)
            for name in (
                "lines",
                "converted",
                "empty",
                "abandoned",
                "human_overrides",
                "reviewed",
                "multi_intent",
                "multi_turn",
            ):
                setattr(totals, name, getattr(totals, name) + getattr(batch, name))
            for name in ("rejected", "languages", "intents"):
                merged = getattr(totals, name)
                for key, count in getattr(batch, name).items():
                    merged[key] = merged.get(key, 0) + count
        writer.close()
        report.total_lines = totals.lines
        report.converted = totals.converted
        report.empty_lines = totals.empty
        report.abandoned = totals.abandoned
        report.human_overrides = totals.human_overrides
        report.reviewed = totals.reviewed
        report.system_only = report.converted - totals.reviewed
        report.multi_intent = totals.multi_intent
        report.multi_turn = totals.multi_turn
        report.rejected = dict(sorted(totals.rejected.items()))
        report.languages = dict(sorted(totals.languages.items()))
        report.intents = dict(sorted(totals.intents.items()))
        report.manifest_sha256 = chunker.sha256()
        report.manifest_bytes = chunker.bytes_read
        report.workers = processes
        report.seconds = round(time.perf_counter() - started, 3)
        write_json(tmp / CONVERT_REPORT_FILE, report.to_dict())
    (log.info if report.passed else log.error)("convert-itag %s -> %s: %s", uri, out_dir, report.message)
    return report
