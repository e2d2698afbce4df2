"""Fakes for the serving tests: a Kubernetes API server and an OpenAI-compatible (vLLM-like) endpoint, both HTTP
servers on 127.0.0.1 that the test controls.

`FakeKubernetes` speaks enough of the API for the real `kubernetes` client and its `DynamicClient`: version and
discovery (/version, /api, /api/v1, /apis, /apis/GROUP/VERSION), and GET / LIST (label selectors) / PATCH with
`application/apply-patch+yaml` (server-side apply) / DELETE of Services, ServiceAccounts, Pods (and their logs), Deployments, TrainJobs,
InferenceServices and ServingRuntimes. Apply keeps `status`, bumps `metadata.generation` when the spec changes and
records the field manager. There is no controller: the test registers a reactor per kind, called after every apply,
which scripts what a controller would write into `status` (Ready, never Ready, canary revisions...).

`FakeOpenAI` answers `/v1/models` and `/v1/chat/completions` like vLLM's OpenAI server. Every chat request must
carry vLLM's `structured_outputs` constraint (`choice` or `regex`); the answer comes from a function the test sets
per route (the first path segment, so one server stands in for several revisions) and must satisfy the constraint,
as vLLM's guided decoding guarantees.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

# (group, version) -> [(plural, kind, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("secrets", "Secret", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("serving.kserve.io", "v1beta1"): [("inferenceservices", "InferenceService", True)],
    ("serving.kserve.io", "v1alpha1"): [("servingruntimes", "ServingRuntime", True)],
    ("trainer.kubeflow.org", "v1alpha1"): [("trainjobs", "TrainJob", True)],
}
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _FakeServer:
    """A threaded HTTP server on a free loopback port, started and stopped with `with`."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        owner = self

        class Handler(self.handler):  # type: ignore[name-defined,misc]
            fake = owner

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: Any

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any) -> None:
        text = isinstance(payload, str)  # a pod log is plain text
        data = (payload if text else json.dumps(payload)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ---- Kubernetes ------------------------------------------------------------------------------------------------------


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


class _KubeHandler(_JsonHandler):
    def do_GET(self) -> None:
        self.fake._dispatch(self, "GET", None)

    def do_PATCH(self) -> None:
        self.fake._dispatch(self, "PATCH", self._body())

    def do_DELETE(self) -> None:
        self.fake._dispatch(self, "DELETE", self._body())

    def do_POST(self) -> None:
        self.fake._dispatch(self, "POST", self._body())

    def do_PUT(self) -> None:
        self.fake._dispatch(self, "PUT", self._body())


Reactor = Callable[[dict[str, Any]], None]


class FakeKubernetes(_FakeServer):
    """In-memory API server; `objects` maps (kind, namespace, name) to the stored object."""

    handler = _KubeHandler

    def __init__(self, kserve: bool = True) -> None:
        """`kserve=False` serves a cluster without the KServe CRDs."""
        super().__init__()
        self.resources = {gv: entries for gv, entries in RESOURCES.items() if kserve or gv[0] != "serving.kserve.io"}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.reactors: dict[str, Reactor] = {}
        self.admission: dict[str, str] = {}  # kind -> message: applies of that kind are denied (422), like a webhook
        self.pod_logs: dict[str, str] = {}  # pod name -> what GET .../pods/NAME/log answers
        self._lock = threading.Lock()
        self._resource_version = itertools.count(1)
        self._by_plural = {
            (group, version, plural): (kind, namespaced)
            for (group, version), entries in self.resources.items()
            for plural, kind, namespaced in entries
        }

    # -- test API --

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def get(self, kind: str, name: str, namespace: str = "intentops") -> dict[str, Any] | None:
        with self._lock:
            stored = self.objects.get((kind, namespace, name))
            return copy.deepcopy(stored) if stored is not None else None

    def names(self, kind: str) -> list[str]:
        with self._lock:
            return sorted(name for (k, _, name) in self.objects if k == kind)

    def put(self, obj: dict[str, Any]) -> None:
        """Store an object as if a previous deploy had created it (status included)."""
        with self._lock:
            stored = copy.deepcopy(obj)
            meta = stored.setdefault("metadata", {})
            meta.setdefault("namespace", "intentops")
            meta.setdefault("generation", 1)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = str(next(self._resource_version))
            self.objects[(stored["kind"], meta["namespace"], meta["name"])] = stored

    def set_status(self, kind: str, name: str, status: dict[str, Any], namespace: str = "intentops") -> None:
        with self._lock:
            self.objects[(kind, namespace, name)]["status"] = copy.deepcopy(status)

    def on_apply(self, kind: str, reactor: Reactor) -> None:
        """Call `reactor(stored_object)` (under the lock, may edit status in place) after every apply of `kind`."""
        self.reactors[kind] = reactor

    def applies(self, kind: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method == "PATCH" and (kind is None or (isinstance(r.body, dict) and r.body.get("kind") == kind))
        ]

    # -- HTTP --

    def _dispatch(self, handler: _KubeHandler, method: str, raw: bytes | None) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        content_type = handler.headers.get("Content-Type", "")
        body: Any = None
        if raw:
            body = yaml.safe_load(raw.decode("utf-8")) if "yaml" in content_type else json.loads(raw)
        self.requests.append(Request(method, parts.path, query, content_type, body))
        status, payload = self._route(method, parts.path.strip("/").split("/"), query, content_type, body)
        handler._send(status, payload)

    def _route(
        self, method: str, segments: list[str], query: dict[str, list[str]], content_type: str, body: Any
    ) -> tuple[int, Any]:
        if segments == ["version"]:
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}
        if segments == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if segments == ["apis"]:
            return 200, self._group_list(self.resources)
        if segments[0] == "api" and len(segments) == 2:
            return 200, self._resource_list(self.resources, "", segments[1])
        if segments[0] == "apis" and len(segments) == 3:
            if (segments[1], segments[2]) not in self.resources:
                return 404, _status(404, "NotFound", f"the server could not find {segments[1]}/{segments[2]}")
            return 200, self._resource_list(self.resources, segments[1], segments[2])
        if segments[0] == "api":
            group, version, rest = "", segments[1], segments[2:]
        elif segments[0] == "apis" and len(segments) > 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return 404, _status(404, "NotFound", f"unknown path /{'/'.join(segments)}")
        if len(rest) < 3 or rest[0] != "namespaces":
            return 404, _status(404, "NotFound", "only namespaced object paths are served")
        namespace, plural, name = rest[1], rest[2], (rest[3] if len(rest) > 3 else None)
        if (group, version, plural) not in self._by_plural:
            return 404, _status(404, "NotFound", f"the server could not find the resource {plural}")
        kind, _ = self._by_plural[(group, version, plural)]
        api_version = f"{group}/{version}" if group else version
        with self._lock:
            if name is None and method == "GET":
                return 200, self._list(kind, api_version, namespace, (query.get("labelSelector") or [None])[0])
            if name is None:
                return 405, _status(405, "MethodNotAllowed", f"{method} on a collection is not served")
            key = (kind, namespace, name)
            if kind == "Pod" and rest[4:] == ["log"] and method == "GET":
                if key not in self.objects:
                    return 404, _status(404, "NotFound", f'pods "{name}" not found')
                return 200, self.pod_logs.get(name, "")
            if method == "GET":
                if key not in self.objects:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, self.objects[key]
            if method == "DELETE":
                if key not in self.objects:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                del self.objects[key]
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}
            if method == "PATCH":
                return self._apply(key, api_version, query, content_type, body)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not served by the fake")

    def _apply(
        self,
        key: tuple[str, str, str],
        api_version: str,
        query: dict[str, list[str]],
        content_type: str,
        body: Any,
    ) -> tuple[int, Any]:
        kind, namespace, name = key
        if content_type != APPLY_CONTENT_TYPE:
            return 415, _status(415, "UnsupportedMediaType", f"only server-side apply is served, got {content_type}")
        manager = (query.get("fieldManager") or [""])[0]
        if not manager:
            return 400, _status(400, "BadRequest", "fieldManager is required for apply patch")
        if not isinstance(body, dict) or body.get("kind") != kind or body.get("apiVersion") != api_version:
            return 400, _status(400, "BadRequest", f"body is not a {api_version} {kind}")
        if body.get("metadata", {}).get("name") != name:
            return 400, _status(400, "BadRequest", "metadata.name does not match the URL")
        if kind in self.admission:
            return 422, _status(422, "Invalid", self.admission[kind])
        previous = self.objects.get(key)
        stored = copy.deepcopy(body)
        stored.pop("status", None)
        meta = stored.setdefault("metadata", {})
        meta["namespace"] = namespace
        if previous is None:
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp="2025-01-01T00:00:00Z")
        else:
            old = previous["metadata"]
            changed = previous.get("spec") != stored.get("spec")
            meta.update(
                uid=old["uid"],
                creationTimestamp=old.get("creationTimestamp"),
                generation=old.get("generation", 1) + (1 if changed else 0),
            )
            if "status" in previous:
                stored["status"] = previous["status"]
        meta["resourceVersion"] = str(next(self._resource_version))
        meta["managedFields"] = [{"manager": manager, "operation": "Apply", "apiVersion": api_version}]
        self.objects[key] = stored
        reactor = self.reactors.get(kind)
        if reactor is not None:
            reactor(stored)
        return (200 if previous else 201), stored

    def _list(self, kind: str, api_version: str, namespace: str, selector: str | None) -> dict[str, Any]:
        items = [
            obj
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and ns == namespace and _matches(obj.get("metadata", {}).get("labels") or {}, selector)
        ]
        return {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(next(self._resource_version))},
            "items": items,
        }

    @staticmethod
    def _group_list(resources: dict[tuple[str, str], Any]) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for group, version in resources:
            if group:
                groups.setdefault(group, []).append(version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                    "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
                }
                for group, versions in groups.items()
            ],
        }

    @staticmethod
    def _resource_list(served: dict[tuple[str, str], Any], group: str, version: str) -> dict[str, Any]:
        resources = []
        for plural, kind, namespaced in served.get((group, version), []):
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append(
                {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": verbs}
            )
            resources.append(
                {"name": f"{plural}/status", "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": []}
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }


# ---- status scripts a controller would write ---------------------------------------------------------------------------


def deployment_ready(obj: dict[str, Any]) -> None:
    """What the Deployment controller writes once every replica passes its readiness probe."""
    replicas = obj["spec"].get("replicas", 1)
    obj["status"] = {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}],
    }


def deployment_stuck(obj: dict[str, Any]) -> None:
    """Pods that never pass readiness (e.g. vLLM cannot load the model)."""
    obj["status"] = {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": obj["spec"].get("replicas", 1),
        "updatedReplicas": obj["spec"].get("replicas", 1),
        "unavailableReplicas": obj["spec"].get("replicas", 1),
        "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}],
    }


def canary_of(predictor: dict[str, Any]) -> Any:
    return predictor.get("canaryTrafficPercent")


@dataclass
class KServeController:
    """Writes InferenceService status like KServe in serverless mode: one revision per spec generation, the newest
    one reachable at a tag URL, the main URL pinned to the last revision rolled out at 100%.

    `routes` maps a model version to the route of the fake OpenAI server its revision answers on (default
    `rev<version>`); `ready_versions` lists the versions whose revisions become ready (others stay Ready=False,
    like a crash-looping predictor).
    """

    openai_url: str
    routes: dict[str, str] = field(default_factory=dict)
    ready_versions: set[str] | None = None
    default_mode: str = "Standard"  # the cluster's inferenceservice-config defaultDeploymentMode (KServe's default)
    rolled_out: str | None = None  # revision name that currently takes the traffic not sent to the canary
    revisions: dict[str, str] = field(default_factory=dict)  # revision -> model version
    history: list[dict[str, Any]] = field(default_factory=list)

    def url_of(self, version: str) -> str:
        return f"{self.openai_url}/{self.routes.get(version, f'rev{version}')}"

    def __call__(self, obj: dict[str, Any]) -> None:
        meta, predictor = obj["metadata"], obj["spec"]["predictor"]
        version = meta["labels"]["intentops.io/model-version"]
        # KServe keeps the mode an InferenceService was created with (status first, then annotation, then default).
        recorded = (obj.get("status") or {}).get("deploymentMode")
        annotated = (meta.get("annotations") or {}).get("serving.kserve.io/deploymentMode")
        mode = recorded or {"Serverless": "Knative", "RawDeployment": "Standard"}.get(annotated, annotated)
        mode = mode or self.default_mode
        if canary_of(predictor) is not None and mode != "Knative":
            raise ValueError(f"canaryTrafficPercent on a {mode} InferenceService: KServe cannot split its traffic")
        revision = f"{meta['name']}-predictor-{meta['generation']:05d}"
        self.revisions[revision] = version
        ready = self.ready_versions is None or version in self.ready_versions
        canary = predictor.get("canaryTrafficPercent")
        status: dict[str, Any] = {"observedGeneration": meta["generation"], "deploymentMode": mode}
        if not ready:
            status["conditions"] = [
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "container crashed"}
            ]
            status["components"] = {"predictor": {"latestCreatedRevision": revision}}
            obj["status"] = status
            self.history.append({"revision": revision, "ready": False, "canary": canary})
            return
        traffic = []
        if canary is not None and self.rolled_out is not None and canary < 100:
            traffic.append({"revisionName": self.rolled_out, "percent": 100 - canary, "tag": "prev"})
            if canary:
                traffic.append({"revisionName": revision, "percent": canary, "tag": "latest"})
        else:
            traffic.append({"revisionName": revision, "percent": 100, "latestRevision": True, "tag": "latest"})
            self.rolled_out = revision
        for target in traffic:
            target["url"] = self.url_of(self.revisions[target["revisionName"]])
        status.update(
            # The external host (unresolvable in the cluster, as with KServe's default example.com domain) and the
            # cluster-internal address, which is where the fake answers.
            url=f"http://{meta['name']}.{meta.get('namespace', 'intentops')}.example.com",
            address={"url": self.url_of(self.revisions[self.rolled_out] if self.rolled_out else version)},
            conditions=[{"type": "Ready", "status": "True"}, {"type": "PredictorReady", "status": "True"}],
            components={
                "predictor": {
                    "latestCreatedRevision": revision,
                    "latestReadyRevision": revision,
                    "latestRolledoutRevision": self.rolled_out,
                    "traffic": traffic,
                }
            },
        )
        obj["status"] = status
        self.history.append({"revision": revision, "ready": True, "canary": canary, "traffic": traffic})


# ---- OpenAI-compatible endpoint ----------------------------------------------------------------------------------------


Answer = Callable[[str, dict[str, Any]], str]


class _OpenAIHandler(_JsonHandler):
    def do_GET(self) -> None:
        _, path = self.fake._split(self.path)
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})
        elif path == "/health":
            self._send(200, {})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        route, path = self.fake._split(self.path)
        body = json.loads(self._body() or b"{}")
        if self.fake.api_key and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            self._send(401, {"error": "Unauthorized"})  # what vLLM answers under --api-key
            return
        status, payload = self.fake._chat(route, path, body)
        self._send(status, payload)


class FakeOpenAI(_FakeServer):
    """vLLM's OpenAI server in miniature. `behaviours[route]`: "ok" (default) answers via `answer`, "error" fails
    every request with a 500, "flaky" every third one."""

    handler = _OpenAIHandler

    def __init__(self, model: str, answer: Answer) -> None:
        super().__init__()
        self.model = model
        self.answer = answer
        self.behaviours: dict[str, str] = {}
        self.api_key: str | None = None  # when set, chat requests must carry it (vLLM --api-key)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        segments = urlsplit(path).path.split("/", 2)
        if len(segments) == 3 and segments[1] != "v1":
            return segments[1], "/" + segments[2]
        return "", urlsplit(path).path

    def routed(self, route: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for r, body in self.requests if r == route]

    def _chat(self, route: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            self.requests.append((route, body))
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        behaviour = self.behaviours.get(route, "ok")
        if behaviour == "flaky":  # every third request of the route fails
            behaviour = "error" if len(self.routed(route)) % 3 == 0 else "ok"
        if behaviour == "error":
            return 500, {"error": {"message": "CUDA out of memory", "type": "InternalServerError"}}
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}}
        constraint = body.get("structured_outputs")
        if not isinstance(constraint, dict) or not (constraint.get("choice") or constraint.get("regex")):
            return 400, {"error": {"message": "request carries no structured_outputs choice/regex constraint"}}
        messages = body.get("messages") or []
        if len(messages) != 2 or messages[0].get("role") != "system" or messages[1].get("role") != "user":
            return 400, {"error": {"message": "expected a system and a user message"}}
        content = self.answer(messages[1]["content"], constraint)
        allowed = (
            content in constraint["choice"]
            if constraint.get("choice")
            else re.fullmatch(constraint["regex"], content) is not None
        )
        if not allowed:
            return 500, {"error": {"message": f"fake answer {content!r} violates the constraint {constraint}"}}
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108},
        }
