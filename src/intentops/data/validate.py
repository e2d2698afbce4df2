"""Dataset checks that stop bad labels before they cost GPU hours.

Each check has a stable id, a default severity and a configurable one (`data.severities`, where `off`
disables a check). Errors fail the stage; warnings are reported. Thresholds follow the data guidance of the team's method notes:
50-100 single-intent examples per intent, balanced intents, multi-intent / multi-turn data at >= 20% of the
single-intent amount and only with intents that also have single-intent data.

Outputs in `out_dir`: report.json (`passed, errors, warnings, checks, counts`), report.md for people, and
flagged.jsonl with every record a check flagged (check, severity, id, text, output, detail).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from intentops.artifacts import FLAGGED_FILE, VALIDATION_JSON, VALIDATION_MD
from intentops.catalog import UNCERTAIN_INTENT, Catalog
from intentops.config import DataConfig
from intentops.data.records import annotate, load_records, unseen_intents
from intentops.grammar import parse_calls
from intentops.io import atomic_path, write_json

log = logging.getLogger(__name__)

# check id -> (default severity, what it guards against)
CHECKS: dict[str, tuple[str, str]] = {
    "unparseable_output": ("error", "the output is not a valid call string"),
    "unknown_intent": ("error", "a call names an intent that is not in the catalog"),
    "unknown_parameter": ("error", "a call passes more arguments than the intent has, or misses required ones"),
    "empty_text": ("error", "the utterance is empty"),
    "too_long": ("warning", "the utterance is longer than data.max_text_chars"),
    "duplicate_text": ("warning", "the same normalised utterance with the same output appears more than once"),
    "conflicting_labels": ("error", "the same normalised utterance is labelled with different outputs"),
    "min_examples_per_intent": ("error", "an intent has fewer single-intent training examples than required"),
    "imbalance": ("warning", "the largest intent outnumbers the smallest by more than data.max_imbalance_ratio"),
    "train_test_leakage": ("error", "the same normalised utterance appears in more than one split"),
    "multi_intent_unseen_part": (
        "error",
        "a multi-intent or multi-turn record uses an intent that has no single-intent data",
    ),
    "multi_share": ("warning", "multi-intent/multi-turn data is outside the configured share of single-intent data"),
    "argument_not_in_text": (
        "warning",
        "an argument is not a span of its utterance (an error when evaluation.copy_arguments is on: decoding that "
        "copies could never write it)",
    ),
}
MAX_EXAMPLES = 10
SEED_MULTI_SHARE = 0.2


class DataValidationError(ValueError):
    """Validation found errors; the message lists the failed checks and where the report is."""

    def __init__(self, report: ValidationReport) -> None:
        failed = "; ".join(f"{f.check} ({f.count}): {f.message}" for f in report.errors)
        super().__init__(f"dataset validation failed: {failed} (see {Path(report.out_dir) / VALIDATION_MD})")
        self.report = report


@dataclass
class Finding:
    check: str
    severity: str
    count: int
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "count": self.count, "message": self.message, "examples": self.examples}


@dataclass
class ValidationReport:
    passed: bool
    errors: list[Finding]
    warnings: list[Finding]
    checks: list[dict[str, Any]]
    counts: dict[str, Any]
    out_dir: str

    @property
    def failed_checks(self) -> list[str]:
        return [finding.check for finding in self.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "errors": [finding.to_dict() for finding in self.errors],
            "warnings": [finding.to_dict() for finding in self.warnings],
            "checks": self.checks,
            "counts": self.counts,
        }


def severities(data_cfg: DataConfig, copied_arguments: bool = False) -> dict[str, str]:
    """Default severities with `data.severities` applied; an unknown check id is an error, not a no-op.
    `copied_arguments` (answers may only copy argument values from the utterance) makes an argument that is not a
    span an error unless `data.severities` says otherwise."""
    unknown = sorted(set(data_cfg.severities) - set(CHECKS))
    if unknown:
        raise ValueError(f"data.severities names unknown checks: {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    defaults = {check: default for check, (default, _) in CHECKS.items()}
    if copied_arguments:
        defaults["argument_not_in_text"] = "error"
    return {check: data_cfg.severities.get(check, default) for check, default in defaults.items()}


def _record_example(row: Any, detail: str = "") -> dict[str, Any]:
    example = {"id": row.id, "text": row.text, "output": row.output if isinstance(row.output, str) else None}
    if row.split:
        example["split"] = row.split
    if detail:
        example["detail"] = detail
    return example


def _per_record(check: str, rows: pd.DataFrame, details: list[str], message: str) -> Finding | None:
    if rows.empty:
        return None
    flagged = [_record_example(row, detail) for row, detail in zip(rows.itertuples(), details, strict=True)]
    return Finding(check, "", len(flagged), message, flagged[:MAX_EXAMPLES], flagged)


def _counts_phrase(values: pd.Series, limit: int = 8) -> str:
    counts = values.value_counts()
    shown = ", ".join(f"{name} ({count})" for name, count in counts.head(limit).items())
    return shown + (f", ... {len(counts) - limit} more" if len(counts) > limit else "")


class _Checks:
    """The checks over one annotated table; each method returns a Finding or None."""

    def __init__(self, frame: pd.DataFrame, catalog: Catalog, data_cfg: DataConfig, uncertain_label: bool) -> None:
        self.frame = frame
        self.catalog = catalog
        self.uncertain_label = uncertain_label  # `uncertain()` is a valid answer when the prompt offers it
        self.cfg = data_cfg
        self.exempt = set(unseen_intents(catalog, data_cfg))
        self.parsed = frame[frame["parse_error"].isna()]
        has_split = frame["split"].notna().any()
        training = self.parsed[self.parsed["split"] == "train"] if has_split else self.parsed
        self.single = training[~training["multi"]]
        self.single_counts = self.single["first_intent"].value_counts()

    def unparseable_output(self) -> Finding | None:
        rows = self.frame[self.frame["parse_error"].notna()]
        return _per_record(
            "unparseable_output",
            rows,
            list(rows["parse_error"]),
            f"{len(rows)} records have an output that is not a call string",
        )

    def unknown_intent(self) -> Finding | None:
        known = set(self.catalog.names) | ({UNCERTAIN_INTENT} if self.uncertain_label else set())
        unknown = [tuple(name for name in intents if name not in known) for intents in self.parsed["intents"]]
        mask = [bool(names) for names in unknown]
        rows = self.parsed[mask]
        names = pd.Series([name for names in unknown for name in names])
        return _per_record(
            "unknown_intent",
            rows,
            [f"not in the catalog: {', '.join(names)}" for names in unknown if names],
            f"{len(rows)} records call intents that are not in the catalog: {_counts_phrase(names)}",
        )

    def unknown_parameter(self) -> Finding | None:
        details: list[str] = []
        mask: list[bool] = []
        for calls in self.parsed["calls_parsed"]:
            problems = []
            for name, arg_count in calls:
                intent = self.catalog.get(name)
                if intent is None:
                    continue
                allowed = len(intent.parameters)
                required = len(intent.required_parameters)
                if arg_count > allowed:
                    problems.append(f"{intent.signature()} takes {allowed} argument(s), got {arg_count}")
                elif arg_count < required:
                    problems.append(f"{intent.signature()} needs {required} argument(s), got {arg_count}")
            mask.append(bool(problems))
            if problems:
                details.append("; ".join(problems))
        rows = self.parsed[mask]
        return _per_record(
            "unknown_parameter",
            rows,
            details,
            f"{len(rows)} records pass arguments their intent does not declare, or miss required ones",
        )

    def argument_not_in_text(self) -> Finding | None:
        details: list[str] = []
        mask: list[bool] = []
        for text, output in zip(self.parsed["text"], self.parsed["canonical"], strict=True):
            missing = [arg for call in parse_calls(output) for arg in call.args if arg not in str(text)]
            mask.append(bool(missing))
            if missing:
                details.append("not in the utterance: " + ", ".join(repr(arg) for arg in missing))
        rows = self.parsed[mask]
        return _per_record(
            "argument_not_in_text",
            rows,
            details,
            f"{len(rows)} records have arguments that are not spans of their utterance",
        )

    def empty_text(self) -> Finding | None:
        rows = self.frame[self.frame["text"].str.strip() == ""]
        return _per_record("empty_text", rows, [""] * len(rows), f"{len(rows)} records have an empty utterance")

    def too_long(self) -> Finding | None:
        lengths = self.frame["text"].str.len()
        rows = self.frame[lengths > self.cfg.max_text_chars]
        return _per_record(
            "too_long",
            rows,
            [f"{n} characters" for n in lengths[rows.index]],
            f"{len(rows)} utterances are longer than data.max_text_chars={self.cfg.max_text_chars}",
        )

    def duplicate_text(self) -> Finding | None:
        usable = self.frame[self.frame["norm"] != ""]
        repeated = usable[usable.duplicated(["norm", "canonical"], keep="first")]
        first_ids = usable.drop_duplicates(["norm", "canonical"]).set_index(["norm", "canonical"])["id"]
        details = [f"same as {first_ids[(row.norm, row.canonical)]}" for row in repeated.itertuples()]
        return _per_record(
            "duplicate_text",
            repeated,
            details,
            f"{len(repeated)} records repeat an earlier utterance with the same output (normalised text)",
        )

    def conflicting_labels(self) -> Finding | None:
        usable = self.parsed[self.parsed["norm"] != ""]
        outputs = usable.groupby("norm")["canonical"].nunique()
        conflicted = set(outputs[outputs > 1].index)
        rows = usable[usable["norm"].isin(conflicted)].sort_values(["norm", "id"], kind="stable")
        by_text = rows.groupby("norm")["canonical"].agg(lambda values: sorted(set(values)))
        details = [f"labelled {' | '.join(by_text[norm])}" for norm in rows["norm"]]
        return _per_record(
            "conflicting_labels",
            rows,
            details,
            f"{len(conflicted)} utterances carry different outputs ({len(rows)} records); fix them in iTAG",
        )

    def min_examples_per_intent(self) -> Finding | None:
        required = self.cfg.min_examples_per_intent
        short = [
            {"intent": name, "examples": int(self.single_counts.get(name, 0)), "required": required}
            for name in self.catalog.names
            if name not in self.exempt and self.single_counts.get(name, 0) < required
        ]
        if not short:
            return None
        listed = ", ".join(f"{item['intent']} ({item['examples']})" for item in short[:MAX_EXAMPLES])
        more = f", ... {len(short) - MAX_EXAMPLES} more" if len(short) > MAX_EXAMPLES else ""
        return Finding(
            "min_examples_per_intent",
            "",
            len(short),
            f"{len(short)} intents have fewer than {required} single-intent training examples: {listed}{more} "
            f"(aim for at least 50-100 per intent)",
            short[:MAX_EXAMPLES],
        )

    def imbalance(self) -> Finding | None:
        eligible = [name for name in self.catalog.names if name not in self.exempt and name in self.single_counts]
        counts = self.single_counts[eligible]
        counts = counts[counts > 0]
        if len(counts) < 2:
            return None
        ratio = counts.max() / counts.min()
        if ratio <= self.cfg.max_imbalance_ratio:
            return None
        floor = counts.max() / self.cfg.max_imbalance_ratio
        small = counts[counts < floor].sort_values()
        examples = [{"intent": str(name), "examples": int(n)} for name, n in small.head(MAX_EXAMPLES).items()]
        return Finding(
            "imbalance",
            "",
            len(small),
            f"largest intent {counts.idxmax()} ({counts.max()}) has {ratio:.1f}x the examples of the smallest "
            f"{counts.idxmin()} ({counts.min()}), above data.max_imbalance_ratio={self.cfg.max_imbalance_ratio}; "
            f"{len(small)} intents have fewer than {floor:.0f}",
            [{"intent": str(counts.idxmax()), "examples": int(counts.max())}, *examples],
        )

    def train_test_leakage(self) -> Finding | None:
        split = self.frame[self.frame["split"].notna() & (self.frame["norm"] != "")]
        if split.empty:
            return None
        spread = split.groupby("norm")["split"].nunique()
        leaked = set(spread[spread > 1].index)
        rows = split[split["norm"].isin(leaked)].sort_values(["norm", "split"], kind="stable")
        splits = rows.groupby("norm")["split"].agg(lambda values: sorted(set(values)))
        return _per_record(
            "train_test_leakage",
            rows,
            [f"in {', '.join(splits[norm])}" for norm in rows["norm"]],
            f"{len(leaked)} utterances appear in more than one split ({len(rows)} records)",
        )

    def multi_intent_unseen_part(self) -> Finding | None:
        covered = set(self.single_counts.index)
        known = set(self.catalog.names)
        multi = self.parsed[self.parsed["multi"]]
        missing = [tuple(n for n in intents if n in known and n not in covered) for intents in multi["intents"]]
        rows = multi[[bool(names) for names in missing]]
        return _per_record(
            "multi_intent_unseen_part",
            rows,
            [f"no single-intent data for {', '.join(names)}" for names in missing if names],
            f"{len(rows)} multi-intent/multi-turn records use intents without single-intent training data "
            f"(every intent in multi-intent data must also appear single-intent)",
        )

    def multi_share(self) -> Finding | None:
        multi = int(self.parsed["multi"].sum())
        single = int((~self.parsed["multi"]).sum())
        if single == 0:
            return None
        share = multi / single
        low, high = self.cfg.multi_share_min, self.cfg.multi_share_max
        if low <= share <= high:
            return None
        return Finding(
            "multi_share",
            "",
            multi,
            f"multi-intent/multi-turn records are {share:.1%} of the single-intent amount ({multi}/{single}), "
            f"outside data.multi_share_min..max = {low:.0%}..{high:.0%}; aim for >= "
            f"{SEED_MULTI_SHARE:.0%} when multi-intent or multi-turn requests matter",
            [{"multi": multi, "single": single, "share": round(share, 4)}],
        )


def _markdown_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown(report: ValidationReport, source: str) -> str:
    status = "PASSED" if report.passed else "FAILED"
    counts = report.counts
    lines = [
        f"# Dataset validation: {status}",
        "",
        f"Source: `{source}` - {counts['records']} records ({counts['single_intent']} single-intent, "
        f"{counts['multi']} multi-intent or multi-turn), {len(report.errors)} errors, "
        f"{len(report.warnings)} warnings.",
        "",
        "| check | severity | result | count | what it guards against |",
        "|---|---|---|---|---|",
    ]
    for row in report.checks:
        lines.append(
            f"| {row['check']} | {row['severity']} | {row['status']} | {row['count']} | "
            f"{_markdown_cell(CHECKS[row['check']][1])} |"
        )
    for title, findings in (("Errors", report.errors), ("Warnings", report.warnings)):
        if not findings:
            continue
        lines += ["", f"## {title}"]
        for finding in findings:
            lines += ["", f"### {finding.check} ({finding.count})", "", _markdown_cell(finding.message)]
            if finding.examples:
                keys = list(dict.fromkeys(key for example in finding.examples for key in example))
                lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                for example in finding.examples:
                    lines.append("| " + " | ".join(_markdown_cell(example.get(key, "")) for key in keys) + " |")
    lines += ["", "## Single-intent training examples per intent", "", "| intent | examples |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in counts["single_intent_per_intent"].items()]
    return "\n".join(lines) + "\n"


def validate_records(
    records: str | Path | pd.DataFrame,
    catalog: Catalog,
    data_cfg: DataConfig,
    out_dir: str | Path,
    uncertain_label: bool = False,
    copied_arguments: bool = False,
) -> ValidationReport:
    """Run every enabled check on records (records.jsonl, a PAI train.json or a dataset folder).

    Writes report.json, report.md and flagged.jsonl to `out_dir` (atomically, as one folder) and returns the
    report; `report.passed` is False when any error-severity check fired. With `uncertain_label` (the config's
    `prompt.uncertain_label`) records answering `uncertain()` are valid; the catalog still rejects an intent of that
    name. `copied_arguments` makes arguments that are not spans of their utterance an error (`severities`).
    """
    levels = severities(data_cfg, copied_arguments)
    frame = annotate(load_records(records))
    checks = _Checks(frame, catalog, data_cfg, uncertain_label)
    errors: list[Finding] = []
    warnings: list[Finding] = []
    summary: list[dict[str, Any]] = []
    for check in CHECKS:
        level = levels[check]
        finding = None if level == "off" else getattr(checks, check)()
        if finding is not None:
            finding.severity = level
            (errors if level == "error" else warnings).append(finding)
        status = "off" if level == "off" else "fail" if finding and level == "error" else "warn" if finding else "pass"
        summary.append({"check": check, "severity": level, "status": status, "count": finding.count if finding else 0})
    single_counts = checks.single_counts
    counts = {
        "records": len(frame),
        "single_intent": int((~frame["multi"]).sum()),
        "multi_intent": int(sum(len(c) > 1 for c in frame["calls_parsed"])),
        "multi_turn": int((frame["turns"] > 1).sum()),
        "multi": int(frame["multi"].sum()),
        "splits": {str(k): int(v) for k, v in frame["split"].value_counts().items()},
        "languages": {str(k): int(v) for k, v in frame["lang"].value_counts().items()} if "lang" in frame else {},
        "intents_in_catalog": len(catalog.names),
        "exempt_intents": sorted(checks.exempt),
        "single_intent_per_intent": {name: int(single_counts.get(name, 0)) for name in catalog.names},
    }
    report = ValidationReport(not errors, errors, warnings, summary, counts, str(out_dir))
    source = "DataFrame" if isinstance(records, pd.DataFrame) else str(records)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_json(tmp / VALIDATION_JSON, {"source": source, **report.to_dict()})
        (tmp / VALIDATION_MD).write_text(_markdown(report, source), encoding="utf-8")
        with open(tmp / FLAGGED_FILE, "wb") as handle:
            for finding in errors + warnings:
                for row in finding.flagged:
                    handle.write(
                        msgspec.json.encode({"check": finding.check, "severity": finding.severity, **row}) + b"\n"
                    )
    outcome = "passed" if report.passed else f"failed: {', '.join(report.failed_checks)}"
    log.info("validation of %s %s (%d warnings)", source, outcome, len(warnings))
    return report
