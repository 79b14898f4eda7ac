"""`misato reproduce` on the embedded demo sample with the weight-free methods: every file, resumed after a
failure or a partial run byte-identical to an uninterrupted study, evaluations redone only when their predictions
change, the paper's config planned with a reason for every method it cannot run here, bad input refused."""
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import baselines.opencv
from misato.cli import main
from misato.cli_demo import SAMPLE_IMAGES, build_sample
from misato.errors import MisatoError
from misato.io import write_image
from results.study import (
    GPU_RULE,
    STUDY_FILE,
    exit_code,
    load_config,
    not_ready_reasons,
    paper_config,
    reproduce,
)

SIZE = 64
METHODS = ("telea", "navier-stokes")
CONFIG = """
[study]
seed = 3

[evaluation]
protocol = "asuka"
metrics = ["psnr", "ssim", "grad"]
batch_size = 4

[tables]
mappings = ["classical.toml"]

[methods.telea]

[methods.navier-stokes]
options = { radius = 5 }
"""
MAPPING = f"""
title = "Classical methods on the demo sample"
protocol = "asuka"
metrics = ["psnr", "ssim", "grad"]

[[sections]]
n = {len(SAMPLE_IMAGES)}
resolution = {SIZE}
rows = [ {{ label = "Telea", run = "telea" }}, {{ label = "Navier-Stokes", run = "navier-stokes" }} ]
"""
PER_SESSION = ("computed", "seconds_last_session")
"""Fields of the runner's run.json that describe one session (how many images it computed, how long it took)."""


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return build_sample(tmp_path_factory.mktemp("sample") / "data", SIZE, "lama-medium-256", 0)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    (folder / "classical.toml").write_text(MAPPING)
    (folder / "study.toml").write_text(CONFIG)
    return folder / "study.toml"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample, config) -> Path:
    """An uninterrupted study, moved aside so that the study under test is written to the same path."""
    out = tmp_path_factory.mktemp("ref") / "study"
    lines = []
    record = reproduce(config, sample, out, report=lines.append)
    assert exit_code(record) == 0, lines
    moved = out.with_name("reference")
    shutil.move(out, moved)
    return moved


@pytest.fixture
def same_path(reference) -> Path:
    """Where a study under test is written: the reference's original path (removed afterwards)."""
    out = reference.with_name("study")
    yield out
    shutil.rmtree(out, ignore_errors=True)


def study_files(root: Path) -> dict[str, bytes]:
    """Every file but the logs, with the per-session fields of run.json left out."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or relative.startswith("logs/"):
            continue
        data = path.read_bytes()
        if path.name == "run.json":
            record = json.loads(data)
            data = json.dumps({k: v for k, v in record.items() if k not in PER_SESSION}).encode()
        files[relative] = data
    return files


def test_study_writes_every_file(reference):
    record = json.loads((reference / STUDY_FILE).read_text())
    assert [record["methods"][m]["status"] for m in METHODS] == ["done", "done"]
    assert record["methods"]["navier-stokes"]["options"] == {"radius": 5}
    assert record["metrics"] == ["psnr", "ssim", "grad"] and record["seed"] == 3
    for method in METHODS:
        assert len(list((reference / "predictions" / method).glob("*.png"))) == len(SAMPLE_IMAGES)
        summary = json.loads((reference / "runs" / method / "summary.json").read_text())
        assert summary["method"] == method and summary["n"] == len(SAMPLE_IMAGES)
        assert summary["protocol"] == "asuka" and set(summary["metrics"]) == {"psnr", "ssim", "grad"}
        assert "== " + method in (reference / "logs" / f"{method}.log").read_text()
    assert (reference / "skipped.csv").read_text() == "name,method,status,reason\n"
    written_at = str(reference.with_name("study"))
    assert not [name for name, data in study_files(reference).items() if written_at.encode() in data]
    assert record["tables"]["built"] == {"classical": ["classical.csv", "classical.md", "classical.tex"]}
    table = (reference / "tables" / "classical.md").read_text()
    telea = json.loads((reference / "runs" / "telea" / "summary.json").read_text())["metrics"]
    assert "Telea" in table and "Navier-Stokes" in table and f"{telea['psnr']:.3f}" in table


def test_failed_method_is_reported_others_finish_and_resume_gives_identical_files(reference, same_path, sample,
                                                                                   config, monkeypatch):
    out = same_path
    original = baselines.opencv.OpenCVInpaint.inpaint_one
    calls = []

    def failing(self, image, mask, seed):
        if self.name == "navier-stokes":
            calls.append(seed)
            if len(calls) > 3:
                raise RuntimeError("simulated crash")
        return original(self, image, mask, seed)

    monkeypatch.setattr(baselines.opencv.OpenCVInpaint, "inpaint_one", failing)
    lines = []
    record = reproduce(config, sample, out, report=lines.append)
    assert exit_code(record) == 1
    assert record["methods"]["telea"]["status"] == "done"
    failed = record["methods"]["navier-stokes"]
    assert failed["status"] == "failed" and "simulated crash" in failed["reason"] and "logs/navier-stokes.log" in failed["reason"]
    assert "Traceback" in (out / "logs" / "navier-stokes.log").read_text()
    assert len(list((out / "predictions" / "navier-stokes").glob("*.png"))) == 3
    assert "navier-stokes,navier-stokes,failed," in (out / "skipped.csv").read_text()

    monkeypatch.setattr(baselines.opencv.OpenCVInpaint, "inpaint_one", original)
    with pytest.raises(MisatoError, match="--resume"):
        reproduce(config, sample, out)
    lines = []
    record = reproduce(config, sample, out, resume=True, report=lines.append)
    assert exit_code(record) == 0
    assert "telea: done (predictions reused, evaluation reused)" in lines
    assert "navier-stokes: done (predictions computed, evaluation computed)" in lines
    assert json.loads((out / "predictions" / "navier-stokes" / "run.json").read_text())["computed"] == 5
    assert study_files(out) == study_files(reference)


def test_study_of_one_method_resumed_with_both_gives_identical_files(reference, same_path, sample, config):
    out = same_path
    record = reproduce(config, sample, out, methods=["telea"], report=lambda line: None)
    assert record["methods"]["navier-stokes"]["status"] == "not selected"
    assert not (out / "predictions" / "navier-stokes").exists()
    reproduce(config, sample, out, resume=True, report=lambda line: None)
    assert study_files(out) == study_files(reference)


def test_changed_predictions_redo_only_their_evaluation(reference, sample, config, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(reference, out)
    untouched = (out / "runs" / "navier-stokes" / "summary.json").stat().st_mtime_ns
    write_image(out / "predictions" / "telea" / "0000.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    lines = []
    reproduce(config, sample, out, resume=True, report=lines.append)
    assert "telea: done (predictions reused, evaluation redone)" in lines
    assert "navier-stokes: done (predictions reused, evaluation reused)" in lines
    assert (out / "runs" / "navier-stokes" / "summary.json").stat().st_mtime_ns == untouched
    before = (reference / "runs" / "telea" / "per_image.csv").read_text().splitlines()
    after = (out / "runs" / "telea" / "per_image.csv").read_text().splitlines()
    assert before[0] == after[0] and before[2:] == after[2:] and before[1] != after[1]  # only image 0000 changed


def test_resume_refuses_other_options_or_other_data(reference, sample, config, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(reference, out)
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("radius = 5", "radius = 2").replace('"classical.toml"', f'"{config.parent}/classical.toml"'))
    with pytest.raises(MisatoError, match=r"other settings \(options of navier-stokes\)"):
        reproduce(other, sample, out, resume=True)
    data = tmp_path / "data"
    shutil.copytree(sample, data)
    study = tmp_path / "study-on-copy"
    reproduce(config, data, study, methods=["telea"], report=lambda line: None)
    write_image(data / "image" / "0000.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    with pytest.raises(MisatoError, match=r"other settings \(data_sha256\)"):
        reproduce(config, data, study, resume=True)


def test_parallel_study_matches_the_serial_one(reference, same_path, sample, config):
    out = same_path
    record = reproduce(config, sample, out, jobs=2, report=lambda line: None)
    assert exit_code(record) == 0
    assert study_files(out) == study_files(reference)


def test_printed_commands_then_tables_only_give_the_study_files(reference, sample, config, tmp_path, capsys):
    """The cluster recipe of docs/reproduce.md: the `misato inpaint` / `misato evaluate` lines `--print-commands`
    gives, run as separate jobs, then `misato reproduce --tables-only`: the same predictions, runs and tables."""
    study = tmp_path / "study"
    assert main(["reproduce", "--config", str(config), "--data", str(sample), "--out", str(study),
                 "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["inpaint", "evaluate"] * 2 and not study.exists()
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0
    assert main(["reproduce", "--config", str(config), "--out", str(study), "--tables-only"]) == 0
    made, expected = study_files(study), study_files(reference)
    assert made == {name: data for name, data in expected.items() if name.startswith(("predictions/", "runs/",
                                                                                        "tables/"))}


def test_tables_only_reports_a_table_it_cannot_build(config, tmp_path):
    (tmp_path / "study" / "runs" / "telea").mkdir(parents=True)  # not an evaluation run
    record = reproduce(config, out=tmp_path / "study", tables_only=True)
    assert list(record["tables"]["failed"]) == ["classical"] and exit_code(record) == 1
    with pytest.raises(MisatoError, match="--tables-only"):
        reproduce(config, out=tmp_path / "elsewhere", tables_only=True)


def test_paper_config_says_why_each_method_cannot_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    config = load_config(paper_config())
    assert config.protocol == "asuka" and {"1", "2", "3", "4", "flux", "clip"} <= set(config.tables)
    reasons = {name: "; ".join(not_ready_reasons(entry, explicit=False, cuda=False))
               for name, entry in config.methods.items()}
    assert all(reasons.values()), reasons
    assert "co-mod-gan-places2-050000_net_G_ema.pth" in reasons["comod"] and GPU_RULE in reasons["comod"]
    assert "big-lama.pt" in reasons["lama"] and GPU_RULE not in reasons["lama"]  # LaMa runs on a CPU
    assert "--set asuka.model=PATH" in reasons["asuka"] and "prompt_embeds" in reasons["sd-prompt"]
    assert GPU_RULE not in "; ".join(not_ready_reasons(config.methods["comod"], explicit=True, cuda=False))
    assert GPU_RULE not in "; ".join(not_ready_reasons(config.methods["comod"], explicit=False, cuda=True))
    model = tmp_path / "asuka-model"
    model.mkdir()
    given = load_config(paper_config(), [f"asuka.model={model}"]).methods["asuka"]
    assert given.options["model"] == str(model) and not_ready_reasons(given, explicit=True, cuda=False) == []


def test_paper_config_on_the_demo_sample_tabulates_the_classical_methods_per_domain_and_hole_ratio(sample, tmp_path):
    lines = []
    record = reproduce(paper_config(), sample, tmp_path / "study", methods=list(METHODS), report=lines.append)
    assert exit_code(record) == 0, lines
    assert set(record["tables"]["built"]) == {"domain", "mask_ratio"}
    table = (tmp_path / "study" / "tables" / "mask_ratio.csv").read_text()
    assert ",telea," in table and ",navier-stokes," in table


def test_paper_config_names_every_run_of_the_paper_tables():
    from results.mapping import shipped_mapping

    config = load_config(paper_config())
    for table in ("1", "2", "3", "4", "flux"):
        runs = {row.run for section in shipped_mapping(table).sections for row in section.rows if "/" not in row.run}
        assert runs <= set(config.methods), (table, runs - set(config.methods))


@pytest.mark.parametrize("change, message", [
    (("[study]", "[study]\ncolour = 1"), r"\[study\]: unknown key\(s\) colour"),
    (('metrics = ["psnr", "ssim", "grad"]\nbatch_size', 'metrics = ["psnr", "bleu"]\nbatch_size'), "unknown metrics"),
    (("batch_size = 4", "batch_size = 4\nids_pca = -3"), "ids_pca must be a positive integer"),
    (('mappings = ["classical.toml"]', 'build = ["9"]'), "unknown table '9'"),
    (('mappings = ["classical.toml"]', 'build = ["1"]'), "table 1 .* needs metrics lpips, fid, uids, pids"),
    (('mappings = ["classical.toml"]', 'mappings = ["comod.toml"]'), "table comod .* is measured with protocol comod"),
    (("[methods.telea]", "[methods.telea]\nrequires = ['model']"), "requires model, which method telea does not take"),
    (("radius = 5", "radius = 5, colour = 'red'"), "takes no --colour"),
    (("radius = 5", "radius = 'wide'"), r"\[methods.navier-stokes\]: option radius must be int, got 'wide'"),
    (("[methods.telea]", '[methods."../../x"]\nmethod = "telea"'), r"the name '\.\./\.\./x' names the study's folders"),
    (("[methods.telea]", '[methods.Navier-Stokes]\nmethod = "telea"'), r"'Navier-Stokes' and 'navier-stokes' differ only in case"),
    (("[methods.telea]", '[methods."sd.v2"]\nmethod = "telea"'), r"the name 'sd\.v2' .* letters, digits, '_' and '-' only"),
])
def test_config_mistakes_name_the_file_and_the_key(tmp_path, change, message):
    (tmp_path / "comod.toml").write_text(MAPPING.replace('protocol = "asuka"', 'protocol = "comod"'))
    (tmp_path / "classical.toml").write_text(MAPPING)
    path = tmp_path / "study.toml"
    path.write_text(CONFIG.replace(*change))
    with pytest.raises(MisatoError, match=message) as error:
        load_config(path)
    assert str(error.value).count(str(path)) == 1, error.value  # one "FILE [methods.X]:" prefix


def test_overwrite_replaces_only_what_a_study_wrote(reference, sample, config, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(reference, out)
    mine = {"notes.txt": b"kept", "runs/telea/notes.txt": b"kept"}  # a user's files, also beside the jobs' files
    for name, data in mine.items():
        (out / name).write_bytes(data)
    (out / "predictions" / "telea" / "0000.png").unlink()
    record = reproduce(config, sample, out, overwrite=True, report=lambda line: None)
    assert exit_code(record) == 0
    assert study_files(out) == {**study_files(reference), **mine}
    # a user's file where a job writes is never deleted: that job refuses its folder, naming it
    (out / "predictions" / "telea" / "notes.txt").write_bytes(b"kept")
    record = reproduce(config, sample, out, overwrite=True, report=lambda line: None)
    assert record["methods"]["telea"]["status"] == "failed" and record["methods"]["navier-stokes"]["status"] == "done"
    assert f"{out / 'predictions' / 'telea'} is not empty" in record["methods"]["telea"]["reason"]
    assert (out / "predictions" / "telea" / "notes.txt").read_bytes() == b"kept"


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("misato reproduce: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line(sample, config, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG + "\n[methods.magic]\n")
    assert "unknown method 'magic'" in one_line_error(capsys, ["reproduce", "--config", str(bad), "--data", str(sample),
                                                               "--out", str(tmp_path / "s")])
    bad.write_text(CONFIG.replace("radius = 5", "radius = 'wide'"))
    assert "radius must be int" in one_line_error(capsys, ["reproduce", "--config", str(bad), "--data", str(sample),
                                                           "--out", str(tmp_path / "s")])
    assert "not a MISATO root" in one_line_error(capsys, ["reproduce", "--config", str(config), "--data",
                                                          str(sample / "image"), "--out", str(tmp_path / "s")])
    assert "lies inside the input folder" in one_line_error(capsys, ["reproduce", "--config", str(config), "--data",
                                                                     str(sample), "--out", str(sample / "study")])
    assert "--methods" in one_line_error(capsys, ["reproduce", "--config", str(config), "--data", str(sample), "--out",
                                                  str(tmp_path / "s"), "--methods", "telea,nope"])
    assert "NAME.OPTION=VALUE" in one_line_error(capsys, ["reproduce", "--config", str(config), "--data", str(sample),
                                                          "--out", str(tmp_path / "s"), "--set", "telea"])
    for argv, message in [
        (["--methods", "telea,telea"], "--methods: telea named more than once"),
        (["--methods", ","], "--methods: no method named"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--set", "telea.colour=red"], "--set telea.colour=red: method telea takes no option colour"),
        (["--set", "lama.model=/x"], "--set lama.model=/x: the config has no method 'lama'"),
    ]:
        assert message in one_line_error(capsys, ["reproduce", "--config", str(config), "--data", str(sample),
                                                  "--out", str(tmp_path / "s"), *argv])
    assert not (sample / "study").exists() and not (tmp_path / "s").exists()


def test_overwrite_with_a_bad_argument_deletes_nothing(reference, sample, config, tmp_path, capsys):
    out = tmp_path / "study"
    shutil.copytree(reference, out)
    one_line_error(capsys, ["reproduce", "--config", str(config), "--data", str(sample), "--out", str(out),
                            "--overwrite", "--methods", "telea,telea"])
    assert study_files(out) == study_files(reference)


def test_a_study_killed_mid_run_resumes_to_identical_files(reference, same_path, sample, config):
    """SIGKILL (no cleanup at all) as soon as the first method's run.json appears, then --resume."""
    out = same_path
    command = [sys.executable, "-m", "misato", "reproduce", "--config", str(config), "--data", str(sample), "--out",
               str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "predictions" / "telea" / "run.json").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the study never started its first method"
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()
    assert not (out / "tables").exists()  # killed before the end
    record = reproduce(config, sample, out, resume=True, report=lambda line: None)
    assert exit_code(record) == 0
    assert study_files(out) == study_files(reference)
