"""Checkpoints that survive the pod: run-scoped remote copies, resume with a fingerprint, fallback past broken ones.

With `storage.checkpoint_uri` set, every checkpoint the trainer saves is uploaded (by
`intentops.training.callbacks.UploadCheckpoints`) to `<uri>/<pipeline_run_id>/<stage>/checkpoint-N/` through
`intentops.storage.upload`, whose manifest goes up last and marks the copy complete. A retried pod starts with an
empty scratch folder: `RemoteCheckpoints.restore` takes the newest complete checkpoint whose resume key (dataset,
base model, training config) matches this run's, downloads it and hands its path to `trainer.train`. A checkpoint
that does not load (truncated safetensors, bad trainer_state.json, a cut torch file) is named in one log line and
the previous one is tried, else training starts fresh and says why.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from intentops import storage

log = logging.getLogger(__name__)

KEY_FILE = "intentops-resume-key.json"  # inside each uploaded checkpoint: what it was trained from
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TORCH_FILES = ("*.pt", "*.pth", "*.bin")  # torch.save writes zip archives; a cut one lacks its central directory


def normal_key(key: dict[str, Any]) -> dict[str, Any]:
    """The resume key as it reads back from JSON (tuples become lists, paths strings), so keys compare equal."""
    return json.loads(json.dumps(key, default=str, sort_keys=True))


def checkpoint_step(name: str) -> int | None:
    match = _CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (header check: truncated, not safetensors), None when it can."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as exc:  # the Rust side raises SafetensorError, OSError or ValueError by cause
        return f"{path}: truncated or corrupted safetensors file ({exc})"


def check_model_weights(model_dir: str | Path) -> None:
    """Raise ValueError naming the first safetensors file of a model folder that is truncated or corrupted."""
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ValueError(f"{problem}; copy or download the model folder again")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a trainer checkpoint folder cannot be resumed from (naming the file), None when it looks loadable."""
    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        return f"{state_file}: missing"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"{state_file}: not valid JSON ({exc})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{state_file}: no integer global_step"
    for path in sorted(folder.rglob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return problem
    for pattern in _TORCH_FILES:
        for path in sorted(folder.rglob(pattern)):
            if not zipfile.is_zipfile(path):
                return f"{path}: truncated or not a torch checkpoint file"
    return None


def newest_usable(checkpoint_dir: Path) -> str | None:
    """The newest `checkpoint-N` under `checkpoint_dir` that loads; broken newer ones are named and skipped."""
    if not checkpoint_dir.is_dir():
        return None
    found = sorted(
        ((step, path) for path in checkpoint_dir.iterdir() if (step := checkpoint_step(path.name)) is not None),
        reverse=True,
    )
    for _step, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning("checkpoint %s is unusable (%s); falling back to the previous one", path, problem)
    return None


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


class RemoteCheckpoints:
    """One stage's checkpoints under `<checkpoint_uri>/<pipeline_run_id>/<stage>/`, tagged with its resume key."""

    def __init__(self, prefix: str, key: dict[str, Any]) -> None:
        self.prefix = prefix
        self.key = normal_key(key)

    @classmethod
    def from_config(
        cls, checkpoint_uri: str, pipeline_run_id: str | None, stage: str, key: dict[str, Any]
    ) -> RemoteCheckpoints | None:
        """None when `storage.checkpoint_uri` is empty (checkpoints stay in scratch); a run without an id (a local
        CLI run) uses `local`, and the resume key keeps runs with other data or config apart."""
        if not checkpoint_uri:
            return None
        return cls(storage.run_scoped(checkpoint_uri, pipeline_run_id, stage), key)

    def uri(self, name: str) -> str:
        return _join(self.prefix, name)

    def _steps(self) -> list[tuple[int, str]]:
        """(step, name) of every checkpoint folder under the prefix, newest first."""
        names = storage.list_folders(self.prefix)
        return sorted(((step, name) for name in names if (step := checkpoint_step(name)) is not None), reverse=True)

    def _stored_key(self, name: str) -> dict[str, Any] | None:
        try:
            with storage.open_uri(self.uri(f"{name}/{KEY_FILE}")) as handle:
                stored = json.load(handle)
        except (storage.StorageError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return stored if isinstance(stored, dict) else None

    def restore(self, local_dir: Path) -> str | None:
        """Download the newest complete, matching, loadable checkpoint into `local_dir`; its path, or None."""
        changed: set[str] = set()
        for step, name in self._steps():
            uri = self.uri(name)
            if not storage.upload_finished(uri):
                log.info("skipping %s: its upload did not finish", uri)
                continue
            stored = self._stored_key(name)
            if stored != self.key:
                changed.update(k for k in self.key if (stored or {}).get(k) != self.key[k])
                continue
            target = local_dir / name
            shutil.rmtree(target, ignore_errors=True)  # a broken local copy of this step (this stage's own folder)
            try:
                storage.download(uri, target)
                problem = checkpoint_problem(target)
            except storage.StorageError as exc:
                problem = str(exc)
            if problem:
                log.warning("checkpoint %s is unusable (%s); falling back to the previous one", uri, problem)
                shutil.rmtree(target, ignore_errors=True)
                continue
            log.info("resuming from %s (step %d)", uri, step)
            return str(target)
        if changed:
            log.warning(
                "not resuming from the checkpoints in %s: %s changed since; training from the start",
                self.prefix,
                ", ".join(sorted(changed)),
            )
        return None

    def save(self, folder: Path, keep: int) -> str:
        """Upload one saved checkpoint folder (resume key inside, manifest last), then drop older uploads beyond
        `keep`; returns its URI."""
        (folder / KEY_FILE).write_text(json.dumps(self.key, indent=1, sort_keys=True), encoding="utf-8")
        uri = storage.upload(folder, self.uri(folder.name))
        log.info("checkpoint %s uploaded to %s", folder.name, uri)
        step = checkpoint_step(folder.name)
        older = [name for s, name in self._steps() if step is not None and s < step]
        for name in older[max(keep - 1, 0) :]:
            storage.remove_upload(self.uri(name))
        return uri


def restore_once(remote: RemoteCheckpoints, local_dir: Path) -> str | None:
    """`remote.restore` on the main process; the pod's other processes then take the same folder from the shared
    scratch (one node: every process sees `local_dir`)."""
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first():
        return remote.restore(local_dir) if state.is_main_process else newest_usable(local_dir)
