"""`misato plot`: the series of each figure read back from the matplotlib objects, files, determinism, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from evaluate.compare import load_runs
from evaluate.stats import bootstrap_mean_ci
from misato.cli import main
from misato.errors import MisatoError
from results.plots import plot, plot_by_domain, plot_by_mask_ratio, plot_fid_vs_lpips
from tests.results.cli_errors import assert_one_line_error

N = 24
BINS = ["0-10%", "10-20%", "20-30%", "30-40%"]


def write_eval_run(root: Path, label: str, seed: int, fid: float | None = 12.0, skip_bin: str | None = None) -> Path:
    """An evaluation run folder as `misato evaluate` writes it: varied hole ratios over three domains."""
    rng = np.random.default_rng(seed)
    names = [f"{i:04d}" for i in (*range(0, 8), *range(500, 508), *range(1000, 1008))]
    ratios = np.resize([0.05, 0.15, 0.25, 0.35], N) + rng.uniform(0, 0.04, N)
    frame = pd.DataFrame({"name": names, "psnr": rng.normal(22, 2, N), "lpips": rng.uniform(0.1, 0.3, N),
                          "mask_ratio": ratios, "domain": ["landscape"] * 8 + ["indoor"] * 8 + ["building"] * 8})
    if skip_bin == "10-20%":
        frame = frame[(frame.mask_ratio < 0.1) | (frame.mask_ratio >= 0.2)]
    run = root / label
    run.mkdir()
    frame.to_csv(run / "per_image.csv", index=False, float_format="%.6f")
    frame = pd.read_csv(run / "per_image.csv", dtype={"name": str})  # the rounded values, as loaded
    metrics = {"psnr": frame.psnr.mean(), "lpips": frame.lpips.mean(), **({"fid": fid} if fid is not None else {})}
    by_domain = {d: {"n": int((frame.domain == d).sum()), "psnr": frame.psnr[frame.domain == d].mean(),
                     **({"fid": fid + k} if fid is not None else {})}
                 for k, d in enumerate(("landscape", "indoor", "building"))}
    summary = {"metrics": metrics, "n": len(frame), "method": label, "protocol": "asuka", "by_domain": by_domain}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [write_eval_run(tmp_path, "lama", 0, fid=15.0), write_eval_run(tmp_path, "asuka", 1, fid=11.5,
                                                                         skip_bin="10-20%")]


def _bin_values(run: Path, metric: str) -> dict[str, np.ndarray]:
    frame = pd.read_csv(run / "per_image.csv", dtype={"name": str})
    bins = pd.cut(frame.mask_ratio, [0, 0.1, 0.2, 0.3, 0.4], right=False, labels=BINS)
    return {b: frame[metric][bins == b].to_numpy() for b in BINS}


def test_mask_ratio_lines_and_bands_are_the_bin_means_and_bootstrap_intervals(runs):
    loaded = load_runs(runs)
    figure = plot_by_mask_ratio(loaded, n_boot=200, seed=3)
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == ["PSNR ↑", "LPIPS ↓"]
    for axis, metric in zip(axes, ("psnr", "lpips")):
        assert [tick.get_text().split("\n")[0] for tick in axis.get_xticklabels()] == BINS
        assert [line.get_label() for line in axis.lines] == ["lama", "asuka"]
        assert len(axis.collections) == 2  # one band per run
        for line, band, run in zip(axis.lines, axis.collections, runs):
            values = _bin_values(run, metric)
            expected = [values[b].mean() if len(values[b]) else np.nan for b in BINS]
            np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
            vertices = np.concatenate([path.vertices for path in band.get_paths()])
            for x, b in enumerate(BINS):
                at_x = vertices[np.isclose(vertices[:, 0], x), 1]
                if not len(values[b]):
                    assert not len(at_x)  # a gap, not a zero
                    continue
                interval = bootstrap_mean_ci(values[b], n_boot=200, seed=3)
                assert at_x.min() == pytest.approx(interval.lo) and at_x.max() == pytest.approx(interval.hi)
    assert np.isnan(axes[0].lines[1].get_ydata()[1])  # asuka has no image in 10-20%


def test_domain_bars_are_the_domain_values_and_fid_comes_from_the_summary(runs):
    figure = plot_by_domain(load_runs(runs), n_boot=100, seed=0)
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == ["PSNR ↑", "LPIPS ↓", "FID ↓"]
    assert [tick.get_text().split("\n")[0] for tick in axes[0].get_xticklabels()] == ["landscape", "indoor", "building"]
    bars = [c for c in axes[0].containers if isinstance(c, BarContainer)]
    error_bars = [c for c in axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(error_bars) == 2
    for run, container, errors in zip(runs, bars, error_bars):
        frame = pd.read_csv(run / "per_image.csv", dtype={"name": str})
        values = [frame.psnr[frame.domain == d].to_numpy() for d in ("landscape", "indoor", "building")]
        heights = [patch.get_height() for patch in container.patches]
        np.testing.assert_allclose(heights, [v.mean() for v in values], rtol=1e-12)
        assert container.get_label() == run.name
        segments = errors.lines[2][0].get_segments()  # one vertical segment per bar: (x, lo) → (x, hi)
        for segment, v in zip(segments, values):
            interval = bootstrap_mean_ci(v, n_boot=100, seed=0)
            assert sorted(segment[:, 1]) == pytest.approx([interval.lo, interval.hi])
    fid_bars = [c for c in axes[2].containers if isinstance(c, BarContainer)]
    assert [[patch.get_height() for patch in c.patches] for c in fid_bars] == [[15.0, 16.0, 17.0], [11.5, 12.5, 13.5]]
    assert not [c for c in axes[2].containers if isinstance(c, ErrorbarContainer)]  # no interval for FID


def test_scatter_offsets_are_each_runs_lpips_and_fid(runs, tmp_path):
    without_fid = write_eval_run(tmp_path, "telea", 2, fid=None)
    loaded = load_runs([*runs, without_fid])
    figure, missing = plot_fid_vs_lpips(loaded)
    assert missing == ["telea"]
    (axis,) = [axis for axis in figure.axes if axis.get_visible()]
    offsets = axis.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, [[run.metrics["lpips"], run.metrics["fid"]] for run in loaded[:2]])
    assert [text.get_text() for text in axis.texts] == ["lama", "asuka"]
    assert plot_fid_vs_lpips(loaded[2:]) == (None, ["telea"])


def test_plot_writes_png_and_svg_with_the_same_bytes_each_time(runs, tmp_path):
    first = plot(runs, tmp_path / "a", n_boot=50)
    plot(runs, tmp_path / "b", n_boot=50)
    names = sorted(path.name for path in first["files"])
    assert names == sorted(f"{k}.{e}" for k in ("domain", "fid_lpips", "mask_ratio") for e in ("png", "svg"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "mask_ratio.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "a" / "domain.svg").read_bytes()
    record = json.loads((tmp_path / "a" / "plots.json").read_text())
    assert record["labels"] == ["lama", "asuka"] and record["bootstrap"] == 50
    with pytest.raises(MisatoError, match="--overwrite"):
        plot(runs, tmp_path / "a")
    only = plot(runs, tmp_path / "a", kinds=["mask_ratio"], overwrite=True, labels=["L", "A"])
    assert sorted(path.name for path in only["files"]) == ["mask_ratio.png", "mask_ratio.svg"]
    assert not (tmp_path / "a" / "domain.png").exists()


def test_bad_input_is_one_line_naming_the_problem(runs, tmp_path, capsys):
    out = str(tmp_path / "plots")
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "run.json").write_text("{}")
    assert_one_line_error(capsys, ["plot", "--runs", str(predictions), "--out", out], "summary.json is missing",
                    "not a finished `misato evaluate --out` run folder")
    assert_one_line_error(capsys, ["plot", "--runs", *map(str, runs), "--out", out, "--kinds", "pie"],
                    "unknown plot kind(s) pie")
    assert_one_line_error(capsys, ["plot", "--runs", *map(str, runs), "--out", out, "--labels", "x"],
                    "--labels has 1 label(s) for 2")
    assert_one_line_error(capsys, ["plot", "--runs", *map(str, runs), "--out", out, "--bootstrap", "-1"],
                    "--bootstrap must be >= 0")
    fid_only = tmp_path / "fid_only"
    fid_only.mkdir()
    (fid_only / "per_image.csv").write_text("name,mask_ratio,domain\n0000,0.1,landscape\n")
    (fid_only / "summary.json").write_text(json.dumps({"metrics": {"fid": 3.0}, "n": 1}))
    assert_one_line_error(capsys, ["plot", "--runs", str(fid_only), "--out", out], "share no per-image metric")
    assert not Path(out).exists()
    assert main(["plot", "--runs", *map(str, runs), "--out", out, "--bootstrap", "20"]) == 0
