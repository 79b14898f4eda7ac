import json

import numpy as np
import pytest

from baselines import create_method, run_method
from misato.errors import MisatoError
from misato.io import list_images, read_image, read_mask
from tests.helpers import write_misato_folder


def test_telea_fills_holes_and_keeps_size(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=3, size=48)
    record = run_method(create_method("telea"), data, tmp_path / "pred", progress=False)
    assert record["complete"] and record["method"] == "telea"
    outputs = list_images(tmp_path / "pred")
    assert sorted(outputs) == ["0000", "0001", "0002"]
    for name, path in outputs.items():
        pred, gt = read_image(path), read_image(data / "image" / f"{name}.png")
        hole = read_mask(data / "mask" / f"{name}.png")
        assert pred.shape == gt.shape
        np.testing.assert_array_equal(pred[~hole], gt[~hole])  # Telea keeps known pixels


def test_refuses_to_overwrite_and_resumes(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=3, size=32)
    out = tmp_path / "pred"
    run_method(create_method("telea"), data, out, progress=False)
    with pytest.raises(MisatoError, match="run recorded as complete"):
        run_method(create_method("telea"), data, out, progress=False)
    first = (out / "0001.png").read_bytes()
    # simulate a kill: incomplete record, one output missing
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "complete": False}))
    (out / "0001.png").unlink()
    with pytest.raises(MisatoError, match="--resume"):
        run_method(create_method("telea"), data, out, progress=False)
    run_method(create_method("telea"), data, out, resume=True, progress=False)
    assert (out / "0001.png").read_bytes() == first


def test_output_inside_input_is_refused(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=32)
    with pytest.raises(MisatoError, match="inside the input"):
        run_method(create_method("telea"), data, data / "image" / "out", progress=False)


def test_unknown_method():
    with pytest.raises(MisatoError, match="available"):
        create_method("nope")


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=32)
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "precious.txt").write_text("keep me")
    with pytest.raises(MisatoError, match="holds no run.json"):
        run_method(create_method("telea"), data, keep, overwrite=True, progress=False)
    assert (keep / "precious.txt").read_text() == "keep me"


def test_resume_refuses_another_method_and_bad_limits(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=3, size=32)
    out = tmp_path / "pred"
    run_method(create_method("telea"), data, out, limit=1, progress=False)
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "complete": False}))
    with pytest.raises(MisatoError, match=r"other settings \(method"):
        run_method(create_method("navier-stokes"), data, out, resume=True, progress=False)
    with pytest.raises(MisatoError, match="--limit must be at least 1"):
        run_method(create_method("telea"), data, tmp_path / "other", limit=-1, progress=False)
    (out / "run.json").write_text("{broken")
    with pytest.raises(MisatoError, match="damaged"):
        run_method(create_method("telea"), data, out, resume=True, progress=False)


class _Counting:
    """Wraps a method and records which images it was asked to inpaint."""

    def __init__(self, method):
        self.method, self.seen = method, []
        self.name = method.name

    def describe(self):
        return self.method.describe()

    def inpaint(self, images, masks, seeds):
        self.seen.append(len(images))
        return self.method.inpaint(images, masks, seeds)


def test_resume_fills_in_outputs_deleted_from_a_complete_run(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=4, size=32)
    out = tmp_path / "pred"
    run_method(create_method("telea"), data, out, progress=False)
    reference = {p.name: p.read_bytes() for p in out.glob("*.png")}
    (out / "0001.png").unlink()
    (out / "0003.png").unlink()
    counting = _Counting(create_method("telea"))
    record = run_method(counting, data, out, resume=True, progress=False)
    assert sum(counting.seen) == 2 and record["computed"] == 2 and record["complete"]
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == reference
    again = _Counting(create_method("telea"))
    assert run_method(again, data, out, resume=True, progress=False)["computed"] == 0 and again.seen == []


def test_a_limited_trial_run_is_extended_with_resume(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=5, size=32)
    full = tmp_path / "full"
    run_method(create_method("telea"), data, full, progress=False)
    out = tmp_path / "pred"
    trial = run_method(create_method("telea"), data, out, limit=2, progress=False)
    assert trial["complete"] and trial["n_images"] == 2 and sorted(list_images(out)) == ["0000", "0001"]
    with pytest.raises(MisatoError, match="holds a run recorded as complete; pass --resume"):
        run_method(create_method("telea"), data, out, limit=4, progress=False)
    counting = _Counting(create_method("telea"))
    assert run_method(counting, data, out, limit=4, resume=True, progress=False)["n_images"] == 4
    assert sum(counting.seen) == 2
    counting = _Counting(create_method("telea"))
    record = run_method(counting, data, out, resume=True, progress=False)
    assert sum(counting.seen) == 1 and record["n_images"] == 5 and record["limit"] is None
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == {p.name: p.read_bytes() for p in full.glob("*.png")}


def test_overwrite_deletes_only_what_a_run_wrote(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=32)
    out = tmp_path / "pred"
    run_method(create_method("telea"), data, out, progress=False)
    (out / "notes.txt").write_text("the user's")
    (out / "9999.png").write_bytes(b"stale output of an earlier, larger run")
    record = run_method(create_method("navier-stokes"), data, out, overwrite=True, progress=False)
    assert record["method"] == "navier-stokes" and (out / "notes.txt").read_text() == "the user's"
    assert sorted(p.name for p in out.glob("*.png")) == ["0000.png", "0001.png"]
    assert set(record["provenance"]) == {"misato_version", "python", "packages"}
    assert json.loads((out / "run.json").read_text()) == record
    with pytest.raises(MisatoError, match="either --resume or --overwrite"):
        run_method(create_method("telea"), data, out, overwrite=True, resume=True, progress=False)


def test_resume_with_other_data_is_refused_naming_what_differs(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=3, size=32)
    out = tmp_path / "pred"
    record = run_method(create_method("telea"), data, out, limit=1, progress=False)
    assert record["data"] == str(data.resolve()) and record["data_files"]["n_pairs"] == 3
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = write_misato_folder(tmp_path / "other", n=3, size=32, seed=5)  # same names, other pixels
    with pytest.raises(MisatoError, match=f"other data: the image folder is {other.resolve() / 'image'}"):
        run_method(create_method("telea"), other, out, resume=True, progress=False)
    write_misato_folder(data, n=4, size=32)  # one pair more (and the first three rewritten)
    with pytest.raises(MisatoError, match=r"names differ \(4 pairs now, 3 in the run\)"):
        run_method(create_method("telea"), data, out, resume=True, progress=False)
    (data / "image" / "0003.png").unlink()
    (data / "mask" / "0003.png").unlink()
    with pytest.raises(MisatoError, match="the images or masks were changed"):
        run_method(create_method("telea"), data, out, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written by the refused runs
    older = {key: value for key, value in record.items() if key != "data_files"}  # a record of an older version
    (out / "run.json").write_text(json.dumps(older))
    with pytest.raises(MisatoError, match=f"other data: --data is {other.resolve()}"):
        run_method(create_method("telea"), other, out, resume=True, progress=False)


def test_resume_with_a_smaller_limit_is_refused_and_deletes_nothing(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=5, size=32)
    out = tmp_path / "pred"
    run_method(create_method("telea"), data, out, limit=4, progress=False)
    with pytest.raises(MisatoError, match=r"2 output\(s\) this run \(--limit 2\) would not list: 0002, 0003"):
        run_method(create_method("telea"), data, out, limit=2, resume=True, progress=False)
    assert sorted(list_images(out)) == ["0000", "0001", "0002", "0003"]
    assert json.loads((out / "run.json").read_text())["limit"] == 4
    assert run_method(create_method("telea"), data, out, limit=4, resume=True, progress=False)["computed"] == 0


@pytest.mark.parametrize("batch_size", [1, 3])
def test_output_files_are_the_level_1_rle_png_of_each_image_s_result(tmp_path, batch_size):
    """More images than the runner reads ahead or holds for writing: every file holds the bytes OpenCV's PNG
    encoder (zlib level 1, run-length strategy) gives for the method's result on that very image."""
    import cv2

    from baselines.base import image_seed
    from baselines.runner import IO_DEPTH

    n = 2 * IO_DEPTH + 3
    data = write_misato_folder(tmp_path / "data", n=n, size=40)
    method = create_method("telea")
    run_method(method, data, tmp_path / "pred", seed=5, batch_size=batch_size, progress=False)
    for index in range(n):
        name = f"{index:04d}"
        result = method.inpaint_one(read_image(data / "image" / f"{name}.png"),
                                    read_mask(data / "mask" / f"{name}.png"), image_seed(5, name))
        expected = cv2.imencode(".png", result[..., ::-1].copy(), [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])[1].tobytes()
        assert (tmp_path / "pred" / f"{name}.png").read_bytes() == expected, name


def test_an_unreadable_image_stops_the_run_after_the_images_before_it(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=14, size=32)
    (data / "image" / "0006.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    with pytest.raises(MisatoError, match="0006.png: cannot decode"):
        run_method(create_method("telea"), data, out, progress=False)
    assert sorted(list_images(out)) == [f"{index:04d}" for index in range(6)]
    assert not json.loads((out / "run.json").read_text())["complete"]
    assert not list(out.glob(".*.tmp"))


def test_a_run_refused_before_any_output_leaves_nothing_that_blocks_the_fixed_rerun(tmp_path):
    data = write_misato_folder(tmp_path / "data", n=3, size=32)
    good = (data / "image" / "0000.png").read_bytes()
    (data / "image" / "0000.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    with pytest.raises(MisatoError, match="0000.png: cannot decode"):
        run_method(create_method("telea"), data, out, progress=False)
    assert not out.exists()  # made by the run, empty: removed
    out.mkdir()
    with pytest.raises(MisatoError, match="0000.png: cannot decode"):
        run_method(create_method("telea"), data, out, progress=False)
    assert out.is_dir() and not any(out.iterdir())  # the user's folder stays
    (data / "image" / "0000.png").write_bytes(good)
    assert run_method(create_method("telea"), data, out, progress=False)["complete"]  # no --resume, no --overwrite
