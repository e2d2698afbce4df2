"""The one typed run configuration: its sections assembled, loaded from YAML or flat overrides, checked as a whole.

Every knob is defined once, with its default and description, in `intentops.config_sections`. The CLI reads it from YAML (`--config`), the
Kubeflow pipeline exposes each knob as a flat parameter (`section__field`, see `flat_fields`), and the local run uses
the same defaults, so the three doors can never drift apart. Rules that tie knobs together (knob_rules.py) run on
every load, so a bad combination fails in seconds, naming the knob, before any stage spends GPU time.

The defaults (bundled example, configs/, DeepSpeed JSON, pinned image versions) ship inside the package under
`intentops/resources/`, so an installed wheel finds them without a source checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from intentops.config_sections import (
    DEFAULT_CONFIG,
    EXAMPLE_DIR,
    FLAT_SEPARATOR,
    IMAGES_ENV,
    MLFLOW_OPTIONAL_ENV,
    MLFLOW_REQUIRED_ENV,
    PACKAGE_ROOT,
    RESOURCES,
    S3_ENV,
    ClusterConfig,
    ConfigSection,
    DataConfig,
    EvaluationConfig,
    GateConfig,
    GrpoConfig,
    MiningConfig,
    ModelConfig,
    PromptConfig,
    RegistryConfig,
    ServingConfig,
    SftConfig,
    StorageConfig,
    bundled_path,
)

__all__ = [
    "DEFAULT_CONFIG",
    "EXAMPLE_DIR",
    "FLAT_SEPARATOR",
    "IMAGES_ENV",
    "MLFLOW_OPTIONAL_ENV",
    "MLFLOW_REQUIRED_ENV",
    "PACKAGE_ROOT",
    "RESOURCES",
    "S3_ENV",
    "ClusterConfig",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "FlatField",
    "GateConfig",
    "GrpoConfig",
    "MiningConfig",
    "ModelConfig",
    "PromptConfig",
    "RegistryConfig",
    "RunConfig",
    "ServingConfig",
    "SftConfig",
    "StorageConfig",
    "bundled_path",
    "flat_fields",
    "knobs_docstring",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the file and field."""


class RunConfig(ConfigSection):
    """Everything a run needs; YAML files under configs/ are instances of it."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    # Flat names of the knobs that took their output mode's default (knob_rules.fill_mode_defaults).
    _mode_defaulted: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def mode_defaulted(self) -> frozenset[str]:
        """Flat names of the knobs that took their output mode's default; as pipeline parameters they are 0, so
        they follow the mode a run ends up with."""
        return self._mode_defaulted

    def flat(self) -> dict[str, Any]:
        """`{section__field: value}` for every knob: the pipeline's parameter set."""
        return {
            f"{section}{FLAT_SEPARATOR}{key}": value
            for section, values in self.model_dump().items()
            for key, value in values.items()
        }

    @classmethod
    def from_flat(cls, flat: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
        """Rebuild a config from flat knobs (as a pipeline passes them) over `base` (defaults if None)."""
        base = base or cls()
        nested = base.model_dump()
        for name in base.mode_defaulted:  # unset again: they follow the output mode the result ends up with
            section, _, key = name.partition(FLAT_SEPARATOR)
            nested[section][key] = 0
        for name, value in flat.items():
            section, sep, key = name.partition(FLAT_SEPARATOR)
            if not sep or section not in nested or key not in nested[section]:
                raise ConfigError(f"unknown configuration knob {name!r}")
            nested[section][key] = value
        return _validated(nested, source="flat parameters")

    @model_validator(mode="wrap")
    @classmethod
    def _mode_defaults(cls, data: Any, handler: Any) -> RunConfig:
        """Completion lengths left unset (or 0) take their output mode's default (knob_rules.MODE_LENGTH_DEFAULTS)."""
        from intentops.knob_rules import fill_mode_defaults

        if not isinstance(data, dict):
            return handler(data)
        data, filled = fill_mode_defaults(data)
        cfg = handler(data)
        cfg._mode_defaulted = frozenset(filled)
        return cfg

    @model_validator(mode="after")
    def _knobs_agree(self) -> RunConfig:
        from intentops.knob_rules import problems

        found = problems(self)
        if found:
            raise ValueError("; ".join(found))
        return self

    def check_catalog(self) -> None:
        """Raise ConfigError when held-out intents or domain are not in data.catalog (if it is readable here)."""
        from intentops.knob_rules import catalog_problems

        found = catalog_problems(self)
        if found:
            raise ConfigError(f"flat parameters: {'; '.join(found)}")

    def to_yaml(self, path: str | Path) -> None:
        from intentops.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.model_dump(), sort_keys=False, allow_unicode=True))

    def write_resolved(self, path: str | Path) -> dict[str, Any]:
        """Write the run's config file; returns what a person sees of it in the Kubeflow UI (hash, main choices)."""
        import hashlib

        self.to_yaml(path)
        return {
            "config_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "knobs": len(self.flat()),
            "model_profile": self.model.profile,
            "base_model": self.model.base_model,
            "manifest": self.data.manifest,
            "catalog": self.data.catalog,
            "gate_mode": self.gate.mode,
            "serving_target": self.serving.target,
        }


@dataclass(frozen=True)
class FlatField:
    name: str
    type: type
    default: Any
    description: str


def flat_fields() -> list[FlatField]:
    """Every knob as a flat, typed field with its default and description (for pipeline signatures and docs)."""
    fields: list[FlatField] = []
    defaults = RunConfig()
    for section_name, section_field in RunConfig.model_fields.items():
        section_model = section_field.annotation
        section_value = getattr(defaults, section_name)
        for key, info in section_model.model_fields.items():
            name = f"{section_name}{FLAT_SEPARATOR}{key}"
            # A knob that follows the output mode is offered as 0 (= that mode's default), so a run that only
            # switches the mode gets the right length.
            value = 0 if name in defaults.mode_defaulted else getattr(section_value, key)
            fields.append(
                FlatField(
                    name=name,
                    type=_kfp_type(value),
                    default=value,
                    description=info.description or "",
                )
            )
    return fields


def knobs_docstring(description: str) -> str:
    """`description` plus an `Args:` line per knob: where KFP reads a parameter's description for its UI."""
    lines = [description, "", "Args:", *(f"    {field.name}: {field.description}" for field in flat_fields())]
    return "\n".join(lines) + "\n"


def _kfp_type(value: Any) -> type:
    for candidate in (bool, int, float, str, list, dict):
        if isinstance(value, candidate):
            return candidate
    raise TypeError(f"unsupported knob type {type(value).__name__}")


def _problem(error: Any) -> str:
    """One pydantic error as the UI names it: `section__field: message` (cross-field rules name their own knob)."""
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "value_error" and not loc:
        return str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{FLAT_SEPARATOR.join(loc[:2])}: unknown knob (see intentops.config for every knob)"
    knob = FLAT_SEPARATOR.join(loc[:2]) + "".join(f"[{part}]" for part in loc[2:])
    return f"{knob}: {error['msg']}"


def _validated(data: dict[str, Any], source: str) -> RunConfig:
    from intentops.storage import has_credentials

    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {'; '.join(_problem(err) for err in exc.errors())}") from None
    secret = [name for name, value in cfg.flat().items() if has_credentials(value)]
    if secret:  # knobs end up in MLflow params and compiled pipelines: credentials come from the environment
        raise ConfigError(
            f"{source}: {', '.join(secret)} holds a user/password in a URI; remove it and set "
            f"MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or AWS_* for S3) in the environment instead"
        )
    return cfg


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load a RunConfig from YAML (None = configs/tiny-cpu.yaml) and apply flat `section__field` overrides."""
    source = Path(path) if path else DEFAULT_CONFIG
    if not source.exists():
        raise ConfigError(f"{source}: configuration file not found")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    config = _validated(raw, source=str(source))
    return RunConfig.from_flat(overrides, base=config) if overrides else config
