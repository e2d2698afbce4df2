"""What a deployment ends with: a `DeployResult` for the version now serving, or a `DeployError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from intentops.serving.manifests import ModelRef
from intentops.serving.smoke import SmokeReport


class DeployError(RuntimeError):
    """A deployment that did not end with the new version serving; says what was rolled back."""

    def __init__(self, message: str, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


@dataclass
class DeployResult:
    """What a successful deploy left serving."""

    target: str
    model: ModelRef
    endpoint: str
    smoke: SmokeReport
    previous_version: str | None = None
    canary_percent: int | None = None
    manifests: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": asdict(self.model),
            "endpoint": self.endpoint,
            "previous_version": self.previous_version,
            "canary_percent": self.canary_percent,
            "smoke": self.smoke.to_dict(),
            "pid": self.pid,
        }
