"""Local paths and s3:// URIs behind one small API, so every stage reads and writes the same way on a laptop,
in a Kubeflow pod (MinIO) or against AWS S3.

The S3 endpoint comes from the `endpoint_url` argument, else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or
`MLFLOW_S3_ENDPOINT_URL` (the variable MLflow users already set for MinIO); credentials come from the usual
boto3 chain (environment, shared files, instance role). Errors name the URI and say what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from intentops.artifacts import CONVERT_REPORT_FILE, DATASET_MANIFEST, MODEL_CARD
from intentops.io import OUTPUT_MARKER, atomic_path, sha256_file

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
_READ_BUFFER = 1 << 20
# Written last under every prefix `upload` fills: the files with their sha256, and whether the upload finished.
# Readers take only the listed files and refuse a prefix whose manifest says the upload did not finish.
UPLOAD_MANIFEST = ".intentops-manifest.json"
# Files that tell readers "this output is finished"; they go up after everything else.
_COMPLETION_FILES = (MODEL_CARD, DATASET_MANIFEST, CONVERT_REPORT_FILE, OUTPUT_MARKER)


# `scheme://user:password@host`: the user-info part of any URI inside a text.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact_uri(value: object) -> str:
    """`value` as text with the user and password removed from every URI in it (for logs, params, defaults)."""
    return _USERINFO.sub(lambda match: match.group("scheme"), str(value))


def has_credentials(value: object) -> bool:
    """True when `value` holds a URI with a user or password in it."""
    return bool(_USERINFO.search(str(value)))


class StorageError(ValueError):
    """A URI that cannot be read or written; the message names the URI and the cause."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The bucket, key, prefix or local path does not exist."""


def is_s3(uri: str | os.PathLike[str]) -> bool:
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    if not is_s3(uri):
        raise StorageError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket name")
    return bucket, key


def endpoint_url(explicit: str | None = None) -> str | None:
    """The S3 endpoint to use: the argument, else the first endpoint variable set, else AWS's default."""
    if explicit:
        return explicit
    for name in ENDPOINT_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def s3_client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client for the configured endpoint (path-style addressing, which MinIO needs)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url(endpoint),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


@contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn botocore failures into StorageError subclasses that name the URI."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StorageError(
            f"{uri}: no S3 credentials ({exc}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"(and AWS_ENDPOINT_URL for MinIO)"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("NoSuchBucket",):
            raise StorageNotFoundError(f"{uri}: bucket {split_s3(uri)[0]!r} does not exist") from None
        if code in ("NoSuchKey", "404", "NotFound"):
            raise StorageNotFoundError(f"{uri}: no such object") from None
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageError(f"{uri}: access denied ({code}); check the S3 credentials and bucket policy") from None
        raise StorageError(f"{uri}: S3 error {code}: {error.get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise StorageError(f"{uri}: {exc}") from None


class _S3RawReader(io.RawIOBase):
    """Adapts a get_object body to io.RawIOBase so it can be buffered and decoded without loading it whole."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _s3_errors(self._uri):
            chunk = self._body.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@contextmanager
def open_uri(
    uri: str | os.PathLike[str], mode: str = "r", encoding: str = "utf-8", endpoint: str | None = None
) -> Iterator[IO[Any]]:
    """Open a local file or an S3 object for streaming reads (`r` text, `rb` bytes).

    S3 objects are streamed from get_object through a 1 MiB buffer, so a manifest of any size reads in
    constant memory.
    """
    if mode not in ("r", "rb"):
        raise ValueError(f"open_uri: mode {mode!r} not supported (only 'r' and 'rb'; write with upload())")
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise StorageNotFoundError(f"{path}: no such file")
        with open(path, mode, encoding=encoding if mode == "r" else None) as handle:
            yield handle
        return
    text_uri = str(uri)
    bucket, key = split_s3(text_uri)
    if not key or key.endswith("/"):
        raise StorageError(f"{text_uri}: names a prefix, not an object")
    with _s3_errors(text_uri):
        body = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"]
    binary = io.BufferedReader(_S3RawReader(body, text_uri), buffer_size=_READ_BUFFER)
    stream: IO[Any] = binary if mode == "rb" else io.TextIOWrapper(binary, encoding=encoding)
    try:
        yield stream
    finally:
        stream.close()


def _list_prefix(client: Any, uri: str) -> list[dict[str, Any]]:
    """Every object under `uri` treated as a folder (a trailing slash is implied)."""
    bucket, key = split_s3(uri)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    objects: list[dict[str, Any]] = []
    with _s3_errors(uri):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(obj for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
    return objects


def _head(client: Any, uri: str) -> dict[str, Any] | None:
    """Object metadata, or None when `uri` is not an object (it may still be a prefix)."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        return None
    with _s3_errors(uri):
        try:
            return client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None  # a missing bucket also answers 404 to HEAD; listing the prefix names it
            raise


def _relative_key(key: str, uri: str) -> str:
    """The object's path inside the prefix; StorageError when it would land outside the destination folder."""
    prefix = split_s3(uri)[1].rstrip("/")
    relative = key[len(prefix) + 1 :] if prefix else key
    normal = posixpath.normpath(relative) if relative else ""
    if not relative or relative.startswith("/") or normal.startswith("..") or "\\" in relative or normal == ".":
        raise StorageError(
            f"{S3_SCHEME}{split_s3(uri)[0]}/{key}: object key points outside the prefix {uri} "
            f"(would be written outside the download folder); refusing to download it"
        )
    return normal


def _read_manifest(client: Any, uri: str) -> dict[str, Any] | None:
    """The prefix's finished upload manifest, None when the prefix was not written by `upload`."""
    manifest = _manifest_document(client, uri)
    if manifest is not None and manifest.get("complete") is not True:
        raise StorageError(
            f"{uri}: upload incomplete (interrupted or still running, see {UPLOAD_MANIFEST}); upload it again"
        )
    return manifest


def _manifest_document(client: Any, uri: str) -> dict[str, Any] | None:
    bucket, key = split_s3(uri)
    manifest_key = "/".join(part for part in (key.rstrip("/"), UPLOAD_MANIFEST) if part)
    if _head(client, f"{S3_SCHEME}{bucket}/{manifest_key}") is None:
        return None
    with _s3_errors(uri):
        body = client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    try:
        manifest = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StorageError(f"{uri}/{UPLOAD_MANIFEST}: not valid JSON; the upload is broken") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise StorageError(f"{uri}/{UPLOAD_MANIFEST}: not an upload manifest; the upload is broken")
    return manifest


def _fetch(client: Any, uri: str, dest: Path) -> str:
    """Download `uri` (object or prefix) to `dest` atomically; returns `file` or `dir`.

    A prefix written by `upload` yields exactly its manifest's files, each checked against its sha256.
    """
    bucket, _ = split_s3(uri)
    if _head(client, uri) is not None:
        with atomic_path(dest) as tmp, _s3_errors(uri):
            client.download_file(bucket, split_s3(uri)[1], str(tmp))
        return "file"
    objects = _list_prefix(client, uri)
    if not objects:
        raise StorageNotFoundError(f"{uri}: no such object or prefix")
    manifest = _read_manifest(client, uri)
    expected: dict[str, Any] = manifest["files"] if manifest else {}
    wanted = [obj for obj in objects if _relative_key(obj["Key"], uri) != UPLOAD_MANIFEST]
    if manifest:
        wanted = [obj for obj in wanted if _relative_key(obj["Key"], uri) in expected]
        missing = sorted(set(expected) - {_relative_key(obj["Key"], uri) for obj in wanted})
        if missing:
            raise StorageError(f"{uri}: objects listed in {UPLOAD_MANIFEST} are missing: {', '.join(missing[:5])}")
    with atomic_path(dest) as tmp:
        for obj in wanted:
            relative = _relative_key(obj["Key"], uri)
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with _s3_errors(f"{S3_SCHEME}{bucket}/{obj['Key']}"):
                client.download_file(bucket, obj["Key"], str(target))
            if manifest and sha256_file(target) != expected[relative]["sha256"]:
                raise StorageError(
                    f"{S3_SCHEME}{bucket}/{obj['Key']}: content does not match the sha256 in {UPLOAD_MANIFEST} "
                    f"(changed after upload); upload the folder again"
                )
    log.info("downloaded %d objects from %s to %s", len(wanted), uri, dest)
    return "dir"


def download(uri: str, dest: str | Path, endpoint: str | None = None) -> Path:
    """Copy an S3 object or prefix (or a local file or folder) to `dest`, atomically."""
    target = Path(dest)
    if is_s3(uri):
        _fetch(s3_client(endpoint), uri, target)
        return target
    source = Path(uri)
    if not source.exists():
        raise StorageNotFoundError(f"{source}: no such file or folder")
    with atomic_path(target) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copy2(source, tmp)
    return target


def s3_prefix_owner(uri: str, endpoint: str | None = None) -> str:
    """`empty` (no objects), `ours` (written by `upload`: it holds UPLOAD_MANIFEST) or `foreign`."""
    objects = _list_prefix(s3_client(endpoint), uri)
    if not objects:
        return "empty"
    if any(_relative_key(obj["Key"], uri) == UPLOAD_MANIFEST for obj in objects):
        return "ours"
    return "foreign"


def _put_manifest(client: Any, bucket: str, prefix: str, manifest: dict[str, Any]) -> None:
    key = "/".join(part for part in (prefix, UPLOAD_MANIFEST) if part)
    with _s3_errors(f"{S3_SCHEME}{bucket}/{key}"):
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=1).encode("utf-8"))


def _upload_folder(client: Any, source: Path, bucket: str, prefix: str) -> None:
    """Folder -> prefix so that no reader takes a half-done upload for a finished one.

    The manifest is first replaced by an "incomplete" one, the files go up with the completion files
    (model card, dataset manifest, report) last, the previous upload's own files that the new one lacks are
    deleted, and the complete manifest with every file's sha256 goes up at the very end.
    """
    uri = f"{S3_SCHEME}{bucket}/{prefix}"
    previous = _manifest_document(client, uri) if _list_prefix(client, uri) else None
    # files of earlier uploads to this prefix, remembered across interrupted ones
    owned = set(previous["files"]) | set(previous.get("previous", [])) if previous else set()
    files = sorted(
        (p for p in source.rglob("*") if p.is_file()),
        key=lambda p: (p.relative_to(source).as_posix() in _COMPLETION_FILES, p.relative_to(source).as_posix()),
    )
    listed = {f.relative_to(source).as_posix(): {"sha256": sha256_file(f), "size": f.stat().st_size} for f in files}
    if UPLOAD_MANIFEST in listed:
        raise StorageError(f"{source}: holds a file named {UPLOAD_MANIFEST}, which upload reserves")
    _put_manifest(client, bucket, prefix, {"complete": False, "files": {}, "previous": sorted(owned)})
    for file in files:
        object_key = "/".join(part for part in (prefix, file.relative_to(source).as_posix()) if part)
        with _s3_errors(f"{S3_SCHEME}{bucket}/{object_key}"):
            client.upload_file(str(file), bucket, object_key)
    for stale in sorted(owned - set(listed)):
        stale_key = "/".join(part for part in (prefix, stale) if part)
        with _s3_errors(f"{S3_SCHEME}{bucket}/{stale_key}"):
            client.delete_object(Bucket=bucket, Key=stale_key)
    _put_manifest(client, bucket, prefix, {"complete": True, "files": listed})
    log.info("uploaded %d files from %s to %s", len(files), source, uri)


def upload(path: str | Path, uri: str, endpoint: str | None = None) -> str:
    """Copy a local file to an object, or a local folder to a prefix (keys keep the relative paths).

    A non-s3 `uri` is treated as a local destination, so callers need no branch for local runs. A folder upload
    ends with UPLOAD_MANIFEST, which `download` and `ensure_local` check.
    """
    source = Path(path)
    if not source.exists():
        raise StorageNotFoundError(f"{source}: no such file or folder to upload")
    if not is_s3(uri):
        download(str(source), uri)
        return uri
    client = s3_client(endpoint)
    bucket, key = split_s3(uri)
    if source.is_file():
        if not key or key.endswith("/"):
            key = key + source.name
        with _s3_errors(f"{S3_SCHEME}{bucket}/{key}"):
            client.upload_file(str(source), bucket, key)
        return f"{S3_SCHEME}{bucket}/{key}"
    prefix = key.rstrip("/")
    _upload_folder(client, source, bucket, prefix)
    return f"{S3_SCHEME}{bucket}/{prefix}"


def run_scoped(base: str, pipeline_run_id: str | None, *parts: str) -> str:
    """`<base>/<pipeline_run_id>/<parts...>` (run id `local` outside a pipeline): where a run's stage keeps what a
    retried pod must find again (checkpoints, models by reference, a TrainJob's exchange)."""
    return "/".join([base.rstrip("/"), pipeline_run_id or "local", *parts])


def default_cache_dir() -> Path:
    return Path(os.environ.get("INTENTOPS_CACHE", Path.home() / ".cache" / "intentops"))


def ensure_local(uri: str | Path, cache_dir: str | Path | None = None, endpoint: str | None = None) -> Path:
    """A local path for `uri`: local paths come back as they are; S3 objects or prefixes are fetched once.

    The cache entry is keyed by the URI and the ETag(s), so a changed object is fetched again while an
    unchanged one (a base model of many GB, a catalog) is reused across stages and runs.
    """
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise StorageNotFoundError(f"{path}: no such file or folder")
        return path
    text_uri = str(uri)
    client = s3_client(endpoint)
    head = _head(client, text_uri)
    if head is not None:
        version = str(head.get("ETag", "")).strip('"')
    else:
        objects = _list_prefix(client, text_uri)
        if not objects:
            raise StorageNotFoundError(f"{text_uri}: no such object or prefix")
        version = hashlib.sha256(
            "\n".join(f"{obj['Key']}\t{obj.get('ETag', '')}" for obj in objects).encode("utf-8")
        ).hexdigest()
    key = hashlib.sha256(f"{text_uri}\n{version}".encode()).hexdigest()[:24]
    name = split_s3(text_uri)[1].rstrip("/").rsplit("/", 1)[-1] or split_s3(text_uri)[0]
    target = Path(cache_dir or default_cache_dir()) / key / name
    if target.exists():
        log.debug("cache hit for %s at %s", text_uri, target)
        return target
    _fetch(client, text_uri, target)
    return target


def list_folders(uri: str | Path, endpoint: str | None = None) -> list[str]:
    """Names of the folders (S3: sub-prefixes) directly under `uri`, sorted; none when `uri` does not exist."""
    if not is_s3(uri):
        path = Path(uri)
        return sorted(child.name for child in path.iterdir() if child.is_dir()) if path.is_dir() else []
    text_uri = str(uri)
    bucket, key = split_s3(text_uri)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    names: set[str] = set()
    with _s3_errors(text_uri):
        pages = (
            s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        )
        for page in pages:
            names.update(common["Prefix"][len(prefix) :].rstrip("/") for common in page.get("CommonPrefixes", []))
    return sorted(names)


def upload_finished(uri: str | Path, endpoint: str | None = None) -> bool:
    """True when a folder `upload` to `uri` finished: its manifest says complete (a local copy is atomic, so a
    local folder that exists is finished)."""
    if not is_s3(uri):
        return Path(uri).is_dir()
    try:
        manifest = _manifest_document(s3_client(endpoint), str(uri))
    except StorageError:
        return False
    return manifest is not None and manifest.get("complete") is True


def remove_upload(uri: str | Path, endpoint: str | None = None) -> None:
    """Delete a folder this code uploaded: the manifest goes first, so readers never take the rest for finished."""
    if not is_s3(uri):
        shutil.rmtree(Path(uri), ignore_errors=True)
        return
    client = s3_client(endpoint)
    bucket, _ = split_s3(str(uri))
    keys = sorted((obj["Key"] for obj in _list_prefix(client, str(uri))), key=lambda k: not k.endswith(UPLOAD_MANIFEST))
    with _s3_errors(str(uri)):
        for key in keys:
            client.delete_object(Bucket=bucket, Key=key)
