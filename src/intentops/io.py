"""Local file helpers that never leave a half-written output looking complete, and never replace an output the
command did not write itself."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Written into every folder a command publishes: the proof that a later run may replace that folder.
OUTPUT_MARKER = ".intentops-output"
_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically
_AT_FDCWD = -100


class UnsafeOutputError(ValueError):
    """An --out that the command must not write: it holds an input, or belongs to someone else."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories: whatever the block creates at the temporary path is moved into place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        _publish(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _publish(tmp: Path, target: Path) -> None:
    """Move `tmp` onto `target` so a reader sees the old or the new content, never a gap or a mix.

    A folder replacing a folder is swapped in one step where the system allows (else renamed aside first,
    leaving a window of microseconds); the old folder is removed only after the new one is in place.
    """
    if not (tmp.is_dir() and target.is_dir() and not target.is_symlink()):
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp)
        return
    aside = tmp.with_name(tmp.name + ".old")
    os.replace(target, aside)
    os.replace(tmp, target)
    shutil.rmtree(aside)


def _overlaps(out: str, source: str) -> bool:
    """True when one of the two locations is the other or lies inside it."""
    from intentops.storage import is_s3

    if is_s3(out) or is_s3(source):
        a, b = out.rstrip("/") + "/", source.rstrip("/") + "/"
        return a.startswith(b) or b.startswith(a)
    a, b = Path(out).resolve(), Path(source).resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_output(
    out: str | Path, inputs: Sequence[str | Path | None] = (), force: bool = False, resume: bool = False
) -> None:
    """Refuse an --out the command must not replace: one that is, holds or lies inside an input, or an existing
    non-empty folder (or s3:// prefix) it did not write (no OUTPUT_MARKER) unless `force`. `resume` accepts
    the command's own unfinished folder (training resumes from its checkpoints)."""
    from intentops.storage import is_s3, s3_prefix_owner

    text = str(out)
    for source in inputs:
        if source is not None and str(source) and _overlaps(text, str(source)):
            raise UnsafeOutputError(
                f"--out {text} is, holds or lies inside the input {source}; write the output somewhere else"
            )
    if force or resume:
        return
    if is_s3(text):
        owner = s3_prefix_owner(text)
        if owner == "foreign":
            raise UnsafeOutputError(
                f"--out {text}: the prefix holds objects intentops did not write; pick a new prefix or pass --force"
            )
        return
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UnsafeOutputError(f"--out {path}: is a file, not a folder; pick a folder or pass --force")
    if path.is_dir() and any(path.iterdir()) and not (path / OUTPUT_MARKER).is_file():
        raise UnsafeOutputError(
            f"--out {path}: folder is not empty and was not written by intentops; pick a new folder or pass --force"
        )


@contextmanager
def replace_output(
    out: str | Path, inputs: Sequence[str | Path | None] = (), force: bool = False, command: str = "intentops"
) -> Iterator[Path]:
    """The one way a command writes its --out folder (local or s3://).

    Checks `out` with check_output, yields a fresh local folder to fill, and when the block succeeds publishes
    it with an OUTPUT_MARKER: locally by swapping in a complete sibling folder, on S3 through
    `intentops.storage.upload` (files first, the completion manifest last). A failed block publishes nothing.
    """
    from intentops.storage import is_s3, upload

    check_output(out, inputs, force)
    text = str(out)
    if is_s3(text):
        with tempfile.TemporaryDirectory(prefix="intentops-out-") as scratch:
            local = Path(scratch) / "out"
            yield local
            _mark(local, command)
            upload(local, text)
        return
    target = Path(text).resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise UnsafeOutputError(f"--out {target}: cannot write next to it ({exc.strerror}: {exc.filename})") from None
    staging.rmdir()
    try:
        yield staging
        _mark(staging, command)
        _publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _mark(folder: Path, command: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARKER).write_text(json.dumps({"written_by": command}) + "\n", encoding="utf-8")


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; bytes that are not UTF-8 or not JSON raise ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); the file is damaged") from None
    except json.JSONDecodeError as exc:  # still a JSONDecodeError, for callers that catch that
        raise json.JSONDecodeError(f"{path}: not valid JSON ({exc.msg})", exc.doc, exc.pos) from None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream records from a JSONL file; a line that is not UTF-8, not JSON or not an object raises ValueError
    naming the file and line."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not UTF-8 text (byte {exc.start}); re-export as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line, got {type(row).__name__}")
            yield row


def content_id(text: str, output: str) -> str:
    """A record's id from its content (utterance + canonical output): the same record gets the same id in any
    file and any order, so joins by id (rollouts to records) cannot pair different records."""
    return "r-" + hashlib.sha256(f"{text}\x1f{output}".encode()).hexdigest()[:16]


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; returns how many were written."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
