"""`intentops convert itag`, `intentops validate`, `intentops split` and `intentops prepare`: the data stages.

Exit status: 0 on success; 1 when the data itself is not good enough (reject rate above the maximum, a
validation check at error severity); 2 on a usage or input error (as every intentops command), including an
--out that holds an input or a non-empty folder intentops did not write (see intentops.io.replace_output).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from intentops.cli import add_config_argument, config_from_args
from intentops.io import replace_output

DATA_FAILED_EXIT = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="Convert labelled data exports into IntentOps records.",
        description="Convert labelled data exports into IntentOps records (records.jsonl + PAI train.json).",
    )
    formats = convert.add_subparsers(dest="format", metavar="FORMAT", required=True)
    itag = formats.add_parser(
        "itag",
        help="Convert a PAI iTAG export manifest (local path or s3:// URI).",
        description=(
            "Stream a PAI iTAG export manifest into DIR/records.jsonl, DIR/train.json (PAI QuickStart "
            "[{instruction, output}]), DIR/rejects.jsonl (line, reason, raw line) and DIR/report.json. The "
            "reviewed label wins over the -system pre-label (counted as human_overrides when they differ); "
            "abandoned lines are excluded and counted; lines that are not JSON, lack data.instruction or an "
            "output, or whose output does not parse are rejected with a reason. Exit status 1 when the reject "
            "rate exceeds --max-reject-rate (all outputs are still written)."
        ),
    )
    itag.add_argument("manifest", metavar="MANIFEST", help="iTAG manifest: local path or s3://bucket/key.")
    _out_argument(itag)
    itag.add_argument(
        "--max-reject-rate",
        type=_share,
        default=0.05,
        help="Fail (exit 1) when more than this share of non-empty lines is rejected (default 0.05).",
    )
    itag.add_argument(
        "--workers",
        type=_positive_int,
        help="Converter processes (default: 1 for manifests under 64 MiB, else up to 4).",
    )
    itag.set_defaults(handler=_convert_itag)

    validate = subparsers.add_parser(
        "validate",
        help="Check records or a dataset against the catalog (exit 1 on any error).",
        description=(
            "Run the dataset checks (unknown intents and parameters, empty or too long text, duplicates, "
            "conflicting labels, examples per intent, imbalance, train/test leakage, multi-intent rules of seed "
            "002) on records.jsonl, a PAI train.json or a dataset folder. Writes DIR/report.json, DIR/report.md "
            "and DIR/flagged.jsonl. Severities come from data.severities (--set 'data__severities={imbalance: "
            "error}'). Exit status 1 when any check at error severity fails."
        ),
    )
    validate.add_argument("data", metavar="DATA", help="records.jsonl, train.json or a dataset folder (or s3://).")
    _catalog_and_out(validate)
    validate.set_defaults(handler=_validate)

    split = subparsers.add_parser(
        "split",
        help="Split records into train/val/test with an unseen-intent holdout.",
        description=(
            "Deterministic stratified split per intent (data.seed, data.val_fraction, data.test_fraction); "
            "intents in data.unseen_intents and every intent of data.unseen_domain go entirely to test with "
            "seen=false. Writes train/val/test.jsonl, catalog.yaml and manifest.json (with dataset_hash)."
        ),
    )
    split.add_argument("records", metavar="RECORDS", help="records.jsonl or PAI train.json (or s3://).")
    _catalog_and_out(split)
    split.set_defaults(handler=_split)

    prepare = subparsers.add_parser(
        "prepare",
        help="Validate then split: the validate-dataset stage (exit 1 when validation fails).",
        description=(
            "Validate RECORDS (report in DIR/validation/) and, when no check at error severity fails, split them "
            "into the dataset layout in DIR. On failure DIR holds only the validation report and the exit "
            "status is 1."
        ),
    )
    prepare.add_argument("records", metavar="RECORDS", help="records.jsonl or PAI train.json (or s3://).")
    _catalog_and_out(prepare)
    prepare.set_defaults(handler=_prepare)


def _catalog_and_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", help="Intent catalog YAML, local or s3:// (default: data.catalog).")
    _out_argument(parser)
    add_config_argument(parser)


def _share(text: str) -> float:
    """A share between 0 and 1 (argparse names the option when this raises)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _out_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        help="Output folder or s3:// prefix, replaced in one step when complete. It must not hold an input; an "
        "existing non-empty folder is replaced only if intentops wrote it.",
    )
    parser.add_argument(
        "--force", action="store_true", help="Replace --out even if it is a non-empty folder intentops did not write."
    )


def _inputs(args: argparse.Namespace, source: str) -> tuple[Any, Any, Path, list[str]]:
    """(config, catalog, local source path, the input locations --out must not touch)."""
    from intentops.catalog import load_catalog
    from intentops.storage import ensure_local

    cfg = config_from_args(args)
    cache = cfg.model.cache_dir or None
    catalog_uri = args.catalog or cfg.data.catalog
    catalog = load_catalog(ensure_local(catalog_uri, cache))
    return cfg, catalog, ensure_local(source, cache), [source, catalog_uri]


def _print(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, ensure_ascii=False))


def _convert_itag(args: argparse.Namespace) -> int:
    from intentops.data.itag import convert_manifest

    with replace_output(args.out, [args.manifest], args.force, "convert itag") as out:
        report = convert_manifest(args.manifest, out, args.max_reject_rate, workers=args.workers)
    report.out_dir = args.out
    _print(
        {
            "out": args.out,
            "passed": report.passed,
            "total_lines": report.total_lines,
            "converted": report.converted,
            "abandoned": report.abandoned,
            "rejected": report.rejected,
            "empty_lines": report.empty_lines,
            "human_overrides": report.human_overrides,
            "reject_rate": round(report.reject_rate, 6),
        }
    )
    if not report.passed:
        print(f"intentops convert itag: {report.message}", file=sys.stderr)
        return DATA_FAILED_EXIT
    return 0


def _validate(args: argparse.Namespace) -> int:
    from intentops.data.validate import validate_records

    cfg, catalog, data, inputs = _inputs(args, args.data)
    with replace_output(args.out, inputs, args.force, "validate") as out:
        report = validate_records(
            data,
            catalog,
            cfg.data,
            out,
            uncertain_label=cfg.prompt.uncertain_label,
            copied_arguments=cfg.evaluation.constrained and cfg.evaluation.copy_arguments,
        )
    _print(
        {
            "out": args.out,
            "passed": report.passed,
            "errors": {f.check: f.count for f in report.errors},
            "warnings": {f.check: f.count for f in report.warnings},
        }
    )
    if not report.passed:
        failed = "; ".join(f"{f.check} ({f.count}): {f.message}" for f in report.errors)
        print(f"intentops validate: failed: {failed} (see {Path(args.out) / 'report.md'})", file=sys.stderr)
        return DATA_FAILED_EXIT
    return 0


def _split(args: argparse.Namespace) -> int:
    from intentops.data.split import split_dataset

    cfg, catalog, records, inputs = _inputs(args, args.records)
    with replace_output(args.out, inputs, args.force, "split") as out:
        manifest = split_dataset(records, catalog, cfg.data, out)
    _print(_manifest_summary(args.out, manifest))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from intentops.data.split import prepare_dataset
    from intentops.data.validate import DataValidationError

    cfg, catalog, records, inputs = _inputs(args, args.records)
    failed: DataValidationError | None = None
    with replace_output(args.out, inputs, args.force, "prepare") as out:
        try:
            manifest = prepare_dataset(records, catalog, cfg.data, out)
        except DataValidationError as exc:
            failed = exc  # the validation report is still published, on its own
    if failed is not None:
        failed.report.out_dir = str(Path(args.out) / "validation")
        print(f"intentops prepare: {DataValidationError(failed.report)}", file=sys.stderr)
        return DATA_FAILED_EXIT
    _print(_manifest_summary(args.out, manifest))
    return 0


def _manifest_summary(out: str, manifest: Any) -> dict[str, Any]:
    return {
        "out": out,
        "dataset_hash": manifest.dataset_hash,
        "catalog_hash": manifest.catalog_hash,
        "unseen_intents": manifest.unseen_intents,
        **{split: counts["total"] for split, counts in manifest.counts.items()},
    }
