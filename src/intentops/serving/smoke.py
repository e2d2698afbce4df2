"""Smoke test of a freshly deployed version: catalog examples as probes, answers checked against the catalog.

The share of valid answers must reach `serving.smoke_min_valid`; failed requests (transport errors, 5xx) count
against it, so a server that errors fails the test as surely as one that answers off-catalog.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.serving.client import ClientError, IntentClient

if TYPE_CHECKING:
    from intentops.catalog import Catalog
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

DEFAULT_SMOKE_REQUESTS = 24


@dataclass
class SmokeReport:
    """Outcome of the smoke probes: errors are failed requests, invalid are answers outside the catalog grammar."""

    requests: int = 0
    errors: int = 0
    invalid: int = 0
    correct: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.requests - self.errors - self.invalid

    @property
    def valid_share(self) -> float:
        return self.valid / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def accuracy(self) -> float:
        """Share of probes answered with the intent whose catalog example they are (informational)."""
        return self.correct / self.requests if self.requests else 0.0

    def passed(self, min_valid: float) -> bool:
        return self.requests > 0 and self.valid_share >= min_valid

    def summary(self) -> str:
        return (
            f"{self.valid}/{self.requests} valid ({self.valid_share:.0%}), {self.errors} errors "
            f"({self.error_rate:.0%}), intent accuracy on catalog examples {self.accuracy:.0%}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "valid": self.valid,
            "valid_share": self.valid_share,
            "error_rate": self.error_rate,
            "accuracy": self.accuracy,
        }


def smoke_probes(catalog: Catalog, limit: int = DEFAULT_SMOKE_REQUESTS) -> list[tuple[str, str]]:
    """(utterance, intent) pairs from the catalog's examples, round-robin over intents so many intents are hit."""
    queues = [
        [(text, intent.name) for text in intent.examples] or [(intent.description, intent.name)]
        for intent in catalog.intents
    ]
    probes: list[tuple[str, str]] = []
    depth = 0
    while len(probes) < limit and any(depth < len(queue) for queue in queues):
        probes.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return probes[:limit]


def run_smoke(client: IntentClient, probes: list[tuple[str, str]]) -> SmokeReport:
    """Ask every probe once; a failed request counts as an error, a malformed or off-catalog answer as invalid."""
    report = SmokeReport()
    for text, expected in probes:
        report.requests += 1
        try:
            answer = client.predict(text)
        except ClientError as exc:
            report.errors += 1
            report.failures.append({"text": text, "error": str(exc)[:300]})
            continue
        report.latency_ms.append(answer["latency_ms"])
        if not answer["valid"]:
            report.invalid += 1
            report.failures.append({"text": text, "raw": answer["raw"][:300]})
        elif answer["intent"] == expected:
            report.correct += 1
    return report


def smoke_test(client: IntentClient, catalog: Catalog, requests: int = DEFAULT_SMOKE_REQUESTS) -> SmokeReport:
    """Probe `client` with `requests` catalog examples and log the outcome."""
    probes = smoke_probes(catalog, requests)
    log.info("smoke test: %d probes against %s", len(probes), client.endpoint)
    report = run_smoke(client, probes)
    log.info("smoke test: %s", report.summary())
    return report


def smoke_failure(report: SmokeReport, cfg: RunConfig, url: str) -> str:
    """The error message of a failed smoke test, with a hint when the endpoint was unreachable from here."""
    detail = "; ".join(json.dumps(f, ensure_ascii=False) for f in report.failures[:3])
    unreachable = report.errors == report.requests and any(
        marker in detail for marker in ("Connection", "resolve", "Name or service", "nodename")
    )
    hint = (
        " (the endpoint was unreachable from here: run deploy inside the cluster, as the pipeline's deploy step does, "
        "or port-forward the service and pass --smoke-endpoint)"
        if unreachable
        else ""
    )
    return (
        f"smoke test against {url} failed: {report.summary()}, below serving.smoke_min_valid="
        f"{cfg.serving.smoke_min_valid:.0%}{hint}; first failures: {detail}"
    )


def openai_client(
    cfg: RunConfig, url: str, builder: PromptBuilder, timeout_s: float, api_key: str | None = None
) -> IntentClient:
    """The smoke-test client of a vLLM endpoint (KServe or plain Kubernetes); `api_key` when vLLM requires one."""
    return IntentClient(
        url,
        "openai",
        model=cfg.serving.service_name,
        builder=builder,
        timeout_s=timeout_s,
        api_key=api_key,
        copy_arguments=cfg.evaluation.constrained and cfg.evaluation.copy_arguments,
    )
