"""Benchmark: iTAG manifest conversion, intentops vs the seed 002 script, on the same generated manifest.

    python bench/convert_itag.py                    # 1,000,000 lines
    python bench/convert_itag.py --lines 100000     # quick run

Generates a manifest shaped like a real iTAG export (reviewed label next to its `-system` pre-label, some
human corrections, abandoned lines, broken lines, empty lines, CRLF), then runs each converter in its own
subprocess and reads that child's peak RSS from `os.wait4` rusage, so the numbers do not mix. intentops also
runs on the first tenth of the file: equal peak memory on both sizes is what "flat memory" means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from intentops.artifacts import CONVERT_REPORT_FILE, RECORDS_FILE

HERE = Path(__file__).resolve().parent
SEED_SCRIPT = HERE / "seed002_convert.py"
LABEL_ID = "1947839552568066048"

# (intent, argument pool, zh templates, en templates); {} is filled with an argument.
INTENTS = [
    ("play_music", [""], ["我想聽音樂", "放首歌吧", "來點音樂"], ["play some music", "I want to hear a song"]),
    ("volume_down", [""], ["太吵了,把聲音開小一點", "音量調低"], ["turn the volume down", "too loud, lower it"]),
    ("music_exit", [""], ["我不想聽了,把歌關了吧", "關掉音樂"], ["stop the music", "turn the song off"]),
    (
        "weather_search",
        ["杭州", "北京", "上海", "London", "Paris", "深圳"],
        ["我想去{}玩,幫我查下天氣預報", "{}明天天氣怎麼樣"],
        ["what's the weather in {}", "will it rain in {} tomorrow"],
    ),
    (
        "music_query_player",
        ["十年", "晴天", "稻香", "Yesterday", "Hello"],
        ["{}是誰唱的", "這首{}的歌手是誰"],
        ["who sings {}", "who is the singer of {}"],
    ),
    (
        "set_alarm",
        ["7:00", "6:30", "8:15", "明天早上七點"],
        ["幫我定一個{}的鬧鐘", "{}叫我起床"],
        ["set an alarm for {}", "wake me up at {}"],
    ),
]
WRONG_PRELABEL = {
    "play_music": "music_exit()",
    "volume_down": "volume_up()",
    "music_exit": "play_music()",
    "weather_search": "weather_search(杭州)",
    "music_query_player": "play_music()",
    "set_alarm": "set_timer(7:00)",
}


def _mark_result(output: str) -> str:
    return msgspec.json.encode(
        {
            "tabId": "CommonExtensions",
            "annotations": [{"id": None, "labels": {"output": output}, "exif": None}],
            "type": "CommonExtensions",
            "version": "v2",
        }
    ).decode()


def _result(output: str, index: int, user_mark: bool) -> dict:
    return {
        "MarkResultId": str(1947839554911772672 + index),
        "MarkTitle": "基礎模版",
        "MarkResult": _mark_result(output),
        "QuestionId": "CommonExtensions",
        "ResultType": "OPEN_GROUP",
        "Progress": None,
        "Version": str(1753236185165 + index),
        "MarkTime": "Wed Jul 23 10:03:05 CST 2025",
        "UserMarkResultId": str(1947839763671740416 + index) if user_mark else None,
        "IsNeedVoteJudge": False,
    }


def generate(path: Path, lines: int, seed: int = 7, unique_texts: bool = False) -> dict[str, int]:
    """Write a manifest of `lines` lines; returns what a correct converter must find in it.

    Utterances come from a few templates, so they repeat; `unique_texts` appends the line index to each one,
    as in a real export where nearly every utterance differs (nothing can then be cached per utterance).
    """
    rng = random.Random(seed)
    truth = {"converted": 0, "abandoned": 0, "rejected": 0, "empty": 0, "human_overrides": 0}
    with open(path, "wb", buffering=1 << 20) as handle:
        for index in range(lines):
            roll = rng.random()
            end = b"\r\n" if index % 50 == 0 else b"\n"
            if roll < 0.003:
                handle.write(end)
                truth["empty"] += 1
                continue
            if roll < 0.006:
                handle.write(b'{"data": {"instruction": "truncated export' + end)
                truth["rejected"] += 1
                continue
            intent, pool, zh, en = INTENTS[index % len(INTENTS)]
            arg = rng.choice(pool)
            text = rng.choice(zh if rng.random() < 0.6 else en).format(arg)
            if unique_texts:
                text += f" #{index}"
            output = f"{intent}({arg})"
            if rng.random() < 0.05 and intent == "play_music":
                output = "play_music();volume_down()"
                text += ",再小聲一點"
            system_output = WRONG_PRELABEL[intent] if rng.random() < 0.05 else output
            line = {
                "data": {"instruction": text, "_itag_index": ""},
                f"label-{LABEL_ID}-system": {
                    "fixedFlag": 0,
                    "results": [_result(system_output, index, False)],
                    "abandonFlag": 0,
                },
                f"label-{LABEL_ID}": {"results": [_result(output, index, True)]},
                "abandonFlag": 0,
                "abandonRemark": None,
            }
            if roll < 0.016:
                line["abandonFlag"] = 1
                line["abandonRemark"] = "不是有效的指令"
                truth["abandoned"] += 1
            elif roll < 0.020:
                del line["data"]["instruction"]
                truth["rejected"] += 1
            elif roll < 0.024:
                line[f"label-{LABEL_ID}"]["results"] = [_result(f"{intent}({arg}", index, True)]
                truth["rejected"] += 1
            else:
                truth["converted"] += 1
                truth["human_overrides"] += system_output != output
            handle.write(msgspec.json.encode(line) + end)
    return truth


def _run(label: str, command: list[str], lines: int, size: int) -> dict[str, object]:
    """Run one converter in a child process and measure it from outside.

    Wall time runs from spawn to exit. CPU time is the child's rusage from wait4 (user + system, including the
    worker processes it reaped). Peak memory is the largest sum of RSS over the child and all its descendants,
    sampled every 20 ms, so worker processes count too.
    """
    import psutil

    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    tree = psutil.Process(child.pid)
    peak = 0
    processes = 1
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        try:
            members = [tree, *tree.children(recursive=True)]
            peak = max(peak, sum(member.memory_info().rss for member in members))
            processes = max(processes, len(members))
        except psutil.Error:
            pass  # a worker exited between listing and reading it
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{label} failed with exit status {child.returncode}: {' '.join(command)}")
    return {
        "approach": label,
        "processes": processes,
        "lines": lines,
        "seconds": seconds,
        "lines_per_s": lines / seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mib": max(peak, usage.ru_maxrss * 1024) / 2**20,  # ru_maxrss is KiB on Linux
        "mb": size / 1e6,
    }


def _intentops_command(manifest: Path, out: Path, workers: int | None) -> list[str]:
    code = (
        "import sys; from intentops.data.itag import convert_manifest; "
        "w = None if sys.argv[3] == 'auto' else int(sys.argv[3]); "
        "r = convert_manifest(sys.argv[1], sys.argv[2], max_reject_rate=1.0, workers=w); "
        "sys.exit(0 if r.converted else 1)"
    )
    return [sys.executable, "-c", code, str(manifest), str(out), "auto" if workers is None else str(workers)]


def _table(rows: list[dict[str, object]]) -> str:
    header = "| approach | processes | lines | wall s | lines/s | MB/s | CPU s | peak RSS MiB (all processes) |"
    out = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        out.append(
            f"| {row['approach']} | {row['processes']} | {row['lines']:,} | {row['seconds']:.1f} | "
            f"{row['lines_per_s']:,.0f} | {row['mb'] / row['seconds']:,.0f} | {row['cpu_s']:.1f} | "
            f"{row['peak_mib']:.0f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="Manifest lines to generate.")
    parser.add_argument("--workdir", help="Keep the manifest and outputs here (default: a temporary folder).")
    parser.add_argument(
        "--workers", type=int, default=2, help="Worker processes of the multi-process run (0: the default)."
    )
    parser.add_argument(
        "--unique-texts", action="store_true", help="Make every utterance distinct (append the line index)."
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-itag-") as scratch:
        work = Path(args.workdir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        manifest = work / "manifest.jsonl"
        started = time.perf_counter()
        truth = generate(manifest, args.lines, unique_texts=args.unique_texts)
        size = manifest.stat().st_size
        print(f"generated {args.lines:,} lines ({size / 1e6:,.0f} MB) in {time.perf_counter() - started:.1f}s")
        tenth = work / "manifest-tenth.jsonl"
        with open(manifest, "rb") as source, open(tenth, "wb") as head:
            for number, line in enumerate(source):
                if number >= args.lines // 10:
                    break
                head.write(line)
        small = tenth.stat().st_size

        rows = [
            _run(
                "intentops, 1 process (first tenth of the file)",
                _intentops_command(tenth, work / "out-tenth", 1),
                args.lines // 10,
                small,
            ),
            _run("intentops, 1 process", _intentops_command(manifest, work / "out-1", 1), args.lines, size),
            _run(
                f"intentops, {args.workers} workers" if args.workers else "intentops, default workers",
                _intentops_command(manifest, work / "out", args.workers or None),
                args.lines,
                size,
            ),
            _run(
                "seed 002 script (load, loop, json.dump)",
                [sys.executable, str(SEED_SCRIPT), str(manifest), str(work / "seed-train.json")],
                args.lines,
                size,
            ),
        ]
        report = json.loads((work / "out" / CONVERT_REPORT_FILE).read_text(encoding="utf-8"))
        identical = (work / "out" / RECORDS_FILE).read_bytes() == (work / "out-1" / RECORDS_FILE).read_bytes()
        with open(work / "seed-train.json", encoding="utf-8") as handle:
            seed_pairs = sum(1 for line in handle if '"instruction"' in line)

    seed = rows[-1]
    print()
    print(_table(rows))
    print()
    for row in rows[1:3]:
        print(
            f"{row['approach']}: {row['lines_per_s'] / seed['lines_per_s']:.1f}x the seed's lines/s, "
            f"{seed['cpu_s'] / row['cpu_s']:.1f}x less CPU time, {row['mb'] / row['seconds']:,.0f} MB/s of manifest"
        )
    print(f"workers used: {report['workers']}; output identical to the 1-process run: {identical}")
    print(
        f"intentops accounted for every line: converted {report['converted']:,}, abandoned {report['abandoned']:,}, "
        f"rejected {report['rejected_total']:,} {report['rejected']}, empty {report['empty_lines']:,}, "
        f"human overrides {report['human_overrides']:,}"
    )
    print(f"generator truth: {truth}")
    print(
        f"seed script wrote {seed_pairs:,} pairs: abandoned lines and broken outputs kept, pre-labels taken "
        f"for the {truth['human_overrides']:,} lines a reviewer corrected"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}")
    unique = " --unique-texts" if args.unique_texts else ""
    print(f"reproduce: python bench/convert_itag.py --lines {args.lines} --workers {args.workers}{unique}")
    mismatch = {
        key: (report[name], truth[key])
        for key, name in (
            ("converted", "converted"),
            ("abandoned", "abandoned"),
            ("rejected", "rejected_total"),
            ("empty", "empty_lines"),
            ("human_overrides", "human_overrides"),
        )
        if report[name] != truth[key]
    }
    if mismatch or not identical:
        print(f"MISMATCH: report vs generator truth {mismatch}, identical outputs {identical}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
