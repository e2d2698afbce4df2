"""convert_manifest: every line of an iTAG export accounted for, with the reviewed label winning."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest

from intentops.artifacts import CONVERT_REPORT_FILE, QUICKSTART_FILE, RECORDS_FILE, REJECTS_FILE
from intentops.data import itag, itag_chunk, itag_rules
from intentops.data.itag import RejectRateError, convert_manifest, detect_lang, join_turns
from intentops.io import content_id

LABEL_ID = "1947839552568066048"


def _mark(output: Any) -> str:
    return json.dumps(
        {
            "tabId": "CommonExtensions",
            "annotations": [{"id": None, "labels": {"output": output}, "exif": None}],
            "type": "CommonExtensions",
            "version": "v2",
        },
        ensure_ascii=False,
    )


def _label(output: Any, **extra: Any) -> dict[str, Any]:
    return {"results": [{"MarkResultId": "1", "MarkTitle": "基础模版", "MarkResult": _mark(output)}], **extra}


def itag_line(
    text: Any = "我想聽音樂",
    output: Any = "play_music()",
    system_output: Any = "same",
    *,
    reviewed: bool = True,
    abandon: int = 0,
    **data_extra: Any,
) -> dict[str, Any]:
    """One manifest line shaped like the seed 002 export: pre-label, reviewed label, abandon flags."""
    line: dict[str, Any] = {"data": {"instruction": text, "_itag_index": "", **data_extra}}
    if text is None:
        del line["data"]["instruction"]
    if system_output is not None:
        line[f"label-{LABEL_ID}-system"] = _label(output if system_output == "same" else system_output, abandonFlag=0)
    if reviewed:
        line[f"label-{LABEL_ID}"] = _label(output)
    line["abandonFlag"] = abandon
    line["abandonRemark"] = None
    return line


def write_manifest(path: Path, lines: list[Any], newline: bytes = b"\n", bom: bool = False) -> Path:
    """Write dicts as JSON lines; bytes and str are written as they are (for broken lines)."""
    payload = b"\xef\xbb\xbf" if bom else b""
    for line in lines:
        raw = line if isinstance(line, bytes) else line.encode() if isinstance(line, str) else msgspec.json.encode(line)
        payload += raw + newline
    path.write_bytes(payload)
    return path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


SEED_PAIRS = [
    ("我想聽音樂", "play_music()"),
    ("太吵了,把聲音開小一點", "volume_down()"),
    ("我不想聽了,把歌關了吧", "music_exit()"),
    ("我想去杭州玩,幫我查下天氣預報", "weather_search(杭州)"),
]


def test_seed_example_converts_to_records_and_quickstart_format(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [itag_line(t, o) for t, o in SEED_PAIRS])
    report = convert_manifest(manifest, tmp_path / "out")

    out = tmp_path / "out"
    assert report.passed and report.converted == 4 and report.total_lines == 4
    records = _jsonl(out / RECORDS_FILE)
    assert [(r["text"], r["output"]) for r in records] == SEED_PAIRS
    weather = records[3]
    assert weather["intent"] == "weather_search" and weather["params"] == ["杭州"]
    assert weather["calls"] == [{"name": "weather_search", "args": ["杭州"]}]
    assert weather["lang"] == "zh" and weather["source_line"] == 4 and weather["id"].startswith("r-")
    assert json.loads((out / QUICKSTART_FILE).read_text(encoding="utf-8")) == [
        {"instruction": t, "output": o} for t, o in SEED_PAIRS
    ]
    saved = json.loads((out / CONVERT_REPORT_FILE).read_text(encoding="utf-8"))
    assert saved["total_lines"] == 4 and saved["converted"] == 4 and saved["rejected"] == {}
    assert saved["manifest"]["sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert (out / REJECTS_FILE).read_text() == ""


def test_reviewed_label_wins_and_differences_count_as_human_overrides(tmp_path: Path) -> None:
    lines = [
        itag_line("放首歌", "play_music()", system_output="music_exit()"),  # reviewer corrected the pre-label
        itag_line("杭州天气", "weather_search(杭州)", system_output="weather_search（杭州）"),  # same call, other form
        itag_line("关掉音乐", "music_exit()"),  # reviewer confirmed the pre-label
        itag_line("小声点", "volume_down()", reviewed=False),  # only the pre-label exists
    ]
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", lines), tmp_path / "out")

    records = _jsonl(tmp_path / "out" / RECORDS_FILE)
    assert [r["output"] for r in records] == ["play_music()", "weather_search(杭州)", "music_exit()", "volume_down()"]
    assert [r["reviewed"] for r in records] == [True, True, True, False]
    assert report.human_overrides == 1
    assert report.reviewed == 3 and report.system_only == 1


def test_system_label_listed_first_still_loses_to_the_reviewed_one(tmp_path: Path) -> None:
    line = itag_line("放首歌", "play_music()", system_output="music_exit()")
    assert list(line)[1].endswith("-system")  # the order iTAG exports, which fools the seed script
    convert_manifest(write_manifest(tmp_path / "m.jsonl", [line]), tmp_path / "out")
    assert _jsonl(tmp_path / "out" / RECORDS_FILE)[0]["output"] == "play_music()"


def test_abandoned_lines_are_excluded_and_counted(tmp_path: Path) -> None:
    reviewed_abandon = itag_line("随便说说")
    reviewed_abandon[f"label-{LABEL_ID}"]["abandonFlag"] = 1
    prelabel_abandon_overruled = itag_line("放首歌")
    prelabel_abandon_overruled[f"label-{LABEL_ID}-system"]["abandonFlag"] = 1
    lines = [
        itag_line("不知道", abandon=1),
        itag_line(None, abandon=1),  # abandoned lines are not also rejected for what they lack
        reviewed_abandon,
        prelabel_abandon_overruled,
    ]
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", lines), tmp_path / "out")
    assert report.abandoned == 3 and report.converted == 1 and report.rejected == {}
    assert _jsonl(tmp_path / "out" / RECORDS_FILE)[0]["text"] == "放首歌"


def test_every_reject_reason_is_written_with_line_and_raw(tmp_path: Path) -> None:
    no_label = itag_line("你好")
    del no_label[f"label-{LABEL_ID}"], no_label[f"label-{LABEL_ID}-system"]
    broken_mark = itag_line("你好")
    broken_mark[f"label-{LABEL_ID}"]["results"][0]["MarkResult"] = "{not json"
    long_line = itag_line("长" * 800, "play_music(")
    lines: list[Any] = [
        itag_line(),  # 1 fine
        '{"data": {"instruction": "truncated',  # 2 not_json
        b'{"data": {"instruction": "\xff\xfe"}}',  # 3 not_utf8
        "[1, 2, 3]",  # 4 not_object
        itag_line(None),  # 5 missing_instruction: no data.instruction
        itag_line("   "),  # 6 missing_instruction: blank
        no_label,  # 7 missing_output: no label-* key
        itag_line("你好", "", system_output=None),  # 8 missing_output: empty output
        broken_mark,  # 9 missing_output: MarkResult not JSON
        itag_line("你好", ["play_music()"]),  # 10 missing_output: output is a list
        itag_line("你好", "play_music(周杰伦"),  # 11 unparseable_output
        long_line,  # 12 unparseable_output, raw cut
    ]
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", lines), tmp_path / "out", max_reject_rate=1.0)

    rejects = _jsonl(tmp_path / "out" / REJECTS_FILE)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "not_json"),
        (3, "not_utf8"),
        (4, "not_object"),
        (5, "missing_instruction"),
        (6, "missing_instruction"),
        (7, "missing_output"),
        (8, "missing_output"),
        (9, "missing_output"),
        (10, "missing_output"),
        (11, "unparseable_output"),
        (12, "unparseable_output"),
    ]
    assert report.rejected == {
        "missing_instruction": 2,
        "missing_output": 4,
        "not_json": 1,
        "not_object": 1,
        "not_utf8": 1,
        "unparseable_output": 2,
    }
    assert report.converted == 1 and report.total_lines == 12
    assert rejects[0]["raw"] == '{"data": {"instruction": "truncated'
    assert "MarkResult is not valid JSON" in rejects[7]["detail"]
    assert "list" in rejects[8]["detail"]
    assert "missing ')'" in rejects[9]["detail"]
    assert len(rejects[10]["raw"]) == itag.RAW_CHARS and rejects[10]["raw_chars"] > itag.RAW_CHARS


def test_bom_crlf_and_empty_lines(tmp_path: Path) -> None:
    lines = [itag_line("第一行"), "", "   ", itag_line("play some music", "play_music()"), ""]
    manifest = write_manifest(tmp_path / "m.jsonl", lines, newline=b"\r\n", bom=True)
    report = convert_manifest(manifest, tmp_path / "out")

    records = _jsonl(tmp_path / "out" / RECORDS_FILE)
    assert [(r["text"], r["source_line"], r["lang"]) for r in records] == [
        ("第一行", 1, "zh"),
        ("play some music", 4, "en"),
    ]
    assert report.empty_lines == 3 and report.total_lines == 5 and report.rejected == {}
    assert report.reject_rate == 0.0


def test_last_line_without_newline_and_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(itag, "_CHUNK", 64)  # the unterminated last line spans several reads
    body = msgspec.json.encode(itag_line("第一")) + b"\n\n" + msgspec.json.encode(itag_line("第三"))
    (tmp_path / "m.jsonl").write_bytes(body)
    report = convert_manifest(tmp_path / "m.jsonl", tmp_path / "out")
    assert (report.total_lines, report.empty_lines, report.converted) == (3, 1, 2)
    assert [r["source_line"] for r in _jsonl(tmp_path / "out" / RECORDS_FILE)] == [1, 3]

    (tmp_path / "empty.jsonl").write_bytes(b"")
    report = convert_manifest(tmp_path / "empty.jsonl", tmp_path / "empty")
    assert report.total_lines == 0 and not report.passed and report.manifest_bytes == 0


def test_a_manifest_of_only_a_byte_order_mark_is_one_empty_line(tmp_path: Path) -> None:
    for workers in (1, 2):
        (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf")
        report = convert_manifest(tmp_path / "bom.jsonl", tmp_path / f"out{workers}", workers=workers)
        assert (report.total_lines, report.empty_lines, report.converted) == (1, 1, 0)


def test_multi_turn_instructions_join_user_turns(tmp_path: Path) -> None:
    lines = [
        itag_line(["我想聽音樂。", "給我放個周杰倫的音樂吧。"], "play_music(周杰倫)"),
        itag_line(
            [
                {"role": "user", "content": "I want music"},
                {"role": "assistant", "content": "What kind?"},
                {"role": "user", "content": "play Adele"},
            ],
            "play_music(Adele)",
        ),
        itag_line(None, "volume_down()", turns=[{"role": "user", "content": "太吵了"}, "再小一点"]),
    ]
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", lines), tmp_path / "out")
    records = _jsonl(tmp_path / "out" / RECORDS_FILE)
    assert [(r["text"], r["turns"]) for r in records] == [
        ("我想聽音樂。給我放個周杰倫的音樂吧。", 2),
        ("I want music play Adele", 2),
        ("太吵了再小一点", 2),
    ]
    assert report.multi_turn == 3


def test_multi_intent_output_keeps_every_call(tmp_path: Path) -> None:
    line = itag_line("放周杰伦的歌，声音小一点", "play_music(周杰伦)；volume_down（）")
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", [line]), tmp_path / "out")
    record = _jsonl(tmp_path / "out" / RECORDS_FILE)[0]
    assert record["output"] == "play_music(周杰伦);volume_down()"
    assert record["intent"] == "play_music" and record["params"] == ["周杰伦"]
    assert [c["name"] for c in record["calls"]] == ["play_music", "volume_down"]
    assert report.multi_intent == 1


def test_language_detection_and_turn_joining() -> None:
    assert detect_lang("play 周杰伦") == "zh"
    assert detect_lang("Play Adele, please!") == "en"
    assert join_turns(["hi there", " ", "play jazz"]) == "hi there play jazz"
    assert join_turns(["你好。", "放歌"]) == "你好。放歌"


def test_reject_rate_above_maximum_fails_but_keeps_every_output(tmp_path: Path) -> None:
    lines = [itag_line(), "not json", itag_line("放歌")]
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", lines), tmp_path / "out", max_reject_rate=0.2)
    assert not report.passed
    assert "exceeds the maximum" in report.message and "not_json=1" in report.message
    with pytest.raises(RejectRateError, match=r"reject rate 33\.33%"):
        report.raise_for_status()
    saved = json.loads((tmp_path / "out" / CONVERT_REPORT_FILE).read_text(encoding="utf-8"))
    assert saved["passed"] is False and saved["reject_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert len(_jsonl(tmp_path / "out" / RECORDS_FILE)) == 2
    assert len(_jsonl(tmp_path / "out" / REJECTS_FILE)) == 1


def test_manifest_without_any_usable_record_does_not_pass(tmp_path: Path) -> None:
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", [""]), tmp_path / "out")
    assert not report.passed and "no usable record" in report.message
    assert json.loads((tmp_path / "out" / QUICKSTART_FILE).read_text()) == []


def test_failure_midway_leaves_previous_output_and_no_partial_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [itag_line(f"放第{i}首歌") for i in range(40)])
    out = tmp_path / "out"
    convert_manifest(manifest, out)
    before = (out / RECORDS_FILE).read_bytes()

    real = itag._convert_chunk
    calls = {"n": 0}

    def failing(first_line: int, chunk: bytes) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(first_line, chunk)

    monkeypatch.setattr(itag, "_CHUNK", 1024)  # many chunks, so the failure happens after output was written
    monkeypatch.setattr(itag, "_convert_chunk", failing)
    with pytest.raises(OSError, match="disk full"):
        convert_manifest(manifest, out, workers=1)
    assert (out / RECORDS_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "out"]

    calls["n"] = 0
    with pytest.raises(OSError, match="disk full"):
        convert_manifest(manifest, tmp_path / "fresh", workers=1)
    assert not (tmp_path / "fresh").exists()


def test_small_chunks_and_worker_processes_give_identical_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[Any] = []
    for i in range(300):
        lines.append(
            itag_line(f"放第{i}首歌", f"play_music(歌手{i % 7})", system_output="music_exit()" if i % 9 else "same")
        )
        if i % 50 == 0:
            lines += ["", "broken {"]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    reference = convert_manifest(manifest, tmp_path / "one")

    monkeypatch.setattr(itag, "_CHUNK", 4096)  # lines straddle block boundaries
    parallel = convert_manifest(manifest, tmp_path / "two", workers=2)

    for name in ("records.jsonl", "train.json", "rejects.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert parallel.workers == 2 and reference.workers == 1
    for field in ("total_lines", "converted", "rejected", "empty_lines", "human_overrides", "intents"):
        assert getattr(parallel, field) == getattr(reference, field), field
    assert reference.total_lines == len(lines) and reference.human_overrides == 300 - 34


def _chunk(lines: list[Any]) -> bytes:
    return b"".join((msgspec.json.encode(line) if isinstance(line, dict) else line) + b"\n" for line in lines)


def _same_batch(fast: itag_chunk.Batch, careful: itag_chunk.Batch) -> bool:
    return [(name, value) for name, value in vars(fast).items() if name != "careful"] == [
        (name, value) for name, value in vars(careful).items() if name != "careful"
    ]


def test_fast_path_agrees_with_the_careful_rules() -> None:
    """Every line converts to the same bytes and counts whether it takes the fast path or the careful rules."""
    odd_results = itag_line("放歌")
    odd_results[f"label-{LABEL_ID}"]["results"].insert(0, {"MarkResult": _mark("")})
    dict_mark = itag_line("放歌")
    dict_mark[f"label-{LABEL_ID}"]["results"][0]["MarkResult"] = json.loads(_mark("volume_down()"))
    reviewed_abandon = itag_line("放歌")
    reviewed_abandon[f"label-{LABEL_ID}"]["abandonFlag"] = "1"
    prelabel_abandon = itag_line("放歌")
    prelabel_abandon[f"label-{LABEL_ID}-system"]["abandonFlag"] = 1
    second_task_first = {"data": {"instruction": "放歌"}, "label-42": _label("music_exit()"), **itag_line("放歌")}
    quoted_key_in_text = itag_line('say "label-1" please')
    no_prelabel_output = itag_line("放歌", "play_music()", system_output="")
    empty_prelabel = itag_line("放歌")
    empty_prelabel[f"label-{LABEL_ID}-system"]["results"] = []
    # the pre-label MarkResult decodes to the reviewed one but is written with an escape: other bytes, same label
    escaped_mark = msgspec.json.encode(itag_line("放歌")).replace(b'{\\"tabId', b"{\\u0022tabId", 1)
    assert escaped_mark.count(b"u0022") == 1
    samples: list[Any] = [
        itag_line(),
        itag_line("放歌", "play_music()", system_output="music_exit()"),
        itag_line("放歌", "play_music()", system_output="play_music（）"),
        itag_line("Play some music", "play_music()", system_output="play_music(x"),
        itag_line("  放歌  "),
        itag_line("𠀀 rare ideograph"),
        itag_line("放歌", "play_music(周杰伦);volume_down()"),
        itag_line("放歌", "play_music(", system_output="play_music()"),
        itag_line("放歌", system_output=None),
        itag_line("放歌", reviewed=False),
        itag_line(["a", "b"]),
        itag_line(None),
        itag_line("   "),
        itag_line("放歌", abandon=1),
        itag_line("放歌", ""),
        itag_line("放歌", 3),
        odd_results,
        dict_mark,
        reviewed_abandon,
        prelabel_abandon,
        second_task_first,
        quoted_key_in_text,
        no_prelabel_output,
        empty_prelabel,
        escaped_mark,
        {"data": "not an object", f"label-{LABEL_ID}": _label("play_music()")},
        {**itag_line("放歌"), "newKey": 1},
        b"",
        b"[1]",
        b'{"data": {"instruction": "truncated',
    ]
    fast_lines = []
    for index, sample in enumerate(samples):
        chunk = _chunk([itag_line("第一行"), sample])  # the first line teaches the chunk its fast decoder
        fast, careful = itag_chunk.convert_chunk(1, chunk), itag_chunk.convert_chunk(1, chunk, fast=False)
        assert _same_batch(fast, careful), sample
        assert fast.careful >= 1 and careful.careful == 2 - careful.empty
        if fast.careful == 1 and not fast.empty:
            fast_lines.append(index)
    # the usual shapes take the fast path: corrected, abandoned and pre-label-less lines and dict MarkResults too
    assert fast_lines == [0, 1, 2, 3, 4, 5, 6, 8, 13, 17, 18, 19, 21, 22, 23, 24]
    assert itag_rules.careful(second_task_first).output == "music_exit()"  # the first reviewed key wins
    assert itag_rules.careful(quoted_key_in_text).text == 'say "label-1" please'


def test_fast_path_records_carry_the_content_id() -> None:
    lines = [itag_line("第一行"), itag_line("我想去杭州玩", "weather_search（杭州）"), itag_line("play jazz")]
    batch = itag_chunk.convert_chunk(1, _chunk(lines))
    assert batch.careful == 1
    records = [json.loads(line) for line in batch.records.splitlines()]
    assert [record["id"] for record in records] == [content_id(r["text"], r["output"]) for r in records]
    assert [record["lang"] for record in records] == ["zh", "zh", "en"]


def test_s3_manifest_is_streamed(tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [itag_line(t, o) for t, o in SEED_PAIRS] * 20 + ["oops"])
    boto3.client("s3").upload_file(str(manifest), s3_bucket, "exports/m.manifest")
    uri = f"s3://{s3_bucket}/exports/m.manifest"

    monkeypatch.setattr(itag, "_CHUNK", 2048)  # several blocks, sent to the worker processes
    report = convert_manifest(uri, tmp_path / "out", max_reject_rate=0.5, workers=2)
    local = convert_manifest(manifest, tmp_path / "local", max_reject_rate=0.5)
    assert report.converted == 80 and report.rejected == {"not_json": 1} and report.workers == 2
    assert report.manifest_uri == uri and report.manifest_sha256 == local.manifest_sha256
    assert (tmp_path / "out" / RECORDS_FILE).read_bytes() == (tmp_path / "local" / RECORDS_FILE).read_bytes()


def test_a_rejected_line_is_not_counted_as_a_human_override(tmp_path: Path) -> None:
    """A reviewer's label that does not parse rejects the line; it must not also count as an override (the
    benchmark's generator truth caught the double count: 5,120 overrides reported for 4,731 real ones)."""
    lines = [
        itag_line("我想去杭州玩", "weather_search(杭州", system_output="weather_search(杭州)"),  # broken: rejected
        itag_line("太吵了", "volume_down()", system_output="volume_up()"),  # a real override
        itag_line("我想聽音樂", "play_music()"),
    ]
    report = convert_manifest(write_manifest(tmp_path / "m.jsonl", lines), tmp_path / "out", workers=1)
    assert report.rejected == {"unparseable_output": 1}
    assert report.converted == 2 and report.human_overrides == 1


def test_a_mixed_block_converts_the_same_on_both_paths() -> None:
    """BOM, CRLF, empty and broken lines, keys learnt midway, corrections and repeats: one block, both paths."""
    lines: list[Any] = []
    for i in range(60):
        line = itag_line(
            f"放第{i % 7}首歌", f"play_music(歌手{i % 5})", system_output="music_exit()" if i % 4 else "same"
        )
        if i % 11 == 0:
            line["abandonRemark"] = "remark"
        if i % 13 == 0:
            line["extraKey"] = {"nested": [1, 2]}
        lines += [line, b"", b"  ", b"{broken"] if i % 17 == 0 else [line]
    payload = b"\xef\xbb\xbf" + b"\r\n".join(
        msgspec.json.encode(line) if isinstance(line, dict) else line for line in lines
    )
    fast, careful = itag_chunk.convert_chunk(1, payload), itag_chunk.convert_chunk(1, payload, fast=False)
    assert _same_batch(fast, careful)
    assert fast.converted == 60 and fast.empty == 8 and fast.rejected == {"not_json": 4}
    assert fast.careful < 15 and careful.careful == len(lines) - 8
