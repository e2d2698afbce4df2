"""intentops.storage against a real S3 endpoint (moto server mode on 127.0.0.1) and local paths."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from intentops import storage
from intentops.artifacts import CATALOG_FILE, MODEL_CARD
from intentops.storage import (
    StorageError,
    StorageNotFoundError,
    download,
    endpoint_url,
    ensure_local,
    is_s3,
    open_uri,
    split_s3,
    upload,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_uri_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_s3("s3://bucket/key") and not is_s3("/data/s3://x") and not is_s3(Path("a/b"))
    assert split_s3("s3://bucket/a/b.json") == ("bucket", "a/b.json")
    assert split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(StorageError, match="no bucket"):
        split_s3("s3:///key")
    for name in storage.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert endpoint_url() is None
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")
    assert endpoint_url() == "http://minio:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://other:9000")
    assert endpoint_url() == "http://other:9000"
    assert endpoint_url("http://explicit:1") == "http://explicit:1"


def test_local_paths(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("一\ntwo\n", encoding="utf-8")
    with open_uri(source) as handle:
        assert list(handle) == ["一\n", "two\n"]
    with open_uri(str(source), "rb") as handle:
        assert handle.read() == "一\ntwo\n".encode()
    assert ensure_local(source) == source
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        ensure_local(tmp_path / "missing.txt")
    with pytest.raises(StorageNotFoundError, match=r"missing\.txt"):
        open_uri(tmp_path / "missing.txt").__enter__()
    with pytest.raises(ValueError, match="mode 'w'"):
        open_uri(source, "w").__enter__()
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.bin").write_bytes(b"\x00\x01")
    upload(folder, str(tmp_path / "copy"))
    assert _tree(tmp_path / "copy") == {"sub/x.bin": b"\x00\x01"}


def test_s3_round_trip_file_and_prefix(tmp_path: Path, s3_bucket: str) -> None:
    lines = [f"第{i}行 line {i}\n" for i in range(5000)]
    source = tmp_path / "big.jsonl"
    source.write_text("".join(lines), encoding="utf-8")
    uri = upload(source, f"s3://{s3_bucket}/data/big.jsonl")
    assert uri == f"s3://{s3_bucket}/data/big.jsonl"
    with open_uri(uri) as handle:
        assert next(iter(handle)) == lines[0]
        assert handle.readline() == lines[1]
        assert list(handle) == lines[2:]
    with open_uri(uri, "rb") as handle:
        assert handle.read(7) == lines[0].encode()[:7]
    assert upload(source, f"s3://{s3_bucket}/into/") == f"s3://{s3_bucket}/into/big.jsonl"

    model = tmp_path / "model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    prefix = upload(model, f"s3://{s3_bucket}/models/m1/")
    assert prefix == f"s3://{s3_bucket}/models/m1"
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert "models/m1/tokenizer/vocab.txt" in keys and "models/m1/config.json" in keys

    assert _tree(download(prefix, tmp_path / "fetched")) == _tree(model)
    assert download(uri, tmp_path / "one.jsonl").read_text(encoding="utf-8") == "".join(lines)


def test_ensure_local_caches_by_etag(tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("s3")
    client.put_object(Bucket=s3_bucket, Key="cat/catalog.yaml", Body=b"version: 1\n")
    cache = tmp_path / "cache"
    uri = f"s3://{s3_bucket}/cat/catalog.yaml"
    first = ensure_local(uri, cache)
    assert first.name == CATALOG_FILE and first.read_bytes() == b"version: 1\n"

    fetched: list[str] = []
    real_fetch = storage._fetch
    monkeypatch.setattr(storage, "_fetch", lambda c, u, d: fetched.append(u) or real_fetch(c, u, d))
    assert ensure_local(uri, cache) == first and fetched == []  # unchanged object: served from the cache

    client.put_object(Bucket=s3_bucket, Key="cat/catalog.yaml", Body=b"version: 2\n")
    second = ensure_local(uri, cache)
    assert fetched == [uri] and second != first and second.read_bytes() == b"version: 2\n"

    client.put_object(Bucket=s3_bucket, Key="models/m/config.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key="models/m/weights/a.bin", Body=b"\x01")
    folder = ensure_local(f"s3://{s3_bucket}/models/m", cache)
    assert folder.name == "m" and _tree(folder) == {"config.json": b"{}", "weights/a.bin": b"\x01"}


def test_errors_name_the_uri(tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageNotFoundError, match=rf"s3://{s3_bucket}/nope\.jsonl: no such object"):
        open_uri(f"s3://{s3_bucket}/nope.jsonl").__enter__()
    with pytest.raises(StorageNotFoundError, match="bucket 'no-such-bucket-x' does not exist"):
        open_uri("s3://no-such-bucket-x/a.jsonl").__enter__()
    with pytest.raises(StorageNotFoundError, match="no-such-bucket-x"):
        ensure_local("s3://no-such-bucket-x/a.jsonl", tmp_path)
    with pytest.raises(StorageNotFoundError, match="no such object or prefix"):
        ensure_local(f"s3://{s3_bucket}/absent/", tmp_path)
    with pytest.raises(StorageError, match="names a prefix"):
        open_uri(f"s3://{s3_bucket}/folder/").__enter__()
    with pytest.raises(StorageNotFoundError, match="nothing-here"):
        upload(tmp_path / "nothing-here", f"s3://{s3_bucket}/x")

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # the default session caches resolved credentials
    with pytest.raises(StorageError, match=rf"s3://{s3_bucket}/a\.jsonl: no S3 credentials"):
        open_uri(f"s3://{s3_bucket}/a.jsonl").__enter__()


def test_prefix_download_rejects_keys_escaping_the_folder(tmp_path: Path, s3_bucket: str) -> None:
    """Issue 11.1: an object keyed `prefix/../../x` must not be written outside the destination."""
    client = boto3.client("s3")
    client.put_object(Bucket=s3_bucket, Key="data/records.jsonl", Body=b"{}\n")
    client.put_object(Bucket=s3_bucket, Key="data/sub/../../../../escaped.txt", Body=b"owned")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="data/")["Contents"]]
    assert "data/sub/../../../../escaped.txt" in keys  # the server kept the key as written
    dest = tmp_path / "deep" / "er" / "cache" / "data"
    with pytest.raises(StorageError, match=r"escaped\.txt.*outside"):
        download(f"s3://{s3_bucket}/data", dest)
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
    assert not dest.exists()


class _Interrupted(RuntimeError):
    pass


def _failing_client(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """S3 clients whose upload_file dies after `after` files, as a killed pod would."""
    real = storage.s3_client

    def client(endpoint: str | None = None):
        instance = real(endpoint)
        original = instance.upload_file
        count = {"n": 0}

        def upload_file(*args, **kwargs):
            if count["n"] >= after:
                raise _Interrupted("killed")
            count["n"] += 1
            return original(*args, **kwargs)

        instance.upload_file = upload_file
        return instance

    monkeypatch.setattr(storage, "s3_client", client)


def test_interrupted_upload_never_looks_complete(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11.4: the card must not land before the weights, and old objects must not pass for the new output."""
    prefix = f"s3://{s3_bucket}/models/m"
    old = tmp_path / "old"
    old.mkdir()
    (old / MODEL_CARD).write_text('{"v": 1}')
    (old / "weights.bin").write_bytes(b"old")
    (old / "stale.bin").write_bytes(b"only in v1")
    upload(old, prefix)

    new = tmp_path / "new"
    new.mkdir()
    (new / MODEL_CARD).write_text('{"v": 2}')
    (new / "weights.bin").write_bytes(b"new weights")
    (new / "zz.bin").write_bytes(b"x")
    with monkeypatch.context() as patch:
        _failing_client(patch, after=1)
        with pytest.raises(_Interrupted):
            upload(new, prefix)
    with pytest.raises(StorageError, match="incomplete"):
        download(prefix, tmp_path / "read1")
    with pytest.raises(StorageError, match="incomplete"):
        ensure_local(prefix, tmp_path / "cache")

    upload(new, prefix)
    assert _tree(download(prefix, tmp_path / "read2")) == _tree(new)
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="models/m/")["Contents"]}
    assert "models/m/stale.bin" not in keys  # the previous output's own file is gone, not passed off as new


def test_download_checks_the_manifest_hashes(tmp_path: Path, s3_bucket: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"good")
    prefix = upload(folder, f"s3://{s3_bucket}/m")
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="m/weights.bin", Body=b"tampered")
    with pytest.raises(StorageError, match=r"weights\.bin.*sha256"):
        download(prefix, tmp_path / "read")
