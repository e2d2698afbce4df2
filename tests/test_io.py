import pytest

from intentops.artifacts import RECORDS_FILE
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


def test_replace_output_refuses_inputs_and_foreign_folders(tmp_path):
    """Issue 11.2: --out may replace only what the command wrote itself, never an input."""
    from intentops.io import OUTPUT_MARKER, UnsafeOutputError, replace_output

    data = tmp_path / "data"
    data.mkdir()
    (data / RECORDS_FILE).write_text("{}\n", encoding="utf-8")
    records = data / RECORDS_FILE
    for out, source in ((data, records), (tmp_path, records), (records, records), (data / "sub", data)):
        with pytest.raises(UnsafeOutputError, match="input"), replace_output(out, inputs=[source]):
            pass
    assert (data / RECORDS_FILE).exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work", encoding="utf-8")
    with pytest.raises(UnsafeOutputError, match="--force"), replace_output(foreign):
        pass
    assert (foreign / "thesis.tex").read_text(encoding="utf-8") == "years of work"

    out = tmp_path / "out"
    for version in ("v1", "v2"):
        with replace_output(out, inputs=[data]) as staging:
            staging.mkdir()
            (staging / "result.txt").write_text(version, encoding="utf-8")
    assert (out / "result.txt").read_text(encoding="utf-8") == "v2" and (out / OUTPUT_MARKER).is_file()

    with replace_output(foreign, force=True) as staging:
        staging.mkdir()
    assert not (foreign / "thesis.tex").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "foreign", "out"]


def test_failed_block_leaves_the_previous_output(tmp_path):
    from intentops.io import replace_output

    out = tmp_path / "out"
    with replace_output(out) as staging:
        staging.mkdir()
        (staging / "a").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), replace_output(out) as staging:
        staging.mkdir()
        raise RuntimeError("crash")
    assert (out / "a").read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_readers_never_see_a_missing_or_half_filled_output(tmp_path):
    """Issue 11.11: a poller during repeated replacements sees the old or the new folder, complete."""
    import threading

    from intentops.io import replace_output

    out = tmp_path / "out"
    names = [f"part-{i}.txt" for i in range(20)]

    def write(version: int) -> None:
        with replace_output(out) as staging:
            staging.mkdir()
            for name in names:
                (staging / name).write_text(str(version), encoding="utf-8")

    write(0)
    seen = {"missing": 0, "partial": 0, "looks": 0}
    stop = threading.Event()

    def poll() -> None:  # reads by path, as a reader of the output does (a listing of the old folder empties)
        while not stop.is_set():
            seen["looks"] += 1
            if not out.is_dir():
                seen["missing"] += 1
            elif not all((out / name).is_file() for name in names):
                seen["partial"] += 1

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for version in range(1, 40):
            write(version)
    finally:
        stop.set()
        poller.join()
    assert seen["looks"] > 0 and seen["missing"] == 0 and seen["partial"] == 0


def test_read_json_names_the_file_for_bad_bytes(tmp_path):
    """Issue 11.12: non-UTF-8 or broken JSON in a state file (serve state, gate.json) crashed with a traceback."""
    from intentops.io import read_json

    state = tmp_path / "local-server.json"
    state.write_bytes(b'{"pid": 1, "model": "\xff"}')
    with pytest.raises(ValueError, match=r"local-server\.json: not UTF-8"):
        read_json(state)
    state.write_text('{"pid": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"local-server\.json: not valid JSON"):
        read_json(state)
