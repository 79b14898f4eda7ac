"""The run-folder schema: its values, and the evaluator (writer) and `misato compare` (reader) agreeing on it."""
from __future__ import annotations

import csv
import json

import pytest

from evaluate import schema
from evaluate.compare import FORMATS, load_run
from misato.cli import build_parser
from tests.helpers import write_misato_folder, write_predictions


def test_per_image_columns_and_mask_ratio_bins():
    assert schema.PER_IMAGE_COLUMNS == ("name", "psnr", "ssim", "lpips", "grad", "clip", "mask_ratio", "domain")
    assert schema.PER_IMAGE_METRICS == ("psnr", "ssim", "lpips", "grad", "clip")
    assert [schema.mask_ratio_bin(r) for r in (0.0, 0.099, 0.1, 0.55, 0.6, 0.95, 1.0)] == [
        "0-10%", "0-10%", "10-20%", "50-60%", "60%+", "60%+", "60%+"
    ]
    assert schema.MASK_RATIO_LABELS == ("0-10%", "10-20%", "20-30%", "30-40%", "40-50%", "50-60%", "60%+")
    assert schema.BREAKDOWNS == {"domain": "by_domain", "mask_ratio": "by_mask_ratio"}


def _choices(command: str, dest: str) -> tuple[str, ...]:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return tuple(next(a for a in subparsers.choices[command]._actions if a.dest == dest).choices)


def test_cli_choices_spell_the_schema():
    """`misato compare` cannot import `evaluate` to build its parser, so its choices are spelled out: keep equal."""
    assert _choices("compare", "by") == tuple(schema.BREAKDOWNS)
    assert _choices("compare", "fmt") == FORMATS


def test_the_evaluator_writes_what_compare_reads(tmp_path):
    """A real (network-free) evaluation: file names, columns and keys are the schema's, and compare loads it."""
    from evaluate import evaluate_folder, evaluator

    assert evaluator.PER_IMAGE_COLUMNS == schema.PER_IMAGE_COLUMNS
    gt = write_misato_folder(tmp_path / "gt", n=3, size=32)
    pred = write_predictions(gt, tmp_path / "pred")
    out = tmp_path / "run"
    result = evaluate_folder(pred, gt, out, metrics="psnr,ssim,grad", progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(schema.RUN_FILES)

    with open(out / schema.PER_IMAGE_CSV, newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [c for c in schema.PER_IMAGE_COLUMNS if c not in ("lpips", "clip")]
    with open(out / schema.SUMMARY_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0])[:3] == schema.SUMMARY_CSV_COLUMNS
    assert rows[0]["group"] == rows[0]["subset"] == schema.SUMMARY_ALL_GROUP
    assert {r["group"] for r in rows[1:]} == set(schema.BREAKDOWNS)
    ratios = {r["subset"] for r in rows if r["group"] == "mask_ratio"}
    assert ratios and ratios <= set(schema.MASK_RATIO_LABELS)

    summary = json.loads((out / schema.SUMMARY_JSON).read_text())
    for key in (schema.SUMMARY_METRICS, schema.SUMMARY_N, schema.SUMMARY_METHOD, schema.SUMMARY_PROTOCOL,
                schema.SUMMARY_WEIGHTS, schema.SUMMARY_VERSION, *schema.BREAKDOWNS.values()):
        assert key in summary, key
    for entries in (summary[key] for key in schema.BREAKDOWNS.values()):
        assert all(schema.BREAKDOWN_N in entry for entry in entries.values())

    run = load_run(out)
    assert run.n == 3 and list(run.per_image.index) == [row["name"] for row in result.rows]
    assert run.metrics == pytest.approx({m: result.summary["metrics"][m] for m in ("psnr", "ssim", "grad")})
    assert run.image_sizes == ((32, 32),)


def test_cli_choices_are_the_sources_spelled_out():
    """misato/cli_choices.py repeats these so that building the parser imports nothing from evaluate."""
    from evaluate.metric_info import ALL_METRICS
    from evaluate.protocols import PROTOCOLS
    from misato import cli_choices

    assert cli_choices.PROTOCOL_CHOICES == tuple(PROTOCOLS)
    assert cli_choices.METRIC_NAMES == ALL_METRICS
    assert all(f"{name}:" in cli_choices.PROTOCOL_HELP for name in PROTOCOLS)
