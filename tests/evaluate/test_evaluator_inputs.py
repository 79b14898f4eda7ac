"""The folder evaluator on the metrics that need no network: exact values, outputs, and bad input."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evaluate import evaluate_folder
from evaluate.functional import composite, grad_error, psnr, ssim
from misato.cli import main
from misato.errors import MisatoError
from misato.io import read_image, read_mask_uint8, write_image
from tests.helpers import write_misato_folder, write_predictions

CPU = "psnr,ssim,grad"


@pytest.fixture
def data(tmp_path):
    gt = write_misato_folder(tmp_path / "gt", names=["0003", "0510", "1020", "1999"], size=48)
    pred = write_predictions(gt, tmp_path / "pred")
    return gt, pred


def test_rows_equal_the_functional_metrics_on_composites(data, tmp_path):
    gt, pred = data
    result = evaluate_folder(pred, gt, tmp_path / "run", metrics=CPU, progress=False)
    assert [r["name"] for r in result.rows] == ["0003", "0510", "1020", "1999"]
    for row in result.rows:
        g = read_image(gt / "image" / f"{row['name']}.png")
        p = read_image(pred / f"{row['name']}.png")
        m = read_mask_uint8(gt / "mask" / f"{row['name']}.png")
        assert row["psnr"] == psnr(composite(p, g, m), g)
        assert row["ssim"] == ssim(composite(p, g, m), g)
        assert row["grad"] == grad_error(p, g, m)
    assert [r["domain"] for r in result.rows] == ["landscape", "indoor", "building", "background"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result.rows]))
    assert summary["n"] == 4 and summary["protocol"] == "asuka" and summary["version"]
    table = pd.read_csv(tmp_path / "run" / "per_image.csv", dtype={"name": str})
    assert list(table.columns) == ["name", "psnr", "ssim", "grad", "mask_ratio", "domain"]
    assert set(summary["by_domain"]) == {"landscape", "indoor", "building", "background"}


def test_file_order_does_not_matter(data, tmp_path):
    gt, pred = data
    first = evaluate_folder(pred, gt, metrics=CPU, progress=False)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for path in sorted(pred.iterdir(), reverse=True):  # different creation order
        shutil.copy(path, shuffled / path.name)
    second = evaluate_folder(shuffled, gt, metrics=CPU, batch_size=3, progress=False)
    assert first.rows == second.rows


def test_workers_give_identical_rows(data):
    gt, pred = data
    assert evaluate_folder(pred, gt, metrics=CPU, progress=False).rows == evaluate_folder(
        pred, gt, metrics=CPU, workers=2, batch_size=2, progress=False
    ).rows


def test_missing_and_extra_predictions_are_listed(data):
    gt, pred = data
    (pred / "0510.png").unlink()
    write_image(pred / "7777.png", np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(MisatoError, match=r"0510.*7777"):
        evaluate_folder(pred, gt, metrics=CPU, progress=False)


def test_size_mismatch_names_the_file(data):
    gt, pred = data
    write_image(pred / "1020.png", np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(MisatoError, match=r"1020.png: 48x40, ground truth is 48x48"):
        evaluate_folder(pred, gt, metrics=CPU, progress=False)


def test_corrupt_prediction_is_reported_without_traceback(data, capsys, tmp_path):
    gt, pred = data
    (pred / "0003.png").write_bytes((pred / "0003.png").read_bytes()[:100])
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "r"), "--metrics", CPU])
    err = capsys.readouterr().err
    assert code == 2 and "0003.png" in err and "Traceback" not in err


def test_rgba_prediction_with_transparency_is_refused(data):
    gt, pred = data
    rgba = np.concatenate([read_image(pred / "0003.png"), np.full((48, 48, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba).save(pred / "0003.png")
    with pytest.raises(MisatoError, match="0003.png.*transparent"):
        evaluate_folder(pred, gt, metrics=CPU, progress=False)


def test_zero_one_mask_is_refused(data):
    gt, pred = data
    Image.fromarray(np.ones((48, 48), np.uint8)).save(gt / "mask" / "0003.png")
    with pytest.raises(MisatoError, match="0/1"):
        evaluate_folder(pred, gt, metrics=CPU, progress=False)


def test_inputs_are_not_modified_and_output_placement(data, tmp_path):
    gt, pred = data
    before = {p: p.read_bytes() for p in sorted(gt.rglob("*")) + sorted(pred.rglob("*")) if p.is_file()}
    with pytest.raises(MisatoError, match="inside the input"):
        evaluate_folder(pred, gt, pred / "run", metrics=CPU, progress=False)
    with pytest.raises(MisatoError, match="ground-truth image folder"):
        evaluate_folder(gt / "image", gt, tmp_path / "r", metrics=CPU, progress=False)
    evaluate_folder(pred, gt, tmp_path / "r", metrics=CPU, progress=False)
    with pytest.raises(MisatoError, match="--overwrite"):
        evaluate_folder(pred, gt, tmp_path / "r", metrics=CPU, progress=False)
    evaluate_folder(pred, gt, tmp_path / "r", metrics=CPU, progress=False, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "per_image.csv").write_text("my own table\n")  # not a run, but a file the run would replace
    with pytest.raises(MisatoError, match="per_image.csv but no summary.json; pass --overwrite"):
        evaluate_folder(pred, gt, tmp_path / "mine", metrics=CPU, progress=False)
    assert (tmp_path / "mine" / "per_image.csv").read_text() == "my own table\n"
    after = {p: p.read_bytes() for p in sorted(gt.rglob("*")) + sorted(pred.rglob("*")) if p.is_file()}
    assert before == after


def test_empty_prediction_folder_and_unknown_metric(data, tmp_path):
    gt, _ = data
    (tmp_path / "empty").mkdir()
    with pytest.raises(MisatoError, match="holds no"):
        evaluate_folder(tmp_path / "empty", gt, metrics=CPU, progress=False)
    with pytest.raises(MisatoError, match="unknown metrics"):
        evaluate_folder(tmp_path / "empty", gt, metrics="psnr,bogus", progress=False)


def test_mask_ratio_bins(data):
    from evaluate.evaluator import mask_ratio_bin

    assert [mask_ratio_bin(r) for r in (0.0, 0.099, 0.1, 0.55, 0.6, 0.95)] == [
        "0-10%", "0-10%", "10-20%", "50-60%", "60%+", "60%+",
    ]


def test_cuda_without_a_device_is_a_clear_error(data):
    gt, pred = data
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MisatoError, match="no CUDA device"):
        evaluate_folder(pred, gt, metrics=CPU, device="cuda", progress=False)


def _grey(path):
    """Rewrite a 0/255 mask file with grey edges (what a blurred or resized mask looks like)."""
    from scipy.ndimage import uniform_filter

    values = np.asarray(Image.open(path), dtype=np.float64)
    Image.fromarray(np.rint(uniform_filter(values, 3)).astype(np.uint8)).save(path)


def test_clean_masks_give_no_mask_warning_and_zero_counts(data):
    import warnings

    from evaluate import MaskWarning

    gt, pred = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaskWarning)
        summary = evaluate_folder(pred, gt, metrics=CPU, progress=False).summary
    assert summary["soft_masks"] == 0 and summary["masks_without_hole"] == 0


def test_grey_masks_give_one_warning_naming_the_files(data, tmp_path):
    from evaluate import MaskWarning

    gt, pred = data
    for name in ("0510", "1999"):
        _grey(gt / "mask" / f"{name}.png")
    with pytest.warns(MaskWarning) as caught:
        result = evaluate_folder(pred, gt, tmp_path / "run", metrics=CPU, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, MaskWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("2 of 4 masks are not binary")
    assert str(gt / "mask" / "0510.png") in messages[0] and str(gt / "mask" / "1999.png") in messages[0]
    assert "0003.png" not in messages[0] and "Grad" in messages[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["soft_masks"] == 2
    grey = read_mask_uint8(gt / "mask" / "0510.png")  # Grad used the grey values, as documented
    row = next(r for r in result.rows if r["name"] == "0510")
    p, g = read_image(pred / "0510.png"), read_image(gt / "image" / "0510.png")
    assert row["grad"] == grad_error(p, g, grey) != grad_error(p, g, (grey >= 128).astype(np.uint8) * 255)


def test_a_mask_without_hole_is_warned_about_and_counted(data, tmp_path):
    from evaluate import MaskWarning

    gt, pred = data
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(gt / "mask" / "1020.png")
    with pytest.warns(MaskWarning, match=r"1 of 4 masks have no hole: .*1020\.png.*PSNR 70") as caught:
        result = evaluate_folder(pred, gt, tmp_path / "run", metrics=CPU, progress=False)
    assert len([w for w in caught if issubclass(w.category, MaskWarning)]) == 1
    row = next(r for r in result.rows if r["name"] == "1020")
    assert row["psnr"] == pytest.approx(70.0) and row["ssim"] == 1.0 and row["grad"] == 0.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["masks_without_hole"] == 1 and summary["soft_masks"] == 0


def test_mask_warnings_list_the_first_five_and_the_count(tmp_path):
    from evaluate import InpaintingMetrics, MaskWarning

    rng = np.random.default_rng(0)
    gt = torch_from(rng.integers(0, 256, (7, 3, 16, 16)))
    pred = torch_from(rng.integers(0, 256, (7, 3, 16, 16)))
    mask = np.full((7, 1, 16, 16), 0.25)  # → 64: grey, and below the 128 threshold, so no hole either
    mask[:, :, :4] = 0.0
    scorer = InpaintingMetrics(metrics="psnr,grad")
    scorer.update(pred, gt, __import__("torch").from_numpy(mask), names=[f"im{i}" for i in range(7)])
    with pytest.warns(MaskWarning) as caught:
        summary = scorer.compute().summary
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, MaskWarning))
    assert len(messages) == 2
    assert messages[0].startswith("7 of 7 masks are not binary (grey values between 0 and 255): im0, im1, im2, im3, "
                                  "im4, … (+2 more)")
    assert messages[1].startswith("7 of 7 masks have no hole: im0, im1, im2, im3, im4, … (+2 more)")
    assert summary["soft_masks"] == 7 and summary["masks_without_hole"] == 7


def torch_from(values):
    import torch

    return torch.from_numpy(values.astype(np.uint8))


def test_cli_prints_mask_warnings_as_one_line(data, capsys, tmp_path):
    gt, pred = data
    _grey(gt / "mask" / "0003.png")
    code = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "r"), "--metrics", CPU])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert code == 0 and len(lines) == 1
    assert lines[0].startswith("misato evaluate: warning: 1 of 4 masks are not binary") and "0003.png" in lines[0]
    assert "warnings.warn" not in err and "MaskWarning" not in err
