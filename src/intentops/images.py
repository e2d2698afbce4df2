"""The image pins of images/versions.env, resolved exactly as images/build.sh resolves them.

One rule for both readers, so `intentops compile` names the images the build pushed:

* `IMAGE_REGISTRY` (environment) replaces the registry of every image this project builds;
* `IMAGE_TAG` (environment) is the tag of the trainer and server images; unset, it is
  `<INTENTOPS_VERSION>-g<12-digit git commit>` when versions.env sits in a git checkout, else `<INTENTOPS_VERSION>`
  (an installed wheel: released images);
* `TRAINER_IMAGE` / `SERVER_IMAGE` / `MLFLOW_SERVER_IMAGE` (environment) replace one image outright, e.g. with the
  `name@sha256:...` digest reference images/build.sh prints after a push.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from intentops.config import IMAGES_ENV

BUILT_IMAGES = ("TRAINER_IMAGE", "SERVER_IMAGE", "MLFLOW_SERVER_IMAGE")
COMMIT_DIGITS = 12


class ImagePinError(ValueError):
    """versions.env or an image override that cannot be used; the message names the file or variable."""


def git_commit(folder: Path) -> str | None:
    """HEAD of the git checkout `folder` is the images/ folder of, or None (no git, or not that checkout's images/)."""
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(top) / "images").resolve() != folder.resolve():
            return None  # e.g. a wheel installed into a venv that lives inside some other checkout
        return subprocess.run(
            ["git", "-C", top, "rev-parse", f"--short={COMMIT_DIGITS}", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def default_tag(version: str, folder: Path) -> str:
    """The tag images/build.sh gives the trainer and server images when IMAGE_TAG is not set."""
    commit = git_commit(folder)
    return f"{version}-g{commit}" if commit else version


def image_pins(path: str | Path | None = None) -> dict[str, str]:
    """Every KEY=VALUE of versions.env, `${...}` resolved, with the environment overrides of the module docstring."""
    from dotenv import dotenv_values

    source = Path(path or IMAGES_ENV)
    if not source.exists():
        raise ImagePinError(f"{source}: image pin file not found")
    text = source.read_text(encoding="utf-8")
    version = dotenv_values(stream=io.StringIO(text)).get("INTENTOPS_VERSION")
    tag = os.environ.get("IMAGE_TAG") or (default_tag(version, source.resolve().parent) if version else "")
    # A first line sets IMAGE_TAG for the `${IMAGE_TAG}` references of the file (as build.sh exports it).
    pins = {key: value for key, value in dotenv_values(stream=io.StringIO(f"IMAGE_TAG={tag}\n{text}")).items() if value}
    for key in BUILT_IMAGES:
        override = os.environ.get(key)
        if override:
            if not is_pinned(override):
                raise ImagePinError(f"{key}={override}: an image override needs an explicit tag or @sha256 digest")
            pins[key] = override
    return pins


def is_pinned(image: str) -> bool:
    """registry/name:tag with a real tag, or name@sha256:digest; never `latest`."""
    if "@sha256:" in image:
        return True
    name, sep, tag = image.rpartition(":")
    return bool(sep) and "/" not in tag and bool(tag) and tag != "latest" and bool(name)
