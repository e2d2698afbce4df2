"""Offline validation of rendered objects: core kinds against the Kubernetes OpenAPI schemas shipped with
kubernetes-validate (strict: unknown fields are errors), KServe kinds against the trimmed CRD schemas in `schemas/`
(which reuse the same core definitions for containers, resources and tolerations)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from intentops.serving.manifests import ISVC_API_VERSION, RUNTIME_API_VERSION, ManifestError

# Kubernetes version whose OpenAPI schemas validate core objects (the kubernetes client 30.x targets 1.30).
KUBERNETES_VERSION = "1.30"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KSERVE_SCHEMAS = {
    (ISVC_API_VERSION, "InferenceService"): "inferenceservice-v1beta1.json",
    (RUNTIME_API_VERSION, "ServingRuntime"): "servingruntime-v1alpha1.json",
}
K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"


@cache
def _kserve_validator(filename: str) -> Any:
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema = json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8"))
    definitions = schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict/_definitions.json", KUBERNETES_VERSION
    )
    registry = Registry().with_resource(K8S_DEFINITIONS_ID, Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_manifest(obj: dict[str, Any]) -> None:
    """Raise ManifestError unless `obj` matches its schema (KServe: trimmed CRD; core: Kubernetes OpenAPI, strict)."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    what = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
    filename = KSERVE_SCHEMAS.get((api_version, kind))
    if filename is not None:
        errors = sorted(_kserve_validator(filename).iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
            raise ManifestError(f"{what} ({api_version}) does not match {filename}: {problems}")
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        raise ManifestError(f"{what} ({api_version}): {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise ManifestError(f"{what}: no schema for {api_version} {kind}") from None


def validate_all(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objs:
        validate_manifest(obj)
    return objs
