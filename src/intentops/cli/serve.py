"""`intentops deploy`, `intentops predict` and `intentops serve stop|status`: ship the champion and ask it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from intentops.cli import add_config_argument, config_from_args

log = logging.getLogger(__name__)
TARGETS = ("kserve", "k8s", "local")
KINDS = ("openai", "mlflow")


def register(subparsers: argparse._SubParsersAction) -> None:
    deploy = subparsers.add_parser(
        "deploy",
        help="Deploy a registered model version to KServe, plain Kubernetes or a local MLflow server.",
        description=(
            "Resolve the version in the MLflow registry, render and server-side apply the vLLM manifests (kserve, k8s) "
            "or start MLflow's model server behind request limits (local), wait for Ready, smoke-test with the training prompt and "
            "structured outputs, run a canary when another version serves, then promote it or roll back. The "
            "endpoint is recorded on the MLflow model version."
        ),
    )
    which = deploy.add_mutually_exclusive_group()
    which.add_argument("--version", help="Registered model version to deploy.")
    which.add_argument("--alias", default="champion", help="Deploy the version behind this alias (default: champion).")
    deploy.add_argument("--target", choices=TARGETS, help="Where to deploy (default: serving.target).")
    deploy.add_argument(
        "--canary-percent",
        type=int,
        help="Traffic share of the new version while it is checked (default: serving.canary_percent; 0 = none).",
    )
    deploy.add_argument("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).")
    deploy.add_argument("--context", help="Kubeconfig context.")
    deploy.add_argument(
        "--smoke-endpoint",
        help="Base URL the smoke test uses instead of the in-cluster address (e.g. a kubectl port-forward).",
    )
    deploy.add_argument("--smoke-requests", type=int, default=24, help="Smoke-test probes (catalog examples).")
    deploy.add_argument(
        "--artifacts-destination",
        help="S3 root behind MLflow's proxied artifact store (default: $MLFLOW_ARTIFACTS_DESTINATION), so the "
        "cluster fetches the weights from S3.",
    )
    deploy.add_argument("--port", type=int, help="local: port of the model server (default: serving.local_port).")
    deploy.add_argument(
        "--detach", action="store_true", help="local: leave the server running in the background and return."
    )
    deploy.add_argument("--dry-run", action="store_true", help="kserve/k8s: print the manifests, apply nothing.")
    add_config_argument(deploy)
    deploy.set_defaults(handler=_deploy)

    predict = subparsers.add_parser(
        "predict",
        help="Ask a deployed intent detector about one utterance.",
        description=(
            "Prints {intent, params, call, raw, valid, latency_ms} as JSON. Without --endpoint it asks the local "
            "server started by `intentops deploy --target local`. Every answer, whatever the endpoint kind, is "
            "checked against the catalog of --model-dir or of the registered version (valid=false, exit 1, when it "
            "names an intent outside it or the wrong number of arguments); OpenAI-compatible (vLLM) endpoints also "
            "get the training prompt from there."
        ),
    )
    predict.add_argument("text", help="The user's utterance.")
    predict.add_argument("--endpoint", help="Base URL (default: the recorded local server).")
    predict.add_argument(
        "--kind", choices=KINDS, help="Endpoint kind (default: mlflow for the local server, else openai)."
    )
    predict.add_argument("--model", help="Served model name (openai; default: the first the server lists).")
    predict.add_argument(
        "--model-dir",
        help="Model folder whose catalog (and prompt, for openai) to use; answers are checked against it.",
    )
    predict.add_argument(
        "--version", help="Registered version whose catalog and prompt to use (default: the served one, or @champion)."
    )
    predict.add_argument("--timeout", type=float, default=60.0, help="Request timeout in seconds.")
    add_config_argument(predict)
    predict.set_defaults(handler=_predict)

    serve = subparsers.add_parser("serve", help="Manage the local model server.", description="Local model server.")
    actions = serve.add_subparsers(dest="serve_command", metavar="ACTION", required=True)
    stop = actions.add_parser("stop", help="Stop the local server started by `deploy --target local`.")
    stop.set_defaults(handler=_serve_stop)
    status = actions.add_parser("status", help="Show the local server's record and whether it answers.")
    status.set_defaults(handler=_serve_status)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _deploy(args: argparse.Namespace) -> int:
    from intentops.serving import deploy as dp

    cfg = config_from_args(args)
    target = args.target or cfg.serving.target
    try:
        if args.dry_run:
            model, _ = dp.resolve_model(cfg, args.version, args.alias, args.artifacts_destination)
            from intentops.serving.manifests import to_yaml

            sys.stdout.write(to_yaml(dp.render(cfg, model, target, args.canary_percent)))
            return 0
        result = dp.deploy(
            cfg,
            version=args.version,
            alias=args.alias,
            target=target,
            canary_percent=args.canary_percent,
            kubeconfig=args.kubeconfig,
            context=args.context,
            smoke_endpoint=args.smoke_endpoint,
            smoke_requests=args.smoke_requests,
            artifacts_destination=args.artifacts_destination,
            port=args.port,
        )
    except dp.DeployError as exc:
        print(f"intentops deploy: failed: {exc}", file=sys.stderr)
        return 1
    _print_json(result.to_dict())
    print(f"{result.model.uri} serves at {result.endpoint}", file=sys.stderr)
    if target != "local" or args.detach:
        return 0
    return _wait_local(result.pid)


def _wait_local(pid: int | None) -> int:
    """Keep the local server in the foreground until Ctrl-C (or until it exits on its own)."""
    from intentops.serving import deploy as dp

    print("Ctrl-C stops the server (or run `intentops serve stop` elsewhere).", file=sys.stderr)
    try:
        while pid is not None and dp.process_alive(pid):
            time.sleep(1.0)
    except KeyboardInterrupt:
        dp.stop_local()
        return 0
    state = dp.read_local_state()
    if state is not None and int(state["pid"]) == pid:
        dp.stop_local()
        print(f"intentops deploy: the local server exited; see {state.get('log')}", file=sys.stderr)
        return 1
    return 0


def _prompt_builder(args: argparse.Namespace, state: dict[str, Any] | None) -> Any:
    """The builder whose catalog every answer is checked against (and, for openai, whose prompt is sent):
    --model-dir, else the recorded local server's version, else the registered version (--version or @champion)."""
    from intentops.prompting import PromptBuilder
    from intentops.serving import deploy as dp

    if args.model_dir:
        return PromptBuilder.from_model_dir(args.model_dir)
    if state is not None and state.get("prompt_dir") and args.version is None:
        return PromptBuilder.from_model_dir(state["prompt_dir"])
    from intentops import registry

    cfg = config_from_args(args)
    version = dp.resolve_version(cfg, args.version or (state or {}).get("version"))
    return dp.load_prompt_builder(cfg, registry.model_storage_uri(cfg, version.version))


def _predict(args: argparse.Namespace) -> int:
    from intentops.serving import deploy as dp
    from intentops.serving.client import ClientError, IntentClient

    endpoint, kind, state = args.endpoint, args.kind, None
    if endpoint is None:
        state = dp.read_local_state()
        if state is None:
            print(
                "intentops predict: no --endpoint and no local server (run `intentops deploy --target local`)",
                file=sys.stderr,
            )
            return 2
        endpoint, kind = state["endpoint"], kind or state.get("kind", "mlflow")
    kind = kind or "openai"
    builder = _prompt_builder(args, state)
    evaluation = config_from_args(args).evaluation
    copy_arguments = evaluation.constrained and evaluation.copy_arguments  # as the model was evaluated
    try:
        with IntentClient(
            endpoint, kind, model=args.model, builder=builder, timeout_s=args.timeout, copy_arguments=copy_arguments
        ) as client:
            answer = client.predict(args.text)
    except ClientError as exc:
        print(f"intentops predict: {exc}", file=sys.stderr)
        return 1
    _print_json(answer)
    return 0 if answer["valid"] else 1


def _serve_stop(args: argparse.Namespace) -> int:
    from intentops.serving import deploy as dp

    state = dp.stop_local()
    if state is None:
        print("no local server is recorded", file=sys.stderr)
        return 0
    print(f"stopped {state.get('model_uri')} at {state.get('endpoint')} (pid {state.get('pid')})", file=sys.stderr)
    return 0


def _serve_status(args: argparse.Namespace) -> int:
    from intentops.serving import deploy as dp

    state = dp.read_local_state()
    if state is None:
        print("no local server is recorded", file=sys.stderr)
        return 1
    state["running"] = dp.process_alive(int(state["pid"]))
    _print_json(state)
    return 0 if state["running"] else 1
