"""The intent catalog: the tools an assistant can route to, and the version used for retrain-on-change.

A catalog is YAML:

    name: assistant
    intents:
      - name: weather_search
        domain: weather
        description: Look up the weather forecast for a city. 查询城市天气预报。
        parameters:
          - {name: city, type: string, description: City name, required: true}
        examples: ["我想去杭州玩，帮我查下天气预报"]
        replaces: []          # intents this one was split from or merged out of

Intents are shown to the model as tool descriptions, so adding, splitting or merging intents needs no retraining.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

log = logging.getLogger(__name__)

PARAMETER_TYPES = ("string", "integer", "number", "boolean", "date", "time", "datetime")
UNCERTAIN_INTENT = "uncertain"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROGRESS_EVERY_S = 5.0  # long catalog loads say how far they got this often
# libyaml's safe loader when installed (10x faster on large catalogs), else the pure-Python one: both safe.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the file and the entry."""


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str = "string"
    description: str = ""
    required: bool = True

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"parameter name {value!r} is not an identifier")
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PARAMETER_TYPES:
            raise ValueError(f"unknown parameter type {value!r} (known: {', '.join(PARAMETER_TYPES)})")
        return value


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    domain: str = ""
    parameters: tuple[Parameter, ...] = ()
    examples: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"intent name {value!r} is not an identifier")
        if value == UNCERTAIN_INTENT:
            raise ValueError(f"{UNCERTAIN_INTENT!r} is reserved for the explicit uncertain label")
        return value

    @field_validator("description")
    @classmethod
    def _described(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("description is empty")
        return value.strip()

    @property
    def required_parameters(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.required)

    def signature(self) -> str:
        """`name(param: type, [optional: type])`, how the intent reads as a tool."""
        parts = [f"{p.name}: {p.type}" if p.required else f"[{p.name}: {p.type}]" for p in self.parameters]
        return f"{self.name}({', '.join(parts)})"


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "catalog"
    intents: tuple[Intent, ...] = Field(min_length=1)
    _index: dict[str, Intent] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        self._index = {intent.name: intent for intent in self.intents}

    @property
    def names(self) -> list[str]:
        return [intent.name for intent in self.intents]

    @property
    def domains(self) -> list[str]:
        return sorted({intent.domain for intent in self.intents if intent.domain})

    def get(self, name: str) -> Intent | None:
        return self._by_name().get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name()

    def _by_name(self) -> dict[str, Intent]:
        return self._index

    @property
    def content_hash(self) -> str:
        """Stable version of the catalog: same intents and wording give the same hash, whatever the YAML layout."""
        canonical = json.dumps(self.model_dump(mode="json"), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def subset(self, names: list[str]) -> Catalog:
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise CatalogError(f"unknown intents: {', '.join(unknown)}")
        return Catalog(name=self.name, intents=tuple(i for i in self.intents if i.name in set(names)))

    def to_yaml(self, path: str | Path) -> None:
        from intentops.io import atomic_write_text

        atomic_write_text(path, self.to_yaml_text())

    def to_yaml_text(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def parse_catalog(raw: Any, source: str = "<catalog>") -> Catalog:
    """Validate a parsed catalog mapping; errors name the source and the offending entry."""
    if not isinstance(raw, dict) or "intents" not in raw:
        raise CatalogError(f"{source}: expected a mapping with an 'intents' list")
    entries = raw["intents"]
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{source}: 'intents' must be a non-empty list")
    seen: dict[str, int] = {}
    intents = []
    started = last_report = time.monotonic()
    for index, entry in enumerate(entries):
        if time.monotonic() - last_report >= _PROGRESS_EVERY_S:
            last_report = time.monotonic()
            log.info("%s: %d of %d intents checked (%.0f s)", source, index, len(entries), last_report - started)
        label = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
        try:
            intent = Intent.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
            )
            raise CatalogError(f"{source}: intent {label!r} (entry {index}): {problems}") from None
        if intent.name in seen:
            raise CatalogError(f"{source}: intent {intent.name!r} (entry {index}) duplicates entry {seen[intent.name]}")
        param_names = [p.name for p in intent.parameters]
        if len(param_names) != len(set(param_names)):
            raise CatalogError(f"{source}: intent {intent.name!r} (entry {index}) repeats a parameter name")
        seen[intent.name] = index
        intents.append(intent)
    return Catalog(name=str(raw.get("name", "catalog")), intents=tuple(intents))


def load_catalog(path: str | Path) -> Catalog:
    """Load and validate a catalog YAML file (local path; fetch s3:// first with intentops.storage)."""
    source = Path(path)
    if source.is_dir():
        raise CatalogError(f"{source}: is a folder; give the catalog YAML file (e.g. {source / 'catalog.yaml'})")
    if not source.exists():
        raise CatalogError(f"{source}: catalog file not found")
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # a safe loader (C or Python)
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{source}: not UTF-8 text (byte {exc.start}); save the catalog as UTF-8") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from None
    return parse_catalog(raw, source=str(source))
