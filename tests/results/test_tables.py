"""`misato tables`: paper tables from run folders written by the evaluator, checked against hand-made tables."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from misato.cli import main
from misato.errors import MisatoError
from results.mapping import TABLE_NAMES, TOLERANCES, load_mapping, parse_table_names, shipped_mapping
from results.paper import build_table, build_tables
from results.render import render
from results.reported import load_reported
from tests.results.runs import write_run

SET = {"fid": 15.25, "uids": 0.3, "pids": 0.125}


def _mapping(tmp_path: Path, text: str, name: str = "mine") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


SMALL = """
title = "Small table"
protocol = "asuka"
metrics = ["psnr", "lpips", "fid"]

[[sections]]
n = 4
resolution = 512
reported = "table1_misato512"
rows = [
  { label = "LaMa", run = "lama" },
  { label = "MAT", run = "mat" },
  { label = "ASUKA", run = "nested/asuka" },
]
"""


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    # per-image means (exact in binary): LaMa PSNR 23.5, LPIPS 0.15625; ASUKA PSNR 22.5, LPIPS 0.125
    write_run(root, "lama", {"psnr": [21.0, 23.0, 24.0, 26.0], "lpips": [0.125, 0.25, 0.125, 0.125]}, SET)
    write_run(root, "nested/asuka", {"psnr": [22.0, 22.5, 22.5, 23.0], "lpips": [0.125] * 4}, {**SET, "fid": 11.5})
    return root


def _body(text: str) -> list[dict[str, str]]:
    """The CSV's rows without its ``#`` comment lines."""
    body = "".join(line for line in text.splitlines(True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(body)))


def _md_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Method")]


def test_table_matches_the_hand_made_csv(runs, tmp_path):
    report = build_tables(runs, tmp_path / "out", mapping=_mapping(tmp_path, SMALL))
    text = (tmp_path / "out" / "mine.csv").read_text()
    expected = (
        "benchmark,method,run,n,protocol,psnr,lpips,fid,flags,note\n"
        "4 images at 512x512,LaMa,lama,4,asuka,23.5,0.15625,15.25,,\n"
        "4 images at 512x512,MAT,mat,,,,,,,no run folder\n"
        "4 images at 512x512,ASUKA,nested/asuka,4,asuka,22.5,0.125,11.5,,\n"
    )
    assert text.split("\n", 1)[0] == "# Small table"
    assert "".join(line for line in text.splitlines(True) if not line.startswith("#")) == expected
    assert [t.name for t in report.tables] == ["mine"] and report.skipped == {}
    assert report.files == tuple(tmp_path / "out" / f"mine.{fmt}" for fmt in ("csv", "md", "tex"))


def test_markdown_has_arrows_bold_best_and_the_papers_decimals(runs, tmp_path):
    build_tables(runs, tmp_path / "out", mapping=_mapping(tmp_path, SMALL))
    text = (tmp_path / "out" / "mine.md").read_text()
    assert "| Method | PSNR↑ | LPIPS↓ | FID↓ |" in text
    assert _md_rows(text) == [
        ["LaMa", "**23.500**", "0.156", "15.250"],
        ["MAT", "–", "–", "–"],
        ["ASUKA", "22.500", "**0.125**", "**11.500**"],
    ]


def test_missing_run_leaves_an_empty_row_with_a_note(runs, tmp_path):
    report = build_tables(runs, tmp_path / "out", mapping=_mapping(tmp_path, SMALL))
    (table,) = report.tables
    assert "MAT: no run folder 'mat' in the runs folder; row left empty" in table.notes
    md = (tmp_path / "out" / "mine.md").read_text()
    assert "- Note: MAT: no run folder 'mat' in the runs folder; row left empty" in md
    assert str(tmp_path) not in md  # the files do not depend on where the runs are
    built = build_table(load_mapping(_mapping(tmp_path, SMALL)), runs)
    mat = built.sections[0].rows[1]
    assert not mat.found and all(cell.value is None for cell in mat.cells.values())


def test_vs_reported_deltas_are_exact_and_the_verdict_counts_within_tolerance(runs, tmp_path):
    report = build_tables(runs, tmp_path / "out", vs_reported=True, mapping=_mapping(tmp_path, SMALL))
    paper = load_reported("table1_misato512")
    rows = {row["method"]: row for row in _body((tmp_path / "out" / "mine.csv").read_text())}
    measured = {"LaMa": {"psnr": 23.5, "lpips": 0.15625, "fid": 15.25}, "ASUKA": {"psnr": 22.5, "lpips": 0.125,
                                                                              "fid": 11.5}}
    for label, values in measured.items():
        for metric, value in values.items():
            reported = paper.row(label)[metric]
            assert float(rows[label][f"{metric}_reported"]) == reported
            assert float(rows[label][f"{metric}_delta"]) == value - reported  # exact: full precision in the CSV
            within = abs(value - reported) <= TOLERANCES[metric]
            assert rows[label][f"{metric}_within"] == ("yes" if within else "no")
    # MAT has the paper's numbers but no measurement: no delta
    assert rows["MAT"]["psnr_reported"] == "21.553" and rows["MAT"]["psnr_delta"] == ""
    # LaMa: 23.5-23.677 = -0.177 (> 0.1), 0.15625-0.155 (within 0.005), 15.25-15.436 (within 0.5);
    # ASUKA: 22.5-22.495 within, 0.125-0.150 outside, 11.5-11.46 within.
    (table,) = report.tables
    assert table.verdict == (
        "Small table: 4 of 6 compared cells within tolerance; outside: LaMa PSNR -0.177, ASUKA LPIPS -0.025; "
        "not compared: 3 without a measured value (of 9 reported cells)"
    )
    md = (tmp_path / "out" / "mine.md").read_text()
    assert f"**Verdict:** {table.verdict}" in md
    assert ["", "Δ", "-0.177 ✗", "+0.001", "-0.186"] in _md_rows(md)
    assert ["", "reported", "23.677", "0.155", "15.436"] in _md_rows(md)


def test_runs_with_another_protocol_n_or_resolution_are_flagged_per_cell(tmp_path):
    root = tmp_path / "runs"
    values = {"psnr": [24.0] * 4, "lpips": [0.1] * 4}
    write_run(root, "lama", values, SET, protocol="comod")
    write_run(root, "mat", values, SET, side=256)
    write_run(root, "nested/asuka", {"psnr": [22.0] * 4, "lpips": [0.2] * 4}, SET)
    report = build_tables(root, tmp_path / "out", vs_reported=True, mapping=_mapping(tmp_path, SMALL))
    (table,) = report.tables
    assert any(note.startswith("LaMa: scored with protocol 'comod' instead of 'asuka'; the table is") for note in
               table.notes)
    assert any(note.startswith("MAT: scored with images of 256x256 instead of 512x512;") for note in table.notes)
    rows = _md_rows((tmp_path / "out" / "mine.md").read_text())
    # flagged values are shown with a dagger and never bold, though LaMa and MAT have the better numbers
    assert rows[0] == ["LaMa", "measured", "24.000†", "0.100†", "15.250†"]
    assert rows[3] == ["MAT", "measured", "24.000†", "0.100†", "15.250†"]
    assert rows[6] == ["ASUKA", "measured", "22.000", "0.200", "15.250"]  # only one unflagged run: nothing best
    csv_rows = {row["method"]: row for row in _body((tmp_path / "out" / "mine.csv").read_text())}
    assert csv_rows["LaMa"]["flags"] == "protocol 'comod' instead of 'asuka'"
    assert csv_rows["LaMa"]["psnr_within"] == "" and csv_rows["LaMa"]["psnr_delta"] != ""
    assert table.verdict.endswith("not compared: 6 flagged (of 9 reported cells)")


def test_shipped_table_1_flags_runs_on_fewer_images_than_the_paper(runs, tmp_path):
    shutil.copytree(runs / "nested" / "asuka", runs / "asuka")
    report = build_tables(runs, tmp_path / "out", tables=["1"])
    rows = _body((tmp_path / "out" / "table1.csv").read_text())
    assert [row["method"] for row in rows] == list(load_reported("table1_misato512").values.index)
    lama = next(row for row in rows if row["method"] == "LaMa")
    assert lama["flags"] == "4 images instead of 2000" and lama["psnr"] == "23.5" and lama["ssim"] == ""
    assert "LaMa: lama/summary.json has no SSIM; cell(s) left empty" in report.tables[0].notes
    write_run(runs, "sd", {"psnr": [22.0] * 4}, {"fid": 12.0})
    (table,) = build_tables(runs, tmp_path / "out", tables=["1"]).tables
    assert "SD: sd/summary.json has no SSIM, LPIPS, U-IDS, P-IDS; cell(s) left empty" in table.notes


def test_tex_is_a_booktabs_fragment_with_bold_best_and_arrows(runs, tmp_path):
    mapping = _mapping(tmp_path, SMALL.replace('"LaMa"', '"La_Ma & co"'))
    build_tables(runs, tmp_path / "out", vs_reported=False, mapping=mapping)
    tex = (tmp_path / "out" / "mine.tex").read_text()
    lines = tex.splitlines()
    body = [line for line in lines if not line.startswith("%")]
    assert body[:3] == ["\\begin{tabular}{lrrr}", "\\toprule",
                        "Method & PSNR$\\uparrow$ & LPIPS$\\downarrow$ & FID$\\downarrow$ \\\\"]
    assert body[3] == "\\midrule" and body[-2:] == ["\\bottomrule", "\\end{tabular}"]
    rows = body[4:-2]
    assert rows == [
        "La\\_Ma \\& co & \\textbf{23.500} & 0.156 & 15.250 \\\\",
        "MAT & -- & -- & -- \\\\",
        "ASUKA & 22.500 & \\textbf{0.125} & \\textbf{11.500} \\\\",
    ]
    assert all(row.count(" & ") == 3 for row in rows)  # every row fills the 4 columns
    assert tex.count("\\begin{") == tex.count("\\end{") == 1 and "\\begin{table}" not in tex


def _tex_engine() -> str | None:
    return next((engine for engine in ("pdflatex", "lualatex", "xelatex") if shutil.which(engine)), None)


@pytest.mark.skipif(_tex_engine() is None, reason="no TeX engine installed (the string structure is tested above)")
def test_tex_fragments_compile(runs, tmp_path):
    build_tables(runs, tmp_path / "out", vs_reported=True, mapping=_mapping(tmp_path, SMALL))
    document = tmp_path / "doc.tex"
    document.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
                        f"\\input{{{tmp_path / 'out' / 'mine.tex'}}}\n\\end{{document}}\n")
    subprocess.run([_tex_engine(), "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path,
                   check=True, capture_output=True, timeout=120)


def test_sections_are_stacked_under_one_header(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "flux-fill", {"psnr": [22.0] * 4}, SET, method="flux-fill")
    write_run(root, "misato1k/asuka-flux", {"psnr": [23.0] * 4}, SET, side=1024)
    report = build_tables(root, tmp_path / "out", tables=["flux"], vs_reported=True)
    tex = (tmp_path / "out" / "flux.tex").read_text()
    assert tex.count("\\toprule") == 1 and tex.count("Method & Source & FID") == 1
    assert "\\multicolumn{10}{l}{\\textit{MISATO@512}} \\\\" in tex
    assert "\\multicolumn{10}{l}{\\textit{MISATO@1K}} \\\\" in tex
    assert " & $-0.011$ & $-0.060$ & $+0.398$ & " in tex  # Δ in math mode: a minus sign, not a hyphen
    md = (tmp_path / "out" / "flux.md").read_text()
    assert "### MISATO@512" in md and "### MISATO@1K" in md
    rows = _body((tmp_path / "out" / "flux.csv").read_text())
    assert [(r["benchmark"], r["method"], r["run"]) for r in rows] == [
        ("MISATO@512", "FLUX-Fill", "flux-fill"), ("MISATO@512", "ASUKA-FLUX", "asuka-flux"),
        ("MISATO@1K", "FLUX-Fill", "misato1k/flux-fill"), ("MISATO@1K", "ASUKA-FLUX", "misato1k/asuka-flux"),
    ]
    # the 1K rows join the README's "ASUKA" row of MISATO@1K, not MISATO@512's
    assert float(rows[3]["psnr_reported"]) == 22.602 and float(rows[0]["grad_reported"]) == 69.428
    assert float(rows[3]["psnr_delta"]) == 23.0 - 22.602
    assert report.tables[0].name == "flux"


def test_breakdown_tables_add_a_row_for_every_other_run(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "lama", {"psnr": [20.0, 22.0, 24.0, 26.0]}, SET)
    write_run(root, "telea", {"psnr": [10.0, 11.0, 12.0, 13.0]})
    write_run(root, "my-method", {"psnr": [30.0, 31.0, 32.0, 33.0]})
    (root / "unfinished").mkdir()  # no summary.json: not a run, no row
    report = build_tables(root, tmp_path / "out", tables=["domain", "1"])
    domain = _body((tmp_path / "out" / "domain.csv").read_text())
    indoor = {r["method"]: r["psnr"] for r in domain if r["domain"] == "indoor"}
    assert list(indoor)[-2:] == ["my-method", "telea"] and indoor["telea"] == "11.0" and indoor["LaMa"] == "22.0"
    assert "unfinished" not in indoor
    table1 = _body((tmp_path / "out" / "table1.csv").read_text())
    assert "telea" not in {r["method"] for r in table1}  # a paper table keeps the paper's rows only
    assert report.tables[0].name == "domain"
    with pytest.raises(MisatoError, match="only a breakdown table may set it"):
        load_mapping(_mapping(tmp_path, (Path(__file__).parents[2] / "results" / "mappings" / "table1.toml")
                              .read_text().replace("title =", "other_runs = true\ntitle =", 1), "bad"))


def test_breakdown_tables_hold_every_method_per_domain_and_hole_ratio(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "lama", {"psnr": [20.0, 22.0, 24.0, 26.0], "grad": [40.0, 41.0, 42.0, 43.0]}, SET)
    write_run(root, "asuka", {"psnr": [21.0, 23.0, 23.0, 25.0], "grad": [30.0, 50.0, 40.0, 44.0]}, SET)
    build_tables(root, tmp_path / "out", tables=["domain", "mask_ratio"])
    domain = _body((tmp_path / "out" / "domain.csv").read_text())
    lama = [(r["domain"], r["n"], r["psnr"], r["grad"]) for r in domain if r["method"] == "LaMa"]
    assert lama == [("landscape", "1", "20.0", "40.0"), ("indoor", "1", "22.0", "41.0"),
                    ("building", "1", "24.0", "42.0"), ("background", "1", "26.0", "43.0")]
    assert [r["method"] for r in domain[:10]] == ["Co-Mod", "MAT", "LaMa", "MAE-FAR", "SD", "SD-text", "SD-prompt",
                                                  "ASUKA", "FLUX-Fill", "ASUKA-FLUX"]
    ratio = _body((tmp_path / "out" / "mask_ratio.csv").read_text())
    assert list(dict.fromkeys(r["mask_ratio"] for r in ratio)) == ["0-10%", "10-20%", "30-40%", "60%+"]
    assert "LaMa: lama/summary.json by_domain has no SSIM for landscape, indoor, building, background; no LPIPS " \
        "for landscape, indoor, building, background; no FID for landscape, indoor, building, background; cell(s) " \
        "left empty" in build_tables(root, tmp_path / "out", tables=["domain"]).tables[0].notes
    asuka = {r["mask_ratio"]: r for r in ratio if r["method"] == "ASUKA"}
    assert asuka["10-20%"]["psnr"] == "23.0" and asuka["60%+"]["grad"] == "44.0"
    md = (tmp_path / "out" / "mask_ratio.md").read_text()
    section = md.split("### 10-20%")[1].split("###")[0]
    assert "| Method | N | PSNR↑ | SSIM↑ | LPIPS↓ | Grad↓ |" in section
    assert "| LaMa | 1 | 22.000† | – | – | 41.000† |" in section  # 4 images, not MISATO@512's 2,000: flagged
    # the same table from a mapping of one's own for these 4 images: nothing flagged, best per bin in bold
    shipped = (Path(__file__).parents[2] / "results" / "mappings" / "mask_ratio.toml").read_text()
    mine = _mapping(tmp_path, shipped.replace('benchmark = "MISATO@512"', "n = 4\nresolution = 512"), "bins")
    build_tables(root, tmp_path / "out", mapping=mine)
    section = (tmp_path / "out" / "bins.md").read_text().split("### 10-20%")[1].split("###")[0]
    assert "| LaMa | 1 | 22.000 | – | – | **41.000** |" in section  # lower Grad is better
    assert "| ASUKA | 1 | **23.000** | – | – | 50.000 |" in section


def test_a_breakdown_with_one_group_still_names_it(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "lama", {"psnr": [20.0, 22.0, 24.0, 26.0]}, SET)
    summary = json.loads((root / "lama" / "summary.json").read_text())
    summary["by_domain"] = {"indoor": summary["by_domain"]["indoor"]}
    (root / "lama" / "summary.json").write_text(json.dumps(summary))
    build_tables(root, tmp_path / "out", tables=["domain"])
    assert "### indoor" in (tmp_path / "out" / "domain.md").read_text()
    assert "\\multicolumn{7}{l}{\\textit{indoor}} \\\\" in (tmp_path / "out" / "domain.tex").read_text()


def test_shipped_mappings_follow_the_reported_tables():
    for name in TABLE_NAMES:
        mapping = shipped_mapping(name)
        for section in mapping.sections:
            if section.reported is None:
                assert mapping.breakdown is not None
                continue
            reported = load_reported(section.reported)
            assert reported.benchmark == section.benchmark and reported.source.protocol == section.protocol
            assert set(section.metrics) <= set(reported.metrics)
            assert [reported.row(row.reported_method) is not None for row in section.rows].count(False) == (
                2 if section.reported == "clip_global:Places2" else 0)  # MAT, MAE-FAR: "-" in the README
            if name in {"1", "2", "3", "4", "places2"}:
                assert [row.reported_method for row in section.rows] == list(reported.values.index)
                assert section.metrics == reported.metrics


def test_same_runs_give_identical_files_and_the_folder_is_refreshed(runs, tmp_path):
    mapping = _mapping(tmp_path, SMALL)
    build_tables(runs, tmp_path / "a", vs_reported=True, mapping=mapping)
    shutil.copytree(runs, tmp_path / "elsewhere" / "runs")
    build_tables(tmp_path / "elsewhere" / "runs", tmp_path / "b", vs_reported=True, mapping=mapping)
    for name in ("mine.csv", "mine.md", "mine.tex", "tables.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    build_tables(runs, tmp_path / "a", mapping=mapping)  # a tables folder is refreshed in place
    assert "_reported" not in (tmp_path / "a" / "mine.csv").read_text()
    assert set(json.loads((tmp_path / "a" / "tables.json").read_text())["tables"]) == {"mine"}
    build_tables(runs, tmp_path / "a", tables=["domain"])  # other tables join the record
    record = json.loads((tmp_path / "a" / "tables.json").read_text())
    assert set(record["tables"]) == {"mine", "domain"} and record["tables"]["domain"]["runs"] == ["lama"]
    (tmp_path / "a" / "tables.json").write_text("{broken")
    with pytest.raises(MisatoError, match="tables.json is damaged"):
        build_tables(runs, tmp_path / "a", mapping=mapping)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(MisatoError, match="holds no tables.json"):
        build_tables(runs, foreign, mapping=mapping)
    assert (foreign / "thesis.tex").read_text() == "mine"


def test_bad_inputs_are_one_line_errors(runs, tmp_path):
    (runs / "mat").mkdir()  # exists, but is not an evaluation run
    with pytest.raises(MisatoError, match=r"summary.json is missing: .*mat is not a finished"):
        build_tables(runs, tmp_path / "out", mapping=_mapping(tmp_path, SMALL))
    nowhere = _mapping(tmp_path, SMALL.replace('"lama"', '"lama-v2"').replace('"nested/asuka"', '"asuka-v2"')
                       .replace('"mat"', '"mat-v2"'), "nowhere")
    with pytest.raises(MisatoError, match="table nowhere .*none of its runs exist .*lama-v2, mat-v2, asuka-v2"):
        build_tables(runs, tmp_path / "out", mapping=nowhere)
    with pytest.raises(MisatoError, match="unknown table '9'"):
        build_tables(runs, tmp_path / "out", tables=["9"])
    with pytest.raises(MisatoError, match="exclude each other"):
        build_tables(runs, tmp_path / "out", tables=["1"], mapping=_mapping(tmp_path, SMALL))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="no paper table has a run"):
        build_tables(tmp_path / "empty", tmp_path / "elsewhere")
    for bad, message in [
        (SMALL.replace("protocol", "protocoll", 1), "unknown key"),
        (SMALL.replace('"fid"]', '"fidd"]'), "unknown metric"),
        (SMALL.replace('protocol = "asuka"', 'protocol = "tf"'), "unknown protocol 'tf'"),
        (SMALL.replace("n = 4\n", ""), "give a benchmark"),
        (SMALL.replace('"MAT", run', '"LaMa", run'), "'LaMa' appear on several rows"),
        (SMALL.replace('reported = "table1_misato512"', 'reported = "table9"'), "unknown reported table"),
        (SMALL + "[tolerance]\nfid = -1\n", "tolerance fid = -1"),
        (SMALL.replace('"nested/asuka"', '"nested/../../asuka"'), "must be a folder inside --runs"),
        (SMALL.replace('"nested/asuka"', '"/abs/asuka"'), "must be a folder inside --runs"),
        ("title = [", "is not valid TOML"),
    ]:
        with pytest.raises(MisatoError, match=message) as error:
            load_mapping(_mapping(tmp_path, bad, "bad"))
        assert "\n" not in str(error.value) and "bad.toml" in str(error.value)
    with pytest.raises(MisatoError, match="no such file"):
        load_mapping(tmp_path / "absent.toml")


def test_runs_folder_mistakes_say_what_the_folder_is(runs, tmp_path):
    predictions = tmp_path / "predictions"
    (predictions / "lama-output").mkdir(parents=True)
    (predictions / "lama-output" / "run.json").write_text("{}")  # what `misato inpaint --out` writes
    with pytest.raises(MisatoError, match=r"holds `misato inpaint` predictions \(run.json\), not evaluations"):
        build_tables(predictions, tmp_path / "out")
    with pytest.raises(MisatoError, match=r"it is itself one evaluation run; pass the folder holding it"):
        build_tables(runs / "lama", tmp_path / "out", tables=None)
    with pytest.raises(MisatoError, match="--out .* is the --runs folder"):
        build_tables(runs, runs, mapping=_mapping(tmp_path, SMALL))
    with pytest.raises(MisatoError, match="lies inside the input folder"):
        build_tables(runs, runs / "lama" / "tables", mapping=_mapping(tmp_path, SMALL))
    assert sorted(p.name for p in (runs / "lama").iterdir()) == ["per_image.csv", "summary.csv", "summary.json"]


def test_a_tables_folder_killed_while_writing_is_refreshed_next_time(runs, tmp_path, monkeypatch):
    import results.paper

    written = []
    original = results.paper.atomic_write_text

    def dying(path, text):
        if len(written) == 2:  # tables.json and the first table's CSV are written, then the process dies
            raise KeyboardInterrupt
        written.append(Path(path).name)
        original(path, text)

    monkeypatch.setattr(results.paper, "atomic_write_text", dying)
    with pytest.raises(KeyboardInterrupt):
        build_tables(runs, tmp_path / "out", mapping=_mapping(tmp_path, SMALL))
    assert written == ["tables.json", "mine.csv"]
    monkeypatch.setattr(results.paper, "atomic_write_text", original)
    build_tables(runs, tmp_path / "out", mapping=_mapping(tmp_path, SMALL))
    build_tables(runs, tmp_path / "fresh", mapping=_mapping(tmp_path, SMALL))
    for name in ("mine.csv", "mine.md", "mine.tex", "tables.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_run_folders_follow_the_naming_convention():
    assert shipped_mapping("1").run_folders == ("comod", "mat", "lama", "maefar", "sd", "sd-text", "sd-prompt", "asuka")
    assert shipped_mapping("flux").run_folders == ("flux-fill", "asuka-flux", "misato1k/flux-fill",
                                                   "misato1k/asuka-flux")
    assert shipped_mapping("3").run_folders[-1] == "asuka"
    assert all(f.startswith("places2/") for f in shipped_mapping("places2").run_folders)


def test_table_names():
    assert parse_table_names(None) == parse_table_names("all") == list(TABLE_NAMES)
    assert parse_table_names("flux, 1") == ["flux", "1"]
    assert parse_table_names(["1", "all"]) == list(TABLE_NAMES)
    from misato.cli_tables import TABLE_CHOICES  # spelled out so the parser does not import evaluate

    assert TABLE_CHOICES.split("|") == [*TABLE_NAMES, "all"]
    assert TABLE_NAMES[:7] == ("1", "2", "3", "4", "places2", "flux", "clip")


def test_cli_writes_the_tables_and_reports_errors_on_one_line(runs, tmp_path, capsys):
    shutil.copytree(runs / "nested" / "asuka", runs / "asuka")
    out = tmp_path / "out"
    assert main(["tables", "--runs", str(runs), "--out", str(out), "--vs-reported"]) == 0
    err = capsys.readouterr().err
    assert "misato tables: skipped table places2: none of its runs exist" in err
    assert re.search(r"misato tables: verdict: Table 1: MISATO@512: 0 of 0 compared cells", err)
    written = sorted(p.name for p in out.iterdir())
    for stem in ("table1", "table2", "table3", "table4", "clip", "domain", "mask_ratio"):
        assert {f"{stem}.csv", f"{stem}.md", f"{stem}.tex"} <= set(written)
    assert "places2.csv" not in written and "tables.json" in written
    assert main(["tables", "--runs", str(runs), "--out", str(tmp_path / "two"), "--table", "1,domain"]) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "domain.csv", "domain.md", "domain.tex", "table1.csv", "table1.md", "table1.tex", "tables.json"]
    capsys.readouterr()
    assert main(["tables", "--runs", str(runs), "--out", str(out), "--table", "places2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("misato tables: error: table places2")


def test_render_refuses_unknown_format(runs, tmp_path):
    with pytest.raises(MisatoError, match="unknown format 'pdf'"):
        render(build_table(load_mapping(_mapping(tmp_path, SMALL)), runs), "pdf")


def test_compare_reported_takes_the_new_tables(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "lama", {"psnr": [22.0] * 4, "clip": [0.925] * 4}, SET)
    assert main(["compare", str(root / "lama"), "--out", str(tmp_path / "c.csv"), "--labels", "LaMa", "--reported",
                 "clip_global:Places2", "--bootstrap", "0"]) == 0
    row = _body((tmp_path / "c.csv").read_text())[0]
    assert float(row["clip_reported"]) == 0.927 and float(row["clip_delta"]) == 0.925 - 0.927
    assert "instead of 36500" in capsys.readouterr().err  # 4 images, not Places2's


def test_a_mappings_tolerance_overrides_the_default(runs, tmp_path):
    head, sections = SMALL.split("[[sections]]")
    loose = _mapping(tmp_path, head + "[tolerance]\npsnr = 0.2\nlpips = 0.03\n\n[[sections]]" + sections, "loose")
    (table,) = build_tables(runs, tmp_path / "out", vs_reported=True, mapping=loose).tables
    assert table.verdict == "Small table: 6 of 6 compared cells within tolerance; not compared: 3 without a " \
                            "measured value (of 9 reported cells)"
    assert "PSNR 0.2, LPIPS 0.03, FID 0.5" in (tmp_path / "out" / "loose.md").read_text()


def test_a_run_from_misato_evaluate_fills_its_row(tmp_path):
    """End to end through the real evaluator: its summary values land in the table unchanged."""
    from evaluate import evaluate_folder
    from tests.helpers import write_misato_folder, write_predictions

    gt = write_misato_folder(tmp_path / "gt", n=3, size=32)
    pred = write_predictions(gt, tmp_path / "pred")
    result = evaluate_folder(pred, gt, tmp_path / "runs" / "telea", metrics="psnr,ssim,grad", progress=False)
    mapping = _mapping(tmp_path, 'title = "Mine"\nprotocol = "asuka"\nmetrics = ["psnr", "ssim", "grad"]\n'
                       '[[sections]]\nn = 3\nresolution = 32\nrows = [ { label = "Telea", run = "telea" } ]\n')
    build_tables(tmp_path / "runs", tmp_path / "out", mapping=mapping)
    (row,) = _body((tmp_path / "out" / "mine.csv").read_text())
    assert {m: float(row[m]) for m in ("psnr", "ssim", "grad")} == result.summary["metrics"]
    assert row["flags"] == "" and row["n"] == "3" and row["protocol"] == "asuka"
