"""The log of `intentops run`: everything in WORKDIR/run.log, a readable view of it on the console.

kfp.local prints each stage's output in the parent process (stdout), between its own bookkeeping: the executor
input of every task (~180 lines of parameters), the component it loads, the outputs it wrote. `run_log` writes all
of it, unfiltered, to the log file, and shows the console what a person follows a run by: the stage lines, the
stages' own log lines, one progress bar per long stage (its final state), warnings that are not known noise.

Third-party noise is fixed where it starts when that is ours to change (the `cache` argument, the activation
checkpointing name, no pinned memory on CPU, no per-file MLflow or Hugging Face download bars); what remains is
listed in DROPPED_LINES and KNOWN_WARNINGS, each with where it comes from, so a new warning still shows.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

RUN_LOG = "run.log"
PREVIOUS_RUN_LOG = "run.previous.log"

# Lines the console does not show (the log file keeps them).
DROPPED_LINES = tuple(
    re.compile(pattern)
    for pattern in (
        # kfp.local, once per task: which component module it loads and where the executor output went.
        r"Looking for component `",
        r'Loading KFP component "',
        r"Wrote executor output file to ",
        r" - INFO - Streamed logs:\s*$",
        # Hugging Face Trainer's log dicts: the stages log their own step lines ("sft step 50/700: ...").
        r"^\s*\{'[\w/.-]+': ",
        # DeepSpeed's import-time note on a machine without GPUs: nothing to act on in a CPU run.
        r"\[real_accelerator\.py:\d+:get_accelerator\] Setting accelerator to CPU",
        # httpx logs every request of the smoke test at INFO; the smoke test logs its own summary.
        r"HTTP Request: (GET|POST|PUT|DELETE) ",
        # Triton's nanobind bindings at the exit of a task that skipped the shutdown collections
        # (intentops.stages.FAST_EXIT_ENV): what those would have freed is reported as leaked; the process is exiting.
        r"^\s*nanobind: (leaked \d+ (instances|types|functions)!|this is likely caused by a reference counting)",
        r"^\s* - (leaked (instance|type|function) |\.\.\. skipped remainder)",
        r"^\s*See https://nanobind\.readthedocs\.io/en/latest/refleaks\.html",
    )
)
# Deprecation warnings from third-party code the stages cannot change (their own source is fixed where it is ours).
KNOWN_WARNINGS = (
    # TRL (trl/models/utils.py) reads model.is_gradient_checkpointing, which transformers 5 deprecates.
    "`is_gradient_checkpointing` is deprecated",
)
_WARNING = re.compile(r"^\s*\S+:\d+: \w*Warning: ")
_EXECUTOR_INPUT = re.compile(r"Got executor_input:\s*$")
_EXECUTOR_LINE = re.compile(r"^(\s*)\[KFP Executor \d{4}-\d\d-\d\d (\d\d:\d\d:\d\d),\d+ (\w+)\]: ")
_NEW_TASK = re.compile(r" - INFO - Executing task ")
_TASK_OUTPUTS = re.compile(r" - INFO - Task .* outputs:\s*$")
_BAR = re.compile(
    r"^(?P<indent>\s*)(?P<desc>[^|\r]*?)\s*(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[[^\]]*\]"
)
_CURSOR = re.compile(r"\x1b\[\d*[A-K]")


class ConsoleFilter:
    """Turns the raw lines of a local run into the lines the console shows (`feed` one line at a time)."""

    def __init__(self) -> None:
        self._json_indent: str | None = None  # inside the executor input: the indent of its closing brace
        self._json_next = False  # the executor input's opening brace comes next
        self._skip_indented = False
        self._skip_warning_context = False
        self._bars_shown: set[tuple[str, str]] = set()  # complete bars shown in the current task

    def feed(self, line: str) -> list[str]:
        """The console lines for one raw line (without its newline): none, it, or its parts."""
        shown: list[str] = []
        # kfp.local indents a stage's output by 4 spaces; tqdm's redraws (after \r) and its padding do not count.
        indent = " " * min(4, len(line) - len(line.lstrip(" ")))
        segments = [seg for seg in _CURSOR.sub("", line).split("\r") if seg.strip()] or [""]
        for segment in segments:
            shown += self._segment(segment.rstrip(), indent)
        return shown

    def _segment(self, text: str, indent: str) -> list[str]:
        bar = _BAR.match(text)
        if bar:
            rest = text[bar.end() :]
            shown = self._bar(bar, indent)
            return shown + (self._line(indent + rest.lstrip()) if rest.strip() else [])
        return self._line(text)

    def _bar(self, bar: re.Match[str], indent: str) -> list[str]:
        """A progress bar is shown once per task, complete (tqdm draws the last state again when it closes)."""
        if bar.group("n") != bar.group("total"):
            return []
        key = (bar.group("desc").strip(), bar.group("total"))
        if key in self._bars_shown:
            return []
        self._bars_shown.add(key)
        return [indent + bar.group(0).strip()]

    def _line(self, text: str) -> list[str]:
        if self._json_next:
            self._json_next = False
            if text.strip() == "{":
                self._json_indent = text[: len(text) - len(text.lstrip())]
                return []
        if self._json_indent is not None:
            if text == self._json_indent + "}":
                self._json_indent = None
            return []
        if self._skip_indented:
            if text.startswith(" ") or not text.strip():
                return []
            self._skip_indented = False
        if self._skip_warning_context:
            self._skip_warning_context = False
            if text.startswith(" "):
                return []
        if _EXECUTOR_INPUT.search(text):
            self._json_next = True
            return []
        if _TASK_OUTPUTS.search(text):
            self._skip_indented = True
            return []
        if any(known in text for known in KNOWN_WARNINGS):
            self._skip_warning_context = bool(_WARNING.match(text))
            return []
        if any(pattern.search(text) for pattern in DROPPED_LINES):
            return []
        if not text.strip():
            return []  # kfp.local's spacing and the stages' empty lines: the task separators structure the view
        if _NEW_TASK.search(text):
            self._bars_shown.clear()
        return [_EXECUTOR_LINE.sub(_short_prefix, text, count=1)]


def _short_prefix(match: re.Match[str]) -> str:
    indent, clock, level = match.groups()
    return f"{indent}[{clock}] " if level == "INFO" else f"{indent}[{clock} {level}] "


class FilteredTee:
    """A text stream: every write goes to the log file as it is, and, line by line, through the filter to the
    console (unfiltered when `console_filter` is None)."""

    def __init__(self, log_file: TextIO, console: TextIO, console_filter: ConsoleFilter | None) -> None:
        self.log_file, self.console, self.console_filter = log_file, console, console_filter
        self._pending = ""

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log_file.write(text)
        if self.console_filter is None:
            self.console.write(text)
            return len(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            for shown in self.console_filter.feed(line):
                self.console.write(shown + "\n")
        return len(text)

    def flush(self) -> None:
        self.log_file.flush()
        self.console.flush()

    def close_pending(self) -> None:
        """Pass on a last line that never got its newline."""
        if self._pending:
            self.write("\n")


@contextlib.contextmanager
def run_log(workdir: Path, full: bool = False) -> Iterator[Path]:
    """Send this process's stdout and stderr (and its log records) to WORKDIR/run.log, the console seeing the
    filtered view (all of it with `full`). The previous run's log is kept as run.previous.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / RUN_LOG
    if path.exists():
        path.replace(workdir / PREVIOUS_RUN_LOG)
    with open(path, "w", encoding="utf-8") as log_file:
        out = FilteredTee(log_file, sys.stdout, None if full else ConsoleFilter())
        err = FilteredTee(log_file, sys.stderr, None if full else ConsoleFilter())
        # Log records reach the console through the handlers already installed (they hold the real stderr);
        # this one copies them into the file.
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
        try:
            yield path
        finally:
            for stream in (out, err):
                stream.close_pending()
                stream.flush()
            sys.stdout, sys.stderr = saved
            root.removeHandler(handler)
