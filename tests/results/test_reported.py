"""The shipped reported tables hold exactly the paper's numbers (REFERENCE 6), typed again here by hand."""
from __future__ import annotations

import csv
import dataclasses
from importlib import resources

import pytest

from evaluate.metric_info import METRICS
from misato.errors import MisatoError
from results.reported import (
    REPORTED_TABLES,
    TABLE_BENCHMARKS,
    Benchmark,
    load_benchmarks,
    load_reported,
    reported_table_names,
)
from results.tables import join_reported


MULTI_DATASET = {"asuka_flux": ("MISATO@512", "MISATO@1K"), "clip_global": ("MISATO@512", "Places2")}


def _raw_rows(name: str) -> list[dict[str, str]]:
    with resources.files("results").joinpath("reported", f"{name}.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# (table, dataset, method, metric, value as the paper prints it) — a handful from every table, typed from the paper.
HAND_TYPED = [
    ("table1_misato512", None, "Co-Mod", "psnr", "21.805"),
    ("table1_misato512", None, "MAE-FAR", "ssim", "0.821"),
    ("table1_misato512", None, "LaMa", "fid", "15.436"),
    ("table1_misato512", None, "ASUKA", "pids", "0.256"),
    ("table1_misato512", None, "SD-prompt", "lpips", "0.160"),
    ("table2_mae", None, "p.t. MAE", "uids", "0.354"),
    ("table2_mae", None, "f.t. MAE", "fid", "11.460"),
    ("table3_alignment", None, "cross x4", "fid", "11.762"),
    ("table3_alignment", None, "linear", "pids", "0.227"),
    ("table4_decoder", None, "Asy. VAE", "psnr", "22.566"),
    ("table4_decoder", None, "KL-VAE", "uids", "0.343"),
    ("places2", None, "MAT", "fid", "3.765"),
    ("places2", None, "LaMa", "pids", "0.050"),
    ("places2", None, "ASUKA", "uids", "0.413"),
    ("user_study", None, "ASUKA", "consistency", "39.38"),
    ("user_study", None, "ASUKA", "quality", "40"),
    ("user_study", None, "MAT", "quality", "3.33"),
    ("asuka_flux", "MISATO@512", "FLUX-Fill", "grad", "69.428"),
    ("asuka_flux", "MISATO@512", "ASUKA-FLUX", "uids", "0.405"),
    ("asuka_flux", "MISATO@1K", "ASUKA", "fid", "13.503"),
    ("asuka_flux", "MISATO@1K", "FLUX", "lpips", "0.165"),
    ("asuka_flux", "MISATO@1K", "ASUKA", "grad", "34.390"),
    ("asuka_flux", "MISATO@512", "FLUX-Fill", "clip", "0.936"),
    ("asuka_flux", "MISATO@1K", "FLUX", "clip", "0.944"),
    ("clip_global", "MISATO@512", "Co-Mod", "clip", "0.878"),
    ("clip_global", "MISATO@512", "SD-CAEv2", "clip", "0.866"),
    ("clip_global", "MISATO@512", "ASUKA-SD", "clip", "0.931"),
    ("clip_global", "Places2", "LaMa", "clip", "0.927"),
    ("clip_global", "Places2", "SD-CAEv2", "clip", "0.865"),
    ("clip_global", "Places2", "SD-LaMa", "clip", "0.917"),
]


@pytest.mark.parametrize(("table", "dataset", "method", "metric", "printed"), HAND_TYPED)
def test_values_are_typed_as_printed(table, dataset, method, metric, printed):
    rows = [r for r in _raw_rows(table) if r["method"] == method and r.get("dataset") == dataset]
    assert len(rows) == 1
    assert rows[0][metric] == printed
    loaded = load_reported(f"{table}:{dataset}" if dataset else table)
    assert loaded.row(method)[metric] == float(printed)


@pytest.mark.parametrize(
    ("table", "methods"),
    [
        ("table1_misato512", ["Co-Mod", "MAT", "LaMa", "MAE-FAR", "SD", "SD-text", "SD-prompt", "ASUKA"]),
        ("places2", ["Co-Mod", "MAT", "LaMa", "MAE-FAR", "SD", "SD-text", "SD-prompt", "ASUKA"]),
        ("user_study", ["Co-Mod", "MAT", "LaMa", "MAE-FAR", "SD", "SD-text", "SD-prompt", "ASUKA"]),
        ("table2_mae", ["p.t. MAE", "f.t. MAE"]),
        ("table3_alignment", ["linear", "attn", "cross x4", "ASUKA"]),
        ("table4_decoder", ["KL-VAE", "Asy. VAE", "color-aug", "Ours"]),
    ],
)
def test_methods_in_paper_order(table, methods):
    assert [r["method"] for r in _raw_rows(table)] == methods


def test_every_table_loads_with_known_metric_columns():
    assert set(reported_table_names()) == set(REPORTED_TABLES)
    for name in reported_table_names():
        if name in MULTI_DATASET:
            tables = [load_reported(f"{name}:{dataset}") for dataset in MULTI_DATASET[name]]
        else:
            tables = [load_reported(name)]
        for table in tables:
            assert not table.values.isna().any().any()
            expected = {"consistency", "quality"} if name == "user_study" else set(METRICS)
            assert set(table.metrics) <= expected


def test_user_study_sums_to_one_hundred_percent_up_to_rounding():
    values = load_reported("user_study").values
    rounding = 8 * 0.005  # eight values, each rounded to 2 decimals
    assert values["consistency"].sum() == pytest.approx(100.0, abs=rounding)
    assert values["quality"].sum() == pytest.approx(100.0, abs=rounding)


def test_the_shared_asuka_row_agrees_across_ablation_tables():
    full = load_reported("table1_misato512").row("ASUKA")
    assert load_reported("table2_mae").row("f.t. MAE") == full
    assert load_reported("table3_alignment").row("asuka") == full
    assert load_reported("table4_decoder").row("Ours") == full


def test_unknown_table_and_dataset_are_clear_errors():
    with pytest.raises(MisatoError, match="unknown reported table 'table9'.*table1_misato512"):
        load_reported("table9")
    with pytest.raises(MisatoError, match="asuka_flux:MISATO@512"):
        load_reported("asuka_flux")
    with pytest.raises(MisatoError, match="asuka_flux:MISATO@1K"):
        load_reported("asuka_flux:MISATO@2K")
    with pytest.raises(MisatoError, match="single dataset"):
        load_reported("places2:MISATO@512")


def test_benchmarks_are_the_papers_image_sets():
    """REFERENCE 1 and 6: MISATO@512 2,000 pairs, MISATO@1K 1,500 pairs at 1024, Places2 val 36,500 at 512."""
    assert load_benchmarks() == {
        "MISATO@512": Benchmark("MISATO@512", 2000, 512),
        "MISATO@1K": Benchmark("MISATO@1K", 1500, 1024),
        "Places2": Benchmark("Places2", 36500, 512),
    }
    assert load_reported("table1_misato512").benchmark.images == 2000
    assert load_reported("asuka_flux:MISATO@1K").benchmark == Benchmark("MISATO@1K", 1500, 1024)
    assert load_reported("places2").benchmark.images == 36500
    assert load_reported("user_study").benchmark is None
    assert set(TABLE_BENCHMARKS) == set(REPORTED_TABLES) - {*MULTI_DATASET, "user_study"}


@dataclasses.dataclass
class _Measured:
    label: str
    n: int
    image_sizes: tuple[tuple[int, int], ...] | None


def test_join_reported_matches_labels_and_checks_the_benchmark():
    runs = [_Measured("lama", 2000, ((512, 512),)), _Measured("ASUKA", 2000, ((512, 512), (512, 384))),
            _Measured("other", 3, None)]
    join = join_reported("table1_misato512", runs, ["psnr", "fid", "grad"])
    assert join.metrics == ("psnr", "fid")
    assert join.rows == {"lama": {"psnr": 23.677, "fid": 15.436}, "ASUKA": {"psnr": 22.495, "fid": 11.46},
                         "other": None}
    assert len(join.warnings) == 1
    assert join.warnings[0].startswith("ASUKA was scored on images of 384x512, 512x512 instead of 512x512;")
    assert join.notes == ()
    unmatched = join_reported("places2", [_Measured("x", 3, None)], ["psnr"])
    assert unmatched.warnings == () and "no run label matches a method of 'places2'" in unmatched.notes[0]
    with pytest.raises(MisatoError, match="no metric in common"):
        join_reported("user_study", runs, ["psnr"])


README_CLIP = {  # asuka-flux/README.md, "Global CLIP scores of Table 1": MISATO, Places 2 ("-": none)
    "Co-Mod": (0.878, 0.917), "MAT": (0.882, None), "LaMa": (0.912, 0.927), "MAE-FAR": (0.896, None),
    "SD-Repaint": (0.875, 0.907), "SD": (0.923, 0.928), "SD-text": (0.924, 0.929), "SD-token": (0.925, 0.929),
    "SD-IP": (0.926, 0.917), "SD-T2I": (0.917, 0.912), "SD-CAEv2": (0.866, 0.865), "SD-LaMa": (0.926, 0.917),
    "ASUKA-SD": (0.931, 0.931),
}


def test_global_clip_scores_are_the_readme_row_for_row():
    misato, places2 = load_reported("clip_global:MISATO@512"), load_reported("clip_global:Places2")
    assert list(misato.values.index) == list(README_CLIP)
    assert list(places2.values.index) == [m for m, (_, p) in README_CLIP.items() if p is not None]
    for method, (on_misato, on_places2) in README_CLIP.items():
        assert misato.row(method) == {"clip": on_misato}
        assert places2.row(method) == (None if on_places2 is None else {"clip": on_places2})
    assert places2.benchmark == Benchmark("Places2", 36500, 512)


def test_asuka_flux_rows_carry_grad_and_clip():
    at_512, at_1k = load_reported("asuka_flux:MISATO@512"), load_reported("asuka_flux:MISATO@1K")
    assert at_512.metrics == at_1k.metrics == ("fid", "uids", "pids", "psnr", "ssim", "lpips", "grad", "clip")
    assert at_512.row("ASUKA-FLUX") == {"fid": 11.011, "uids": 0.405, "pids": 0.26, "psnr": 22.329, "ssim": 0.805,
                                        "lpips": 0.141, "grad": 52.925, "clip": 0.943}
    assert at_1k.row("FLUX") == {"fid": 15.106, "uids": 0.245, "pids": 0.128, "psnr": 22.583, "ssim": 0.823,
                                 "lpips": 0.165, "grad": 48.871, "clip": 0.944}


def test_every_table_states_its_source_and_protocol():
    from evaluate.protocols import PROTOCOLS
    from results.reported import load_sources

    sources = load_sources()
    assert set(sources) == set(REPORTED_TABLES)
    for name in REPORTED_TABLES:
        table = load_reported(f"{name}:{MULTI_DATASET[name][0]}" if name in MULTI_DATASET else name)
        assert table.source == sources[name] and table.source.source
        assert table.source.protocol in (None, *PROTOCOLS)
    assert sources["user_study"].protocol is None
    assert "README" in sources["asuka_flux"].source and "README" in sources["clip_global"].source
    assert "arXiv 2312.04831" in sources["table1_misato512"].source
