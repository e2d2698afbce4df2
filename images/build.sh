#!/usr/bin/env bash
# Build (and push) the IntentOps images with the versions pinned in images/versions.env.
#
#   images/build.sh [--dry-run] [--no-push] [trainer|server|mlflow ...]
#
# --dry-run prints the commands instead of running them. IMAGE_REGISTRY=... in the environment overrides the
# registry of versions.env. After pushing a new TRAINER_IMAGE, run `intentops compile` so the pipelines use it.
# The trainer and server images install the intentops wheel built here once (dist/images/, with the bundled
# defaults as package data), never the checkout itself.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
registry_override="${IMAGE_REGISTRY:-}"
set -a
# shellcheck source=versions.env
source "$here/versions.env"
set +a
if [[ -n "$registry_override" && "$registry_override" != "$IMAGE_REGISTRY" ]]; then
  TRAINER_IMAGE="${TRAINER_IMAGE/#$IMAGE_REGISTRY/$registry_override}"
  SERVER_IMAGE="${SERVER_IMAGE/#$IMAGE_REGISTRY/$registry_override}"
  MLFLOW_SERVER_IMAGE="${MLFLOW_SERVER_IMAGE/#$IMAGE_REGISTRY/$registry_override}"
fi

dry_run=0
push=1
targets=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --no-push) push=0 ;;
    trainer|server|mlflow) targets+=("$arg") ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$arg' (expected --dry-run, --no-push, trainer, server, mlflow)" >&2; exit 2 ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(trainer server mlflow)

run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

build() {  # build NAME TAG BUILD_ARG...
  local name="$1" tag="$2"; shift 2
  local args=()
  for var in "$@"; do
    if [[ -z "${!var:-}" ]]; then
      echo "build.sh: $var is not set in images/versions.env" >&2; exit 1
    fi
    args+=(--build-arg "$var=${!var}")
  done
  run docker build --file "$here/$name/Dockerfile" "${args[@]}" --tag "$tag" "$root"
  if [[ $push -eq 1 ]]; then
    run docker push "$tag"
  fi
}

wheel_dir="$root/dist/images"
if [[ " ${targets[*]} " == *" trainer "* || " ${targets[*]} " == *" server "* ]]; then
  run rm -f "$wheel_dir"/intentops-*.whl  # only wheels this script wrote: the images must get exactly one
  run python3 -m pip wheel --no-deps --wheel-dir "$wheel_dir" "$root"
fi

for target in "${targets[@]}"; do
  case "$target" in
    trainer)
      build trainer "$TRAINER_IMAGE" PYTORCH_IMAGE TORCH_VERSION TRANSFORMERS_VERSION TRL_VERSION PEFT_VERSION \
        ACCELERATE_VERSION DEEPSPEED_VERSION KFP_VERSION ;;
    server)
      build server "$SERVER_IMAGE" VLLM_IMAGE ;;
    mlflow)
      build mlflow "$MLFLOW_SERVER_IMAGE" MLFLOW_BASE_IMAGE PSYCOPG2_VERSION BOTO3_VERSION ;;
  esac
done
