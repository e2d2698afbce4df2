#!/usr/bin/env bash
# Build (and push) the IntentOps images with the versions pinned in images/versions.env.
#
#   images/build.sh [--dry-run] [--no-push] [trainer|server|mlflow ...]
#
# --dry-run prints the commands instead of running them. The environment overrides what versions.env says, exactly as
# `intentops compile` reads it (src/intentops/images.py): IMAGE_REGISTRY=... the registry, IMAGE_TAG=... the tag of
# the trainer and server images (default <INTENTOPS_VERSION>-g<git commit>). After a push it prints each image's
# digest reference (TRAINER_IMAGE=name@sha256:...): export those before `intentops compile` to pin by digest.
# Every pip install in the images is constrained by images/constraints.txt (regenerate with images/lock.py).
# The trainer and server images install the intentops wheel built here once (dist/images/, with the bundled
# defaults as package data), never the checkout itself.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

commit=""
if top="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null)" && [[ "$(cd "$top/images" 2>/dev/null && pwd -P)" == "$(cd "$here" && pwd -P)" ]]; then
  commit="$(git -C "$top" rev-parse --short=12 HEAD)"
  dirty="$(git -C "$top" status --porcelain --untracked-files=no)"
fi
tag_override="${IMAGE_TAG:-}"
IMAGE_TAG="${tag_override:-pending}"  # versions.env refers to it; the real default needs its INTENTOPS_VERSION
set -a
# shellcheck source=versions.env
source "$here/versions.env"
set +a
if [[ -z "$tag_override" ]]; then
  IMAGE_TAG="$INTENTOPS_VERSION${commit:+-g$commit}"
  set -a
  # shellcheck source=versions.env
  source "$here/versions.env"
  set +a
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
if [[ -n "${dirty:-}" && -z "$tag_override" ]]; then
  message="the checkout has uncommitted changes, so the tag $IMAGE_TAG would not name what goes into the images"
  if [[ $dry_run -eq 0 ]]; then
    echo "build.sh: $message; commit them or set IMAGE_TAG" >&2; exit 1
  fi
  echo "build.sh: warning: $message" >&2
fi

run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

build() {  # build NAME IMAGE_VARIABLE BUILD_ARG...
  local name="$1" image_var="$2" tag="${!2}"; shift 2
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
    if [[ $dry_run -eq 0 ]]; then
      # The digest this registry gave the push (an image pushed to several registries has one per repository).
      local digest
      digest="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | grep -m1 "^${tag%:*}@")"
      echo "$image_var=$digest"
    fi
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
      build trainer TRAINER_IMAGE PYTORCH_IMAGE TORCH_VERSION TRANSFORMERS_VERSION TRL_VERSION PEFT_VERSION \
        ACCELERATE_VERSION DEEPSPEED_VERSION KFP_VERSION VLLM_VERSION ;;
    server)
      build server SERVER_IMAGE VLLM_IMAGE ;;
    mlflow)
      build mlflow MLFLOW_SERVER_IMAGE MLFLOW_BASE_IMAGE PSYCOPG2_VERSION BOTO3_VERSION ;;
  esac
done
