import pytest

from intentops.io import atomic_path, read_jsonl, write_json, write_jsonl


def test_atomic_file_is_not_left_behind_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_previous(tmp_path):
    target = tmp_path / "model"
    for content in ("v1", "v2"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(content, encoding="utf-8")
    assert (target / "weights").read_text(encoding="utf-8") == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_jsonl_round_trip_and_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, [{"text": "杭州"}, {"text": "b"}]) == 2
    assert [r["text"] for r in read_jsonl(path)] == ["杭州", "b"]
    path.write_text('{"a": 1}\n\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl:3"):
        list(read_jsonl(path))
    write_json(tmp_path / "x.json", {"a": "杭州"})
    assert "杭州" in (tmp_path / "x.json").read_text(encoding="utf-8")
