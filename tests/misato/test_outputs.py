import json

import pytest

from misato.errors import MisatoError
import importlib
import re
from pathlib import Path

from misato.outputs import JOB_POLICIES, OutputPolicy, check_not_owned_by_job, check_output_location, prepare_output

POLICY = OutputPolicy(what="job", markers=("job.json", ".state/settings.json"), owned=("*.png", "job.json", ".state"))


def test_fresh_folders_and_foreign_content(tmp_path):
    assert prepare_output(tmp_path / "new", POLICY) is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("")  # hidden files the job does not own do not count
    assert prepare_output(tmp_path / "empty", POLICY) is None
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.png").write_text("user's")
    for options in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(MisatoError, match="is not empty and holds no job.json; choose another folder"):
            prepare_output(foreign, POLICY, **options)
    assert (foreign / "a.png").read_text() == "user's"
    (tmp_path / "file").write_text("")
    with pytest.raises(MisatoError, match="exists and is not a folder"):
        prepare_output(tmp_path / "file", POLICY)
    with pytest.raises(MisatoError, match="either --resume or --overwrite"):
        prepare_output(tmp_path / "new", POLICY, resume=True, overwrite=True)


def test_complete_and_unfinished_jobs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "0.png").write_text("")
    (out / "job.json").write_text(json.dumps({"seed": 1}))  # first marker, no flag: complete
    with pytest.raises(MisatoError, match="holds a job recorded as complete; pass --resume to continue or complete it or "
                                          "--overwrite to replace it, or choose another folder"):
        prepare_output(out, POLICY)
    previous = prepare_output(out, POLICY, resume=True)
    assert previous.complete and previous.record == {"seed": 1} and previous.marker == out / "job.json"
    (out / "job.json").unlink()
    (out / ".state").mkdir()
    (out / ".state" / "settings.json").write_text("{}")  # a later marker: unfinished
    with pytest.raises(MisatoError, match="holds an unfinished job"):
        prepare_output(out, POLICY)
    assert not prepare_output(out, POLICY, resume=True).complete
    (out / ".state" / "settings.json").write_text("{broken")
    with pytest.raises(MisatoError, match="damaged"):
        prepare_output(out, POLICY, resume=True)
    no_options = OutputPolicy(what="demo", markers=("job.json",), owned=("job.json",), can_resume=False,
                              can_overwrite=False)
    (out / "job.json").write_text(json.dumps({"complete": False}))
    with pytest.raises(MisatoError, match="holds an unfinished demo; choose another folder$"):
        prepare_output(out, no_options)


def test_overwrite_deletes_only_what_the_job_owns(tmp_path):
    out = tmp_path / "out"
    (out / ".state").mkdir(parents=True)
    (out / ".state" / "plan.json").write_text("{}")
    for name in ("0.png", "1.png", "job.json", ".0.png.x1.tmp"):
        (out / name).write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert prepare_output(out, POLICY, overwrite=True) is None
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_overwrite_never_deletes_behind_a_linked_folder(tmp_path):
    """A deep pattern (``runs/*/summary.json``) is expanded by ``glob``, which follows links: a linked sub-folder's
    files belong to wherever it points and stay, as does the link."""
    nested = OutputPolicy(what="study", markers=("study.json",), owned=("runs/*/summary.json", "study.json"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text("not the study's")
    out = tmp_path / "study"
    (out / "runs" / "a").mkdir(parents=True)
    (out / "runs" / "a" / "summary.json").write_text("{}")
    (out / "runs" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (out / "study.json").write_text("{}")
    assert prepare_output(out, nested, overwrite=True) is None
    assert (elsewhere / "summary.json").read_text() == "not the study's"
    assert (out / "runs" / "linked").is_symlink() and not (out / "runs" / "a").exists()


def test_outputs_never_on_or_inside_an_input(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for bad in (tmp_path / "in", tmp_path / "in" / "sub" / "out"):
        with pytest.raises(MisatoError, match="is the input .* itself|lies inside the input folder"):
            prepare_output(bad, POLICY, inputs=[tmp_path / "in"])
    check_output_location(tmp_path / "elsewhere", [tmp_path / "in"])


def test_outputs_never_an_input_file_and_symlinks_are_resolved(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "per_image.csv").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "run", target_is_directory=True)
    with pytest.raises(MisatoError, match="is the input .* itself"):
        check_output_location(tmp_path / "run" / "per_image.csv", [tmp_path / "run" / "per_image.csv"])
    with pytest.raises(MisatoError, match=f"lies inside the input folder {tmp_path / 'run'}"):
        check_output_location(tmp_path / "link" / "table.csv", [tmp_path / "run"])
    with pytest.raises(MisatoError, match="is the input .* itself"):
        check_output_location(tmp_path / "run", [tmp_path / "link"])
    check_output_location(tmp_path / "table.csv", [tmp_path / "run" / "per_image.csv", tmp_path / "link"])


def test_outputs_inside_what_another_job_owns_are_refused(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo.json").write_text("{}")
    for owned in (demo / "runs" / "grid", demo / "comparison.md", demo / "data" / "a" / "b"):
        with pytest.raises(MisatoError, match=f"inside {demo / owned.relative_to(demo).parts[0]}, which the demo"):
            check_not_owned_by_job(owned)
    for elsewhere in (demo / "notes" / "table.csv", demo, tmp_path / "beside"):
        check_not_owned_by_job(elsewhere)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(MisatoError, match="which the run"):
        check_not_owned_by_job(run / "0001.png")
    check_not_owned_by_job(run / "sub" / "0001.png")  # the run's --overwrite only deletes its own *.png


def test_a_training_runs_owned_paths_follow_its_stage(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"stage": "decoder"}))
    with pytest.raises(MisatoError, match="training run"):
        check_not_owned_by_job(tmp_path / "decoder" / "x")
    check_not_owned_by_job(tmp_path / "mae" / "x")
    (tmp_path / "train.json").write_text(json.dumps({"stage": "mae"}))
    with pytest.raises(MisatoError, match="training run"):
        check_not_owned_by_job(tmp_path / "mae" / "x")
    with pytest.raises(MisatoError, match="training run"):
        check_not_owned_by_job(tmp_path / "checkpoints" / "x")


def test_every_output_policy_is_listed_by_its_record_file():
    root = Path(__file__).resolve().parents[2]
    listed = {reference for references in JOB_POLICIES.values() for reference in references}
    for package in ("misato", "evaluate", "baselines", "asuka", "results"):
        for source in (root / package).rglob("*.py"):
            for name in re.findall(r"^(\w+) = OutputPolicy\(", source.read_text(), flags=re.M):
                module = ".".join(source.relative_to(root).with_suffix("").parts)
                assert f"{module}:{name}" in listed, f"{module}:{name} is missing from misato.outputs.JOB_POLICIES"
    for marker, references in JOB_POLICIES.items():
        for reference in references:
            module, name = reference.split(":")
            found = getattr(importlib.import_module(module), name)
            policy = found if isinstance(found, OutputPolicy) else found({})
            assert policy.markers[0] == marker, reference
