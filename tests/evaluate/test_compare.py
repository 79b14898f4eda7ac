"""`misato compare`: tables across tiny fake run folders, checked against scipy and hand computations."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from evaluate.compare import (
    build_breakdown,
    build_comparison,
    compare,
    format_for,
    load_run,
    load_runs,
    render,
)
from evaluate.stats import bootstrap_mean_ci
from misato.cli import main
from misato.errors import MisatoError

NAMES = [f"{i:04d}" for i in (0, 3, 501, 502, 1001, 1002, 1500, 1999, 7, 8, 9, 10)]


def write_run(
    root: Path,
    folder: str,
    per_image: dict[str, np.ndarray],
    set_metrics: dict[str, float] | None = None,
    names: list[str] | None = None,
    **summary_fields,
) -> Path:
    """A run folder as `misato evaluate --out` writes it; summary means are the per-image means."""
    names = NAMES if names is None else names
    run = root / folder
    run.mkdir(parents=True)
    with open(run / "per_image.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *per_image, "mask_ratio", "domain"])
        for i, name in enumerate(names):
            writer.writerow([name, *(repr(float(v[i])) for v in per_image.values()), 0.25, "landscape"])
    summary = {
        "metrics": {**{m: float(np.mean(v)) for m, v in per_image.items()}, **(set_metrics or {})},
        "n": len(names),
        "protocol": "asuka",
        "weights": {"lpips-alex": "a" * 64, "inception-v3": "b" * 64},
        "version": "0.1.0",
        "method": None,
    }
    summary.update(summary_fields)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    psnr = rng.normal(22, 2, len(NAMES))
    lpips = rng.uniform(0.1, 0.2, len(NAMES))
    # Tie-free differences keep scipy's Wilcoxon on its exact path (ties at n <= 50 make it run a permutation test).
    jitter = rng.normal(0, 0.01, len(NAMES))
    jitter -= jitter.mean()
    return [
        write_run(tmp_path, "lama", {"psnr": psnr, "lpips": lpips}, {"fid": 15.0}),
        write_run(
            tmp_path, "asuka", {"psnr": psnr + rng.normal(0.5, 0.3, 12), "lpips": lpips - 0.01 + jitter}, {"fid": 11.5}
        ),
        write_run(tmp_path, "sd", {"psnr": psnr - 0.2 + jitter, "lpips": lpips + 0.02 + jitter / 10}, {"fid": 12.0}),
    ]


def _per_image(run: Path, metric: str) -> np.ndarray:
    with open(run / "per_image.csv") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["name"])
    return np.array([float(r[metric]) for r in rows])


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(l for l in text.splitlines(True) if not l.startswith("#")))))


def _md_table(text: str, title: str) -> list[list[str]]:
    """Cells of the markdown table under ``### title`` (header first, the alignment row dropped)."""
    lines = text.split(f"### {title}", 1)[1].strip().splitlines()
    table = [l for l in lines[: next(i for i, l in enumerate(lines + [""]) if not l.startswith("|"))]]
    return [[c.strip() for c in l.strip("|").split("|")] for i, l in enumerate(table) if i != 1]


# ---------------------------------------------------------------------------------------------------------------
# Values, intervals, best marking


def test_values_come_from_summary_and_intervals_from_per_image(three_runs):
    runs = load_runs(three_runs)
    table = build_comparison(runs, n_boot=500, seed=4)
    assert table.metrics == ("psnr", "lpips", "fid")  # paper order, not file order
    assert [r.label for r in table.rows] == ["lama", "asuka", "sd"]
    for row, run in zip(table.rows, three_runs):
        summary = json.loads((run / "summary.json").read_text())["metrics"]
        assert {m: c.value for m, c in row.cells.items()} == summary
        for metric in ("psnr", "lpips"):
            assert row.cells[metric].interval == bootstrap_mean_ci(_per_image(run, metric), 500, seed=4)
        assert row.cells["fid"].interval is None  # image-set metric: no per-image values


def test_best_marking_respects_direction_and_ties(tmp_path):
    psnr = np.full(12, 20.0)
    runs = load_runs(
        [
            write_run(tmp_path, "a", {"psnr": psnr, "lpips": np.full(12, 0.20)}, {"fid": 10.0, "uids": 0.30}),
            write_run(tmp_path, "b", {"psnr": psnr + 1, "lpips": np.full(12, 0.10)}, {"fid": 12.0, "uids": 0.3004}),
            write_run(tmp_path, "c", {"psnr": psnr + 1, "lpips": np.full(12, 0.30)}, {"fid": 11.0, "uids": 0.10}),
        ]
    )
    table = build_comparison(runs, n_boot=0, paired=False)
    best = {m: {r.label for r in table.rows if r.cells[m].best} for m in table.metrics}
    assert best == {"psnr": {"b", "c"}, "lpips": {"b"}, "fid": {"a"}, "uids": {"a", "b"}}  # 0.300 ties 0.3004


def test_single_run_marks_nothing_best(three_runs):
    table = build_comparison(load_runs(three_runs[:1]), n_boot=10)
    assert not any(c.best for c in table.rows[0].cells.values())
    assert table.paired == {} and table.baseline is None


def test_same_seed_same_text_other_seed_other_text(three_runs):
    runs = load_runs(three_runs)
    first = render(build_comparison(runs, n_boot=200, seed=1), "csv")
    assert first == render(build_comparison(load_runs(three_runs), n_boot=200, seed=1), "csv")
    assert first != render(build_comparison(runs, n_boot=200, seed=2), "csv")


# ---------------------------------------------------------------------------------------------------------------
# Paired tests


def test_paired_tests_align_by_name_and_match_scipy(three_runs):
    # Shuffle one file's rows: pairing must go by image name, not row order.
    lines = (three_runs[1] / "per_image.csv").read_text().splitlines()
    (three_runs[1] / "per_image.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    table = build_comparison(load_runs(three_runs), n_boot=300, seed=0)
    assert table.baseline == "lama" and set(table.paired) == {"asuka", "sd"}
    for label, run in (("asuka", three_runs[1]), ("sd", three_runs[2])):
        for metric in ("psnr", "lpips"):
            base, cand = _per_image(three_runs[0], metric), _per_image(run, metric)
            test = table.paired[label][metric]
            assert test.p_wilcoxon == scipy.stats.wilcoxon(cand, base).pvalue
            assert test.mean_difference == pytest.approx(np.mean(cand - base), abs=1e-12)
            assert test.lo <= test.mean_difference <= test.hi
    assert "fid" not in table.paired["asuka"]


def test_baseline_by_label_case_insensitive(three_runs):
    table = build_comparison(load_runs(three_runs), n_boot=0, baseline="ASUKA")
    assert table.baseline == "asuka" and set(table.paired) == {"lama", "sd"}
    assert table.paired["lama"]["psnr"].p_bootstrap is None
    with pytest.raises(MisatoError, match="--baseline 'flux' is not one of the run labels: lama, asuka, sd"):
        build_comparison(load_runs(three_runs), n_boot=0, baseline="flux")


def test_different_images_are_refused_with_the_names(tmp_path):
    values = {"psnr": np.arange(12.0)}
    names = NAMES[:-1] + ["9999"]
    runs = load_runs([write_run(tmp_path, "a", values), write_run(tmp_path, "b", values, names=names)])
    with pytest.raises(MisatoError, match=r"same images.*0010.*9999.*--no-paired"):
        build_comparison(runs, n_boot=10)
    table = build_comparison(runs, n_boot=10, paired=False)
    assert table.paired == {}


# ---------------------------------------------------------------------------------------------------------------
# Formats


def test_markdown_renders_arrows_bold_intervals_and_paired_table(three_runs):
    table = build_comparison(load_runs(three_runs), n_boot=200, seed=0)
    text = render(table, "md")
    cells = _md_table(text, "Comparison")
    assert cells[0] == ["Method", "N", "PSNR↑", "LPIPS↓", "FID↓"]
    asuka = dict(zip(cells[0], cells[2]))
    row = table.rows[1]
    assert asuka["PSNR↑"] == f"**{row.cells['psnr'].value:.3f}** ± {row.cells['psnr'].interval.half_width:.3f}"
    assert asuka["FID↓"] == "**11.500**"
    assert dict(zip(cells[0], cells[1]))["FID↓"] == "15.000"
    paired = _md_table(text, "Paired differences vs lama (method minus baseline on the same images)")
    assert paired[0] == ["Method", "Metric", "Δ mean", "95% CI", "p (Wilcoxon)", "p (bootstrap)"]
    expected_rows = [["asuka", "PSNR↑"], ["asuka", "LPIPS↓"], ["sd", "PSNR↑"], ["sd", "LPIPS↓"]]
    assert [r[:2] for r in paired[1:]] == expected_rows
    assert paired[3][2] == f"{table.paired['sd']['psnr'].mean_difference:+.4f}" == "-0.2000"
    assert "image-set metrics without per-image values" in text


def test_csv_parses_back_to_the_table(three_runs):
    table = build_comparison(load_runs(three_runs), n_boot=200, seed=0)
    rows = _csv_rows(render(table, "csv"))
    assert [r["method"] for r in rows] == ["lama", "asuka", "sd"]
    for parsed, row in zip(rows, table.rows):
        assert float(parsed["psnr"]) == row.cells["psnr"].value
        assert float(parsed["psnr_lo"]) == row.cells["psnr"].interval.lo
        assert float(parsed["lpips_hi"]) == row.cells["lpips"].interval.hi
        assert float(parsed["fid"]) == row.cells["fid"].value and "fid_lo" not in parsed
        assert parsed["best"].split(";") == [m for m in table.metrics if row.cells[m].best] or parsed["best"] == ""
        assert int(parsed["n"]) == 12 and parsed["protocol"] == "asuka"
    assert rows[0]["psnr_p_wilcoxon"] == ""  # the baseline row
    assert float(rows[2]["psnr_p_wilcoxon"]) == table.paired["sd"]["psnr"].p_wilcoxon
    assert float(rows[2]["lpips_diff"]) == table.paired["sd"]["lpips"].mean_difference
    assert rows[1]["best"] == "psnr;lpips;fid"


def test_tex_renders_booktabs_with_bold_best_and_escaped_labels(three_runs):
    runs = load_runs(three_runs, labels=["La_Ma", "AS&KA", "SD 50%"])
    text = render(build_comparison(runs, n_boot=50, seed=0), "tex")
    assert "\\toprule" in text and "\\bottomrule" in text
    body = text.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0].strip().splitlines()
    assert [line.split(" & ")[0] for line in body] == [r"La\_Ma", r"AS\&KA", r"SD 50\%"]
    assert r"\textbf{11.500}" in body[1] and r" $\pm$ " in body[1]
    header = text.split("\\toprule", 1)[1].split("\\midrule", 1)[0]
    assert r"PSNR$\uparrow$" in header and r"LPIPS$\downarrow$" in header
    assert r"95\% CI" in text and "–" not in text  # only ASCII dashes in LaTeX


def test_format_from_suffix_and_errors(tmp_path):
    assert format_for(tmp_path / "t.CSV", None) == "csv"
    assert format_for(tmp_path / "t.markdown", None) == "md"
    assert format_for(tmp_path / "t.txt", "tex") == "tex"
    assert format_for("-", None) == "md"
    with pytest.raises(MisatoError, match="cannot tell the format.*--format"):
        format_for(tmp_path / "t.txt", None)


# ---------------------------------------------------------------------------------------------------------------
# Reported numbers


def test_reported_numbers_beside_matching_labels(three_runs):
    runs = load_runs(three_runs, labels=["LaMa", "asuka", "mine"])
    table = build_comparison(runs, n_boot=0, reported="table1_misato512")
    assert table.rows[0].reported == {"psnr": 23.677, "lpips": 0.155, "fid": 15.436}
    assert table.rows[1].reported == {"psnr": 22.495, "lpips": 0.150, "fid": 11.460}
    assert table.rows[2].reported is None
    rows = _csv_rows(render(table, "csv"))
    assert float(rows[1]["fid_reported"]) == 11.46
    assert float(rows[1]["fid_delta"]) == pytest.approx(11.5 - 11.46)
    assert rows[2]["psnr_reported"] == "" and rows[2]["psnr_delta"] == ""
    cells = _md_table(render(table, "md"), "Measured vs reported (table1_misato512: Table 1: MISATO@512, 2,000 images)")
    assert cells[0] == ["Method", "Source", "PSNR↑", "LPIPS↓", "FID↓"]
    psnr, lpips = table.rows[1].cells["psnr"].value, table.rows[1].cells["lpips"].value
    assert cells[4:7] == [
        ["asuka", "measured", f"{psnr:.3f}", f"{lpips:.3f}", "11.500"],
        ["", "paper", "22.495", "0.150", "11.460"],
        ["", "Δ", f"{psnr - 22.495:+.3f}", f"{lpips - 0.15:+.3f}", "+0.040"],
    ]


def test_reported_without_matches_or_common_metrics(three_runs):
    table = build_comparison(load_runs(three_runs, labels=["x", "y", "z"]), n_boot=0, reported="places2")
    assert any("no run label matches a method of 'places2'" in n for n in table.notes)
    with pytest.raises(MisatoError, match="no metric in common.*consistency, quality"):
        build_comparison(load_runs(three_runs), n_boot=0, reported="user_study")
    with pytest.raises(MisatoError, match="unknown reported table"):
        build_comparison(load_runs(three_runs), n_boot=0, reported="table7")


# ---------------------------------------------------------------------------------------------------------------
# Breakdowns


def test_breakdown_by_domain_orders_groups_and_marks_best_per_group(tmp_path):
    ones = {"psnr": np.ones(12)}
    first = write_run(
        tmp_path, "a", ones,
        by_domain={"indoor": {"n": 2, "psnr": 21.0}, "landscape": {"n": 2, "psnr": 20.0}, "zzz": {"n": 1, "psnr": 5.0}},
    )
    second = write_run(
        tmp_path, "b", ones, by_domain={"landscape": {"n": 2, "psnr": 19.0}, "indoor": {"n": 2, "psnr": 22.0}}
    )
    table = build_breakdown(load_runs([first, second]), "domain")
    assert [(r.group, r.label, r.n, r.values.get("psnr")) for r in table.rows] == [
        ("landscape", "a", 2, 20.0), ("landscape", "b", 2, 19.0),
        ("indoor", "a", 2, 21.0), ("indoor", "b", 2, 22.0),
        ("zzz", "a", 1, 5.0), ("zzz", "b", None, None),
    ]
    assert [r.best for r in table.rows[:4]] == [{"psnr"}, set(), set(), {"psnr"}]
    rows = _csv_rows(render(table, "csv"))
    assert rows[3] == {"domain": "indoor", "method": "b", "n": "2", "psnr": "22.0", "best": "psnr"}
    assert "| zzz | a | 1 | 5.000 |" in render(table, "md")


def test_breakdown_by_mask_ratio_sorts_numerically(tmp_path):
    bins = {"10-20%": {"n": 3, "psnr": 1.0}, "0-10%": {"n": 3, "psnr": 2.0}, "50-60%": {"n": 3, "psnr": 3.0}}
    run = write_run(tmp_path, "a", {"psnr": np.ones(12)}, by_mask_ratio=bins)
    table = build_breakdown(load_runs([run]), "mask_ratio")
    assert [r.group for r in table.rows] == ["0-10%", "10-20%", "50-60%"]


def test_breakdown_missing_and_combined_with_reported(three_runs, tmp_path):
    with pytest.raises(MisatoError, match="summary.json has no 'by_domain' breakdown"):
        build_breakdown(load_runs(three_runs), "domain")
    with pytest.raises(MisatoError, match="--reported cannot be combined with --by"):
        compare(three_runs, tmp_path / "t.md", by="domain", reported="table1_misato512")


# ---------------------------------------------------------------------------------------------------------------
# Comparability


def test_different_protocols_or_weights_warn_and_strict_refuses(tmp_path):
    values = {"psnr": np.arange(12.0)}
    runs = load_runs(
        [
            write_run(tmp_path, "a", values),
            write_run(tmp_path, "b", values, protocol="comod"),
            write_run(tmp_path, "c", values, weights={"lpips-alex": "c" * 64}),
        ]
    )
    table = build_comparison(runs, n_boot=0)
    assert table.warnings == (
        "runs use different protocols (a: asuka, b: comod, c: asuka); their numbers are not comparable",
        f"weight file 'lpips-alex' differs between runs (a: {'a' * 12}, b: {'a' * 12}, c: {'c' * 12}); "
        "their numbers are not comparable",
    )
    assert "> **Warning:** runs use different protocols" in render(table, "md")
    assert "% WARNING: runs use different protocols" in render(table, "tex")
    assert "# warning: runs use different protocols" in render(table, "csv")
    with pytest.raises(MisatoError, match=r"refusing to compare \(--strict\)"):
        build_comparison(runs, n_boot=0, strict=True)


def test_notes_for_partial_metrics_summary_mismatch_and_small_ids(tmp_path):
    a = write_run(tmp_path, "a", {"psnr": np.arange(12.0), "ssim": np.full(12, 0.5)}, {"uids": 0.3})
    b = write_run(tmp_path, "b", {"psnr": np.arange(12.0)}, {"uids": 0.2, "psnr": 99.0})
    table = build_comparison(load_runs([a, b]), n_boot=0)
    assert table.metrics == ("psnr", "uids")
    text = " | ".join(table.notes)
    assert "left out metric(s) not computed for every run: ssim" in text
    assert "b: summary psnr = 99 but the mean of per_image.csv is 5.5" in text
    assert "fewer than 10240 samples (2 × N images; N here: a: 12, b: 12)" in text


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_missing_and_malformed_run_folders(tmp_path, three_runs):
    with pytest.raises(MisatoError, match="run folder .*nope does not exist"):
        load_run(tmp_path / "nope")
    (three_runs[0] / "summary.json").write_text("{not json")
    with pytest.raises(MisatoError, match="summary.json is not valid JSON"):
        load_run(three_runs[0])
    (three_runs[0] / "summary.json").write_text('{"n": 3}')
    with pytest.raises(MisatoError, match='has no "metrics" object'):
        load_run(three_runs[0])
    (three_runs[0] / "summary.json").write_text('{"metrics": {"psnr": "high"}}')
    with pytest.raises(MisatoError, match="metric 'psnr' is 'high', not a finite number"):
        load_run(three_runs[0])
    (three_runs[1] / "summary.json").unlink()
    with pytest.raises(MisatoError, match="summary.json is missing"):
        load_run(three_runs[1])
    (three_runs[2] / "per_image.csv").unlink()
    with pytest.raises(MisatoError, match="per_image.csv is missing"):
        load_run(three_runs[2])


def test_bad_per_image_rows(tmp_path):
    run = write_run(tmp_path, "a", {"psnr": np.arange(12.0)})
    text = (run / "per_image.csv").read_text()
    (run / "per_image.csv").write_text(text.replace("\n0003,1.0,", "\n0003,,"))
    with pytest.raises(MisatoError, match="column 'psnr' is empty or not a finite number for 0003"):
        load_run(run)
    (run / "per_image.csv").write_text(text + "0000,1.0,0.2,landscape\n")
    with pytest.raises(MisatoError, match="lists some images twice: 0000"):
        load_run(run)


def test_a_per_image_csv_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a BOM, which would otherwise hide the 'name' column."""
    run = write_run(tmp_path, "a", {"psnr": np.arange(12.0)})
    plain = load_run(run)
    (run / "per_image.csv").write_bytes(b"\xef\xbb\xbf" + (run / "per_image.csv").read_bytes())
    again = load_run(run)
    assert again.per_image.equals(plain.per_image)


def test_labels_no_common_metrics_and_bad_bootstrap(three_runs, tmp_path):
    assert load_run(three_runs[0]).label == "lama"
    named = write_run(tmp_path, "folder", {"psnr": np.ones(12)}, method="My Method")
    assert load_run(named).label == "My Method"
    with pytest.raises(MisatoError, match="--labels has 2 label"):
        load_runs(three_runs, labels=["a", "b"])
    with pytest.raises(MisatoError, match="empty label"):
        load_runs(three_runs, labels=["a", "", "b"])
    with pytest.raises(MisatoError, match="share the label 'x'.*--labels"):
        load_runs(three_runs, labels=["x", "x", "y"])
    other = write_run(tmp_path, "ssim_only", {"ssim": np.ones(12)})
    with pytest.raises(MisatoError, match="no metric in common"):
        build_comparison(load_runs([three_runs[0], other]))
    with pytest.raises(MisatoError, match="--bootstrap must be >= 0"):
        build_comparison(load_runs(three_runs), n_boot=-1)


# ---------------------------------------------------------------------------------------------------------------
# The command line


def test_cli_writes_the_file_and_leaves_inputs_alone(three_runs, tmp_path, capsys):
    before = {p: p.read_bytes() for run in three_runs for p in run.iterdir()}
    out = tmp_path / "table.csv"
    code = main(["compare", *map(str, three_runs), "--out", str(out), "--labels", "LaMa,ASUKA,SD",
                 "--reported", "table1_misato512", "--bootstrap", "100", "--baseline", "SD"])
    assert code == 0
    rows = _csv_rows(out.read_text())
    assert [r["method"] for r in rows] == ["LaMa", "ASUKA", "SD"] and rows[2]["psnr_diff"] == ""
    assert {p: p.read_bytes() for run in three_runs for p in run.iterdir()} == before
    assert "wrote" in capsys.readouterr().err


def test_cli_stdout_and_errors(three_runs, tmp_path, capsys):
    assert main(["compare", *map(str, three_runs), "--out", "-", "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("### Comparison")
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "t.md")]) == 2
    assert "misato compare: error: run folder" in capsys.readouterr().err
    assert not (tmp_path / "t.md").exists()
    assert main(["compare", *map(str, three_runs), "--out", str(tmp_path), "--format", "md"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_malformed_names_and_breakdown_values_are_refused(tmp_path):
    """An empty or 'NA' image name and a non-numeric breakdown value: a MisatoError, never a traceback."""
    import json

    from evaluate.compare import compare

    def run_folder(name, names, breakdown_psnr=25.0):
        folder = tmp_path / name
        folder.mkdir()
        rows = "\n".join(f"{n},{20 + i}" for i, n in enumerate(names))
        (folder / "per_image.csv").write_text(f"name,psnr\n{rows}\n")
        summary = {"metrics": {"psnr": 21.0}, "n": len(names), "protocol": "asuka", "weights": {}, "version": "x",
                   "by_domain": {"landscape": {"n": len(names), "psnr": breakdown_psnr}}, "by_mask_ratio": {}}
        (folder / "summary.json").write_text(json.dumps(summary))
        return folder

    na = run_folder("na", ["NA", "0001"])
    text, _ = compare([na, na], tmp_path / "t.csv", labels=["a", "b"], n_boot=10)  # "NA" is a name, not missing
    assert "a" in text
    empty = run_folder("empty", ["", "0001"])
    with pytest.raises(MisatoError, match="empty 'name'"):
        compare([empty], tmp_path / "t2.csv")
    bad = run_folder("bad", ["0000", "0001"], breakdown_psnr="abc")
    with pytest.raises(MisatoError, match="not a finite number"):
        compare([bad], tmp_path / "t3.md", by="domain")


# ---------------------------------------------------------------------------------------------------------------
# Damaged run folders and refused option combinations


def test_truncated_per_image_is_an_error_naming_the_file(tmp_path, capsys):
    run = write_run(tmp_path, "a", {"psnr": np.arange(12.0)})
    lines = (run / "per_image.csv").read_text().splitlines(True)
    (run / "per_image.csv").write_text("".join(lines[:3]))  # header + 2 rows, summary says 12
    with pytest.raises(MisatoError, match=r"a/per_image.csv has 2 image row\(s\) but summary.json says n = 12"):
        load_run(run)
    # The path that used to print N = 12 with intervals from 2 rows.
    assert main(["compare", str(run), "--out", "-", "--no-paired"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "per_image.csv has 2 image row(s)" in captured.err


def test_ragged_per_image_rows_are_an_error_naming_the_line(tmp_path):
    run = write_run(tmp_path, "a", {"psnr": np.arange(12.0), "lpips": np.full(12, 0.1)})
    lines = (run / "per_image.csv").read_text().splitlines(True)
    lines[5] = lines[5].split(",", 1)[0] + ",3.0\n"  # a row cut short: name and psnr only
    (run / "per_image.csv").write_text("".join(lines))
    with pytest.raises(MisatoError, match=r"a/per_image.csv: 1 row\(s\) do not have the 5 fields.*first at line 6"):
        load_run(run)
    lines[5] = lines[5].rstrip("\n") + ",0.1,0.25,landscape,extra\n"
    (run / "per_image.csv").write_text("".join(lines))
    with pytest.raises(MisatoError, match="do not have the 5 fields"):
        load_run(run)


def test_missing_mask_ratio_and_bad_image_sizes_are_refused(tmp_path):
    run = write_run(tmp_path, "a", {"psnr": np.arange(12.0)})
    text = (run / "per_image.csv").read_text()
    (run / "per_image.csv").write_text(text.replace("0007,8.0,0.25,", "0007,8.0,,"))
    with pytest.raises(MisatoError, match="column 'mask_ratio' is empty or not a finite number for 0007"):
        load_run(run)
    other = write_run(tmp_path, "b", {"psnr": np.arange(12.0)}, image_sizes=[[512, "512"]])
    with pytest.raises(MisatoError, match=r'b/summary.json: "image_sizes" is .* not a list of \[height, width\]'):
        load_run(other)
    good = write_run(tmp_path, "c", {"psnr": np.arange(12.0)}, image_sizes=[[512, 512], [256, 384]])
    assert load_run(good).image_sizes == ((512, 512), (256, 384))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--bootstrap", "100"], "--bootstrap"),
        (["--seed", "3"], "--seed"),
        (["--baseline", "lama"], "--baseline"),
        (["--no-paired"], "--no-paired"),
        (["--bootstrap", "0", "--seed", "0"], "--bootstrap, --seed"),
    ],
)
def test_by_refuses_the_options_it_would_ignore(three_runs, tmp_path, capsys, options, named):
    out = tmp_path / "t.md"
    assert main(["compare", *map(str, three_runs), "--out", str(out), "--by", "domain", *options]) == 2
    err = capsys.readouterr().err
    assert f"misato compare: error: {named} cannot be combined with --by" in err
    assert not out.exists()


def test_by_alone_still_works_from_the_cli(tmp_path, capsys):
    runs = [write_run(tmp_path, label, {"psnr": np.ones(12)}, by_domain={"indoor": {"n": 12, "psnr": 1.0}})
            for label in ("a", "b")]
    assert main(["compare", *map(str, runs), "--out", "-", "--by", "domain"]) == 0
    assert "### Breakdown by domain" in capsys.readouterr().out


def test_stdout_output_prints_warnings_once(tmp_path, capsys):
    values = {"psnr": np.arange(12.0)}
    runs = [write_run(tmp_path, "a", values), write_run(tmp_path, "b", values, protocol="comod")]
    assert main(["compare", *map(str, runs), "--out", "-", "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("runs use different protocols") == 1
    assert captured.err == ""
    out = tmp_path / "t.md"
    assert main(["compare", *map(str, runs), "--out", str(out), "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("warning: runs use different protocols") == 1
    assert out.read_text().count("runs use different protocols") == 1


def test_mask_ratio_groups_follow_the_schema_bins(tmp_path):
    from evaluate.schema import MASK_RATIO_LABELS

    bins = {label: {"n": 1, "psnr": float(i)} for i, label in enumerate(reversed(MASK_RATIO_LABELS))}
    run = write_run(tmp_path, "a", {"psnr": np.ones(12)}, by_mask_ratio={**bins, "odd": {"n": 1, "psnr": 0.0}})
    table = build_breakdown(load_runs([run]), "mask_ratio")
    assert [r.group for r in table.rows] == [*MASK_RATIO_LABELS, "odd"]
    assert MASK_RATIO_LABELS[-2:] == ("50-60%", "60%+")


# ---------------------------------------------------------------------------------------------------------------
# Runs against the paper's benchmark (--reported)


def _benchmark_run(root: Path, folder: str, n: int, side: int | None) -> Path:
    names = [f"{i:04d}" for i in range(n)]
    sizes = {} if side is None else {"image_sizes": [[side, side]]}
    return write_run(root, folder, {"psnr": np.linspace(20, 24, n)}, {"fid": 12.0}, names=names, **sizes)


def test_reported_warns_when_n_or_resolution_differ_from_the_paper(tmp_path, capsys):
    runs = [
        _benchmark_run(tmp_path, "lama", 2000, 512),  # MISATO@512 as the paper: no warning
        _benchmark_run(tmp_path, "mat", 12, 512),
        _benchmark_run(tmp_path, "asuka", 2000, 256),
        _benchmark_run(tmp_path, "sd", 12, None),
        _benchmark_run(tmp_path, "mine", 12, 64),  # matches no reported method: nothing to warn about
    ]
    labels = ["LaMa", "MAT", "ASUKA", "SD", "mine"]
    table = build_comparison(load_runs(runs, labels), n_boot=0, paired=False, reported="table1_misato512")
    paper = "the paper's table1_misato512 numbers are on MISATO@512 (2000 images at 512x512)"
    assert table.warnings == (
        f"MAT was scored on 12 images instead of 2000; {paper}, so measured and reported values are not "
        "comparable (FID and IDS depend on N and resolution)",
        f"ASUKA was scored on images of 256x256 instead of 512x512; {paper}, so measured and reported values are "
        "not comparable (FID and IDS depend on N and resolution)",
        f"SD was scored on 12 images instead of 2000; {paper}, so measured and reported values are not "
        "comparable (FID and IDS depend on N and resolution)",
    )
    assert "SD: the run does not record its image size, so only N was checked against MISATO@512 (512x512)" in (
        table.notes
    )
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "t.csv"), "--labels", ",".join(labels),
                 "--reported", "table1_misato512", "--no-paired", "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert err.count("misato compare: warning: ") == 3 and "warning: MAT was scored on 12 images" in err


def test_reported_benchmarks_per_table(tmp_path):
    one_k = _benchmark_run(tmp_path, "flux1k", 1500, 1024)
    table = build_comparison(load_runs([one_k], ["ASUKA"]), n_boot=0, reported="asuka_flux:MISATO@1K")
    assert table.warnings == () and table.rows[0].reported is not None
    table = build_comparison(load_runs([one_k], ["ASUKA"]), n_boot=0, reported="places2")
    assert table.warnings == (
        "ASUKA was scored on 1500 images instead of 36500 and images of 1024x1024 instead of 512x512; the paper's "
        "places2 numbers are on Places2 (36500 images at 512x512), so measured and reported values are not "
        "comparable (FID and IDS depend on N and resolution)",
    )
