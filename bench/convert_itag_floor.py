"""Where the CPU time of iTAG conversion goes, per manifest line: the floor each step sets.

    python bench/convert_itag_floor.py --lines 100000

Generates the bench manifest (bench/convert_itag.py) and times, in this one process, each step on its own
(CPU time, best of --repeat runs, microseconds per line): parsing a line with the stdlib (what the seed script
does), with orjson (when installed) and msgspec (untyped, typed to the fields conversion reads, and a decode that validates the
JSON but keeps nothing), hashing, and then `itag_chunk.convert_chunk` whole, on its fast path and with every
line on the careful path. The machine's load is printed: other processes inflate CPU times too.

    git archive 8152fa2 src | tar -x -C /tmp/before      # an earlier converter's source tree
    python bench/convert_itag_floor.py --against /tmp/before/src

`--against` also times the block loop (`intentops.data.itag._convert_chunk`) of that source tree and of this one,
alternately in fresh subprocesses, for a same-run ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from intentops.data import itag_chunk
from intentops.io import content_id

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_itag import LABEL_ID, generate

_BLOCK_LOOP = """
import sys, time
from intentops.data import itag
data = open(sys.argv[1], "rb").read()
start, first, blocks = 0, 1, []
while start < len(data):
    stop = data.find(b"\\n", start + (4 << 20))
    stop = len(data) if stop < 0 else stop + 1
    blocks.append(data[start:stop])
    start = stop
started = time.process_time()
for block in blocks:
    itag._convert_chunk(first, block)
    first += block.count(b"\\n")
print((time.process_time() - started) * 1e6 / data.count(b"\\n"))
"""


def _against(manifest: Path, other_src: str, repeat: int) -> None:
    """Best-of-`repeat` CPU per line of the block loop of two source trees, run alternately."""
    here = str(Path(__file__).resolve().parents[1] / "src")
    best = {other_src: float("inf"), here: float("inf")}
    for _ in range(repeat):
        for src in best:
            env = {**os.environ, "PYTHONPATH": src}
            out = subprocess.run([sys.executable, "-c", _BLOCK_LOOP, str(manifest)], env=env, capture_output=True)
            best[src] = min(best[src], float(out.stdout))
    print(
        f"block loop, CPU us per line (best of {repeat}): {other_src} {best[other_src]:.2f}, this tree "
        f"{best[here]:.2f}, ratio {best[other_src] / best[here]:.2f}"
    )


class _Nothing(msgspec.Struct):
    """Decoding into a struct with no fields validates the whole line and builds nothing."""


def _per_line(lines: list[bytes], step: Callable[[bytes], object]) -> Callable[[], None]:
    def run() -> None:
        for line in lines:
            with contextlib.suppress(ValueError, msgspec.DecodeError):
                step(line)

    return run


def _orjson_step(lines: list[bytes]) -> list[tuple[str, Callable[[], None]]]:
    """orjson is not a dependency of intentops: its row is there when it is installed."""
    try:
        import orjson
    except ImportError:
        return []
    return [("orjson.loads, whole line", _per_line(lines, orjson.loads))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000, help="Manifest lines to generate.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs per step; the best one counts.")
    parser.add_argument("--unique-texts", action="store_true", help="Make every utterance distinct.")
    parser.add_argument("--against", help="The src folder of another converter to compare the block loop with.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-itag-floor-") as scratch:
        manifest = Path(scratch) / "manifest.jsonl"
        generate(manifest, args.lines, unique_texts=args.unique_texts)
        data = manifest.read_bytes()
        if args.against:
            _against(manifest, args.against, args.repeat)
    lines = [line for line in data.split(b"\n") if line.strip()]
    texts = [
        text
        for text in (
            msgspec.json.decode(line).get("data", {}).get("instruction")
            for line in lines[:1000]
            if line.startswith(b"{") and line.endswith((b"}", b"}\r"))
        )
        if isinstance(text, str)
    ]
    texts = (texts * (len(lines) // max(1, len(texts)) + 1))[: len(lines)]
    blocks = []
    start = 0
    while start < len(data):
        stop = data.find(b"\n", start + (4 << 20))
        stop = len(data) if stop < 0 else stop + 1
        blocks.append(data[start:stop])
        start = stop
    typed = itag_chunk.line_decoder(f"label-{LABEL_ID}", ("abandonRemark",)).decode
    nothing = msgspec.json.Decoder(_Nothing).decode

    def convert(fast: bool) -> Callable[[], None]:
        def run() -> None:
            first = 1
            for block in blocks:
                itag_chunk.convert_chunk(first, block, fast)
                first += block.count(b"\n")

        return run

    steps: list[tuple[str, Callable[[], None]]] = [
        ("json.loads, stdlib (the seed script's parser)", _per_line(lines, json.loads)),
        *_orjson_step(lines),
        ("msgspec decode, whole line untyped", _per_line(lines, msgspec.json.decode)),
        ("msgspec decode, typed to the fields conversion reads", _per_line(lines, typed)),
        ("msgspec decode, validate only (keeps nothing)", _per_line(lines, nothing)),
        ("content id (sha256 of text + output)", lambda: [content_id(text, "play_music()") for text in texts]),
        ("manifest sha256 (helper thread in convert_manifest)", lambda: hashlib.sha256(data).hexdigest()),
        ("convert_chunk, fast path (all of a line's work)", convert(True)),
        ("convert_chunk, every line on the careful path", convert(False)),
    ]
    print(f"{len(lines):,} non-empty lines, {len(data) / 1e6:,.0f} MB; load average before: {os.getloadavg()}")
    print("| step | CPU us per line |")
    print("|---|---:|")
    for name, step in steps:
        best = float("inf")
        for _ in range(args.repeat):
            started = time.process_time()
            step()
            best = min(best, time.process_time() - started)
        print(f"| {name} | {best * 1e6 / len(lines):.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()}; Python {sys.version.split()[0]}, msgspec {msgspec.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
