"""Local serving benchmark: p50/p95 latency and requests/s at several concurrencies against the local target.

The server is the one `intentops deploy --target local` starts (`mlflow models serve` of a registered version); the
requests go through `IntentClient` exactly as `intentops predict` sends them, one utterance per request, cycling
through the catalog's example utterances. Loopback endpoints only: this measures the serving stack on this machine.

    intentops deploy --target local --detach            # serve @champion on 127.0.0.1:5005
    python bench/serving.py --requests 48 --concurrency 1 8 --write-readme
    intentops serve stop

`--deploy` does the three steps itself (deploy the champion, measure, stop).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from readme_section import README, write_section

from intentops.artifacts import CATALOG_FILE
from intentops.catalog import load_catalog
from intentops.config import EXAMPLE_DIR
from intentops.io import write_json
from intentops.serving.client import ClientError, IntentClient

ROOT = Path(__file__).resolve().parents[1]

SECTION = "serving"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def run_level(
    endpoint: str, kind: str, texts: list[str], concurrency: int, timeout_s: float, catalog: str
) -> dict[str, Any]:
    """Send every text once with `concurrency` requests in flight; latency per request, throughput overall."""
    local = threading.local()
    clients: list[IntentClient] = []
    lock = threading.Lock()

    def ask(text: str) -> tuple[float | None, bool]:
        if not hasattr(local, "client"):
            local.client = IntentClient(endpoint, kind, catalog=catalog, timeout_s=timeout_s)
            with lock:
                clients.append(local.client)
        try:
            answer = local.client.predict(text)
        except ClientError:
            return None, False
        return answer["latency_ms"], bool(answer["intent"])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(ask, texts))
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    latencies = [latency for latency, _ in results if latency is not None]
    errors = sum(1 for latency, _ in results if latency is None)
    if not latencies:
        raise SystemExit(f"every request to {endpoint} failed at concurrency {concurrency}")
    return {
        "concurrency": concurrency,
        "requests": len(texts),
        "errors": errors,
        "answered_with_intent": sum(1 for _, ok in results if ok),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "requests_per_s": round(len(texts) / wall, 2),
        "wall_s": round(wall, 2),
    }


def markdown(report: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['answered_with_intent']} | {r['p50_ms']} | "
        f"{r['p95_ms']} | {r['requests_per_s']} |"
        for r in report["levels"]
    )
    return (
        f"## {SECTION}\n\n"
        "Local target: `mlflow models serve` of the registered pyfunc (CPU, one uvicorn worker), one utterance per "
        "request through `IntentClient` over loopback, after an unmeasured warm-up; latency is per request, "
        "requests/s over the whole level. With two cores the tiny model's server is CPU-bound: at concurrency 8 "
        "requests queue, so throughput stays flat and latency grows with the queue.\n\n"
        f"Model: `{report['model']}`{report['note']}. Machine: {report['machine']}; measured {report['measured_at']}.\n\n"
        "| concurrency | requests | errors | answered with an intent | p50 ms | p95 ms | requests/s |\n"
        "|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "Reproduce (a registered champion; any RunConfig with its registry):\n\n"
        f"```bash\nintentops deploy --target local --detach\n{report['command']}\nintentops serve stop\n```\n"
    )


def _reproducible(argv: list[str] | None) -> list[str]:
    """The measurement arguments of this run (output-only options dropped), for the README's command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--out", "--model-note"):
            skip = True
        elif arg != "--write-readme" and not arg.startswith(("--out=", "--model-note=")):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="Base URL (default: the local server recorded by deploy).")
    parser.add_argument("--kind", choices=("mlflow", "openai"), default="mlflow")
    parser.add_argument("--requests", type=int, default=48, help="Requests per concurrency level.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--catalog", default=str(EXAMPLE_DIR / CATALOG_FILE), help="Where the utterances come from.")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--warmup",
        type=int,
        help="Unmeasured requests sent first (default: every distinct utterance once; the first request of each "
        "new prompt length is slow while the CPU kernels for that shape are set up).",
    )
    parser.add_argument("--deploy", action="store_true", help="Deploy @champion locally first and stop it after.")
    parser.add_argument("--config", help="RunConfig for --deploy (registry and port).")
    parser.add_argument("--out", help="Also write the report as JSON here.")
    parser.add_argument("--write-readme", action="store_true", help=f"Update section '{SECTION}' of {README}.")
    parser.add_argument("--model-note", default="", help="What the served model is, for the README.")
    args = parser.parse_args(argv)

    from intentops.serving import deploy as dp

    model = "given endpoint"
    if args.deploy:
        from intentops.config import load_config

        result = dp.deploy(load_config(args.config), target="local", smoke_requests=4)
        args.endpoint, model = result.endpoint, result.model.uri
    try:
        if args.endpoint is None:
            state = dp.read_local_state()
            if state is None:
                raise SystemExit("no --endpoint and no local server; run `intentops deploy --target local --detach`")
            args.endpoint, model = state["endpoint"], state.get("model_uri", model)
        if urlsplit(args.endpoint).hostname not in LOOPBACK:
            raise SystemExit(f"{args.endpoint} is not a loopback endpoint; this benchmark measures the local target")
        examples = [text for intent in load_catalog(args.catalog).intents for text in intent.examples]
        texts = [examples[i % len(examples)] for i in range(args.requests)]
        with IntentClient(args.endpoint, args.kind, catalog=args.catalog, timeout_s=args.timeout) as client:
            warmup = len(examples) if args.warmup is None else args.warmup
            for text in [examples[i % len(examples)] for i in range(warmup)]:
                client.predict(text)
        levels = []
        for concurrency in args.concurrency:
            level = run_level(args.endpoint, args.kind, texts, concurrency, args.timeout, args.catalog)
            levels.append(level)
            print(json.dumps(level))
    finally:
        if args.deploy:
            dp.stop_local()
    report = {
        "model": model,
        "note": f" ({args.model_note})" if args.model_note else "",
        "endpoint": args.endpoint,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at the end"
        ),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": "python bench/serving.py " + " ".join(shlex.quote(a) for a in _reproducible(argv)),
        "levels": levels,
    }
    print(markdown(report))
    if args.out:
        write_json(args.out, report)
    if args.write_readme:
        write_section(SECTION, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
