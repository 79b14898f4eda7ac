"""MAT: layout against the upstream architecture, strict loading of both official file formats, inference details.

End-to-end runs use the real architecture at ``img_resolution=128`` (the smallest the design allows: the
transformer always works at 64², so 128 has one encoder/decoder level fewer per stage than 512 but the same
modules); the full 512 configuration is checked for every tensor shape and the parameter count, and run end to
end in the slow tier (about a minute per forward on 2 CPU cores).
"""
from __future__ import annotations

import copy
import json
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines import mat_net
from baselines.base import create_method, get_spec, image_seed
from baselines.mat import MATInpaint
from baselines.runner import run_method
from misato.errors import MisatoError
from tests.helpers import assert_fills_the_hole, write_misato_folder

FULL_SIZE_PARAMETERS = 61_562_518
"""Parameters of Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3), counted by
:func:`upstream_shapes` from the upstream constructors (MAT's paper rounds it to 62 M)."""
BUFFER_SUFFIXES = (".resample_filter", ".noise_const", ".attn_mask", "mapping.w_avg")


def upstream_shapes(img_resolution: int) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of the upstream generator and its shape, written out from fenglinglwb/MAT's
    ``networks/mat.py`` and ``networks/basic_module.py`` constructors (independently of baselines.mat_net)."""
    log2 = int(np.log2(img_resolution))
    channels = {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512}
    shapes: dict[str, tuple[int, ...]] = {}

    def fc(p, fan_in, fan_out):
        shapes[f"{p}.weight"], shapes[f"{p}.bias"] = (fan_out, fan_in), (fan_out,)

    def conv(p, c_in, c_out, k):
        shapes.update({f"{p}.weight": (c_out, c_in, k, k), f"{p}.bias": (c_out,), f"{p}.resample_filter": (4, 4)})

    def modconv(p, c_in, c_out, k, style):
        shapes.update({f"{p}.weight": (1, c_out, c_in, k, k), f"{p}.resample_filter": (4, 4)})
        fc(f"{p}.affine", style, c_in)

    def styleconv(p, c_in, c_out, style, res, noise):
        modconv(f"{p}.conv", c_in, c_out, 3, style)
        if noise:
            shapes.update({f"{p}.noise_const": (res, res), f"{p}.noise_strength": ()})
        shapes[f"{p}.bias"] = (c_out,)

    def torgb(p, c_in, style):
        modconv(f"{p}.conv", c_in, 3, 1, style)
        shapes.update({f"{p}.bias": (3,), f"{p}.resample_filter": (4, 4)})

    first, dim = "synthesis.first_stage", 180
    conv(f"{first}.conv_first.conv", 4, dim, 3)
    for i in range(log2 - 6):
        conv(f"{first}.enc_conv.{i}.conv", dim, dim, 3)
    res = 64
    for i, (depth, ratio, window) in enumerate(zip([2, 3, 4, 3, 2], [1, .5, .5, 2, 2], [8, 16, 16, 16, 8])):
        res = int(res * ratio)
        layer = f"{first}.tran.{i}"
        if ratio != 1:
            conv(f"{layer}.downsample.conv.conv", dim, dim, 3)
        for j in range(depth):
            block = f"{layer}.blocks.{j}"
            for name in ("q", "k", "v", "proj"):
                fc(f"{block}.attn.{name}", dim, dim)
            fc(f"{block}.fuse", 2 * dim, dim)
            fc(f"{block}.mlp.fc1", dim, 2 * dim)
            fc(f"{block}.mlp.fc2", 2 * dim, dim)
            if j % 2 == 1 and res > window:  # shifted windows keep their attention mask as a buffer
                shapes[f"{block}.attn_mask"] = ((res // window) ** 2, window ** 2, window ** 2)
        conv(f"{layer}.conv.conv", dim, dim, 3)
    for i in range(4):
        conv(f"{first}.down_conv.{i}", dim, dim, 3)
    fc(f"{first}.to_style", dim, 2 * dim)
    fc(f"{first}.ws_style", 512, dim)
    fc(f"{first}.to_square", dim, 256)
    for i in range(log2 - 6):
        block = f"{first}.dec_conv.{i}"
        styleconv(f"{block}.conv0", dim, dim, 3 * dim, 2 ** (7 + i), noise=False)
        styleconv(f"{block}.conv1", dim, dim, 3 * dim, 2 ** (7 + i), noise=False)
        torgb(f"{block}.toRGB", dim, 3 * dim)
    for i in range(log2, 3, -1):
        r = 2 ** i
        block = f"synthesis.enc.EncConv_Block_{r}x{r}"
        if i == log2:
            conv(f"{block}.conv0", 7, channels[r], 1)
        else:
            conv(f"{block}.conv0", channels[2 * r], channels[r], 3)
        conv(f"{block}.conv1", channels[r], channels[r], 3)
    fc("synthesis.to_square", 512, 256)
    for i in range(3):
        conv(f"synthesis.to_style.conv.{i}", 512, 512, 3)
    fc("synthesis.to_style.fc", 512, 1024)
    style = 512 + 1024
    conv("synthesis.dec.Dec_16x16.conv0", 512, 512, 3)
    styleconv("synthesis.dec.Dec_16x16.conv1", 512, 512, style, 16, noise=True)
    torgb("synthesis.dec.Dec_16x16.toRGB", 512, style)
    for i in range(5, log2 + 1):
        r = 2 ** i
        block = f"synthesis.dec.Dec_{r}x{r}"
        styleconv(f"{block}.conv0", channels[r // 2], channels[r], style, r, noise=True)
        styleconv(f"{block}.conv1", channels[r], channels[r], style, r, noise=True)
        torgb(f"{block}.toRGB", channels[r], style)
    for i in range(8):
        fc(f"mapping.fc{i}", 512, 512)
    shapes["mapping.w_avg"] = (512,)
    return shapes


def meta_generator(img_resolution: int) -> mat_net.Generator:
    with torch.device("meta"):
        return mat_net.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=img_resolution, img_channels=3)


@pytest.mark.parametrize("img_resolution", [512, 256, 128])
def test_every_tensor_shape_matches_the_upstream_architecture(img_resolution):
    own = {k: tuple(v.shape) for k, v in meta_generator(img_resolution).state_dict().items()}
    expected = upstream_shapes(img_resolution)
    assert sorted(set(own) - set(expected)) == [] and sorted(set(expected) - set(own)) == []
    assert {k: v for k, v in own.items() if expected[k] != v} == {}


def test_full_size_parameter_count():
    generator = meta_generator(512)
    expected = upstream_shapes(512)
    counted = sum(int(np.prod(s)) for k, s in expected.items() if not k.endswith(BUFFER_SUFFIXES))
    assert counted == FULL_SIZE_PARAMETERS
    assert sum(p.numel() for p in generator.parameters()) == FULL_SIZE_PARAMETERS
    assert {k for k, _ in generator.named_buffers() if _ is not None} == {
        k for k in expected if k.endswith(BUFFER_SUFFIXES)}


def test_official_latent_is_generate_image_seed_240_and_leaves_numpy_alone():
    state = np.random.get_state()
    np.random.seed(240)
    expected = np.random.randn(1, 512)
    np.random.set_state(state)
    before = np.random.get_state()[1].copy()
    z = mat_net.official_latent()
    assert z.dtype == torch.float64 and z.shape == (1, 512)
    np.testing.assert_array_equal(z.numpy(), expected)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_bottleneck_keep_mask_draws_like_upstream_dropout():
    like = torch.empty(2, 256, 180)
    torch.manual_seed(11)
    upstream = F.dropout(torch.ones_like(like) * 0.5, training=True)
    torch.manual_seed(11)
    ours = mat_net._bottleneck_keep(like, None)
    assert torch.equal(upstream, ours)
    assert set(ours.unique().tolist()) == {0.0, 1.0}
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    assert torch.equal(mat_net._bottleneck_keep(like, g(1)), mat_net._bottleneck_keep(like, g(1)))
    assert not torch.equal(mat_net._bottleneck_keep(like, g(1)), mat_net._bottleneck_keep(like, g(2)))


def test_style_conv_noise_modes():
    torch.manual_seed(0)
    layer = mat_net.StyleConv(4, 5, style_dim=6, resolution=8)
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
    x, style = torch.randn(1, 4, 8, 8), torch.randn(1, 6)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    with torch.no_grad():
        conv = layer.conv(x, style)
        none = layer(x, style, noise_mode="none")
        const = layer(x, style, noise_mode="const")
        random_1, random_1b, random_2 = (layer(x, style, "random", g(s)) for s in (1, 1, 2))
        lrelu = lambda y: F.leaky_relu(y + layer.bias.view(1, -1, 1, 1), 0.2) * np.sqrt(2)  # noqa: E731
        torch.testing.assert_close(none, lrelu(conv))
        torch.testing.assert_close(const, lrelu(conv + 0.7 * layer.noise_const))
        noise = torch.randn([1, 1, 8, 8], generator=g(1)) * 0.7
        torch.testing.assert_close(random_1, lrelu(conv + noise))
    assert torch.equal(random_1, random_1b) and not torch.equal(random_1, random_2)


# --- files and the adapter ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_generator() -> mat_net.Generator:
    torch.manual_seed(0)
    generator = mat_net.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=128, img_channels=3)
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise_strength"):  # zero at initialisation: make the noise modes matter
                parameter.fill_(0.5)
    return generator.eval()


@pytest.fixture(scope="module")
def state_file(small_generator, tmp_path_factory):
    path = tmp_path_factory.mktemp("mat") / "Places_512_FullData_G.pth"
    torch.save(small_generator.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def adapter(state_file) -> MATInpaint:
    return MATInpaint(weights=str(state_file), img_resolution=128)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
    hole = np.zeros((100, 120), bool)
    hole[30:70, 40:95] = True
    return image, hole


@pytest.fixture(scope="module")
def runs(adapter, sample):
    image, hole = sample
    return {
        "first": adapter.inpaint_one(image, hole, 7),
        "again": adapter.inpaint_one(image, hole, 7),
        "inverted": adapter.inpaint_one(image, ~hole, 7),
    }


def test_state_dict_file_loads_strictly(adapter, small_generator):
    loaded = adapter.generator.state_dict()
    assert loaded.keys() == small_generator.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in small_generator.state_dict().items())


def test_end_to_end_known_pixels_exact_and_deterministic(runs, sample):
    image, hole = sample
    out = runs["first"]
    assert_fills_the_hole(out, image, hole)
    np.testing.assert_array_equal(out, runs["again"])


def test_end_to_end_polarity_inverted(runs, sample):
    image, hole = sample
    inverted = runs["inverted"]
    np.testing.assert_array_equal(inverted[hole], image[hole])  # what was the hole is now known, kept exactly
    assert (inverted[~hole] != image[~hole]).mean() > 0.5
    assert not np.array_equal(inverted, runs["first"])


class RecordingNetwork:
    """Stands in for the generator: records its inputs and returns a constant image."""

    z_dim = 512

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = []

    def __call__(self, images_in, masks_in, z, truncation_psi, noise_mode, generator):
        self.calls.append(dict(images_in=images_in, masks_in=masks_in, z=z, truncation_psi=truncation_psi,
                               noise_mode=noise_mode, seed=generator.initial_seed()))
        return torch.full_like(images_in, self.value)


@pytest.mark.parametrize("height,mode", [(100, "const"), (130, "random")])
def test_inputs_polarity_padding_and_paste_back(adapter, sample, height, mode):
    image, hole = sample
    image = np.concatenate([image, image])[:height]
    hole = np.concatenate([hole, hole])[:height]
    spy = copy.copy(adapter)
    spy.generator = RecordingNetwork(0.5)
    out = spy.inpaint_one(image, hole, 3)
    call = spy.generator.calls[0]
    images_in, masks_in = call["images_in"][0], call["masks_in"][0, 0]
    padded_h = 128 if height <= 128 else 256
    assert images_in.shape == (3, padded_h, 128) and masks_in.shape == (padded_h, 128)
    np.testing.assert_array_equal(masks_in[:height, :120].numpy(), (~hole).astype(np.float32))  # 1 = known
    assert bool((masks_in[height:] == 1).all()) and bool((masks_in[:, 120:] == 1).all())
    torch.testing.assert_close(images_in[:, :height, :120], torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1)
    reflected = np.pad(image, ((0, padded_h - height), (0, 8), (0, 0)), mode="symmetric")
    torch.testing.assert_close(images_in, torch.from_numpy(reflected).permute(2, 0, 1).float() / 127.5 - 1)
    assert call["noise_mode"] == mode and call["truncation_psi"] == 1
    assert torch.equal(call["z"], mat_net.official_latent())
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert (out[hole] == 191).all()  # 0.5 * 127.5 + 127.5 = 191.25 → 191


def test_image_without_hole_is_returned_unchanged(adapter, sample):
    image, _ = sample
    spy = copy.copy(adapter)
    spy.generator = RecordingNetwork(0.0)
    out = spy.inpaint_one(image, np.zeros(image.shape[:2], bool), 1)
    np.testing.assert_array_equal(out, image)
    assert spy.generator.calls == []


def test_runner_gives_image_seeds_and_records_the_inference(adapter, tmp_path):
    data = write_misato_folder(tmp_path / "data", n=2, size=64)
    spy = copy.copy(adapter)
    spy.generator = RecordingNetwork(0.0)
    record = run_method(spy, data, tmp_path / "pred", seed=3, progress=False)
    assert sorted(call["seed"] for call in spy.generator.calls) == sorted(image_seed(3, n) for n in ("0000", "0001"))
    saved = json.loads((tmp_path / "pred" / "run.json").read_text())
    assert saved["noise_mode"] == record["noise_mode"] == "const" and saved["latent"] == record["latent"]
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == ["0000.png", "0001.png"]


def test_describe_records_the_inference(adapter, state_file):
    record = adapter.describe()
    assert record["method"] == "mat" and record["noise_mode"] == "const" and record["truncation_psi"] == 1
    assert record["weights"] == str(state_file.resolve()) and record["weights_origin"] == "explicit"
    assert len(record["weights_sha256"]) == 64
    assert "RandomState(240)" in record["latent"] and "image seed" in record["bottleneck_dropout_and_random_noise"]


def test_registered_with_its_options(state_file):
    spec = get_spec("mat")
    assert spec.weights == ("mat-places512",)
    noise = spec.option("noise_mode")
    assert noise.choices == ("const", "none", "random") and noise.default == "const"
    assert spec.option("weights") is not None
    with pytest.raises(MisatoError, match="noise-mode"):
        create_method("mat", weights=str(state_file), noise_mode="loud")


def test_missing_weights_name_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MisatoError, match="Places_512_FullData_G.pth.*https://github.com/Sanster"):
        MATInpaint()


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(MisatoError) as error:
        MATInpaint(weights=str(path), img_resolution=128)
    message = str(error.value)
    assert "missing keys" in message and "mapping.fc0.weight" in message
    assert "unexpected keys" in message and "conv1.weight" in message


# --- the official StyleGAN-style pickle --------------------------------------------------------------------------

MODULE_SOURCE = "raise RuntimeError('the pickled module source was executed')\n"


def fake_upstream_modules(monkeypatch):
    """``torch_utils.persistence`` and ``dnnlib.util`` as the official pickle references them (for writing one)."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("reading must not call upstream's reconstruction")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    easy_dict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    util.EasyDict = easy_dict
    for name, module in {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                         "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return _reconstruct_persistent_obj, easy_dict


def write_official_pickle(path, networks: dict, monkeypatch) -> None:
    """Pickle networks the way StyleGAN2-ADA's ``persistent_class`` does: each of MAT's own modules is saved as
    ``_reconstruct_persistent_obj(meta)`` with its module source and attribute dict; torch.nn containers and tensors
    are pickled as usual."""
    reconstruct, easy_dict = fake_upstream_modules(monkeypatch)

    class PersistentPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.nn.Module) and type(obj).__module__ == mat_net.__name__:
                meta = dict(type="class", version=6, module_src=MODULE_SOURCE, class_name=type(obj).__name__,
                            state=dict(obj.__dict__))
                return reconstruct, (meta,)
            return NotImplemented

    data = dict(networks, training_set_kwargs=easy_dict(resolution=128, path="places"), augment_pipe=None)
    with open(path, "wb") as handle:
        PersistentPickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(data)


def test_official_pickle_reads_without_running_its_code(small_generator, tmp_path, monkeypatch):
    path = tmp_path / "Places_512_FullData.pkl"
    discriminator = mat_net.Conv2dLayer(4, 8, 3)
    write_official_pickle(path, {"G": small_generator, "D": discriminator, "G_ema": small_generator}, monkeypatch)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)  # reading needs none of upstream's modules
    state = mat_net.read_stylegan_pickle(path)
    expected = small_generator.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert mat_net.read_stylegan_pickle(path, "D").keys() == discriminator.state_dict().keys()
    method = MATInpaint(weights=str(path), img_resolution=128)
    assert all(torch.equal(method.generator.state_dict()[k], v) for k, v in expected.items())
    with pytest.raises(MisatoError, match="no network 'G_missing'.*G_ema"):
        mat_net.read_stylegan_pickle(path, "G_missing")


class _RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_pickle_with_code_is_refused_by_name(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _RunsACommand(f"touch {marker}")}))
    with pytest.raises(MisatoError, match=r"refused to load (posix|os|nt)\.system"):
        mat_net.read_stylegan_pickle(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"G_ema": OrderedDict(a=torch.zeros(1))}))
    with pytest.raises(MisatoError, match="no network 'G_ema'"):
        mat_net.read_stylegan_pickle(path)


# --- slow tier ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_noise_modes_end_to_end(adapter, runs, sample):
    image, hole = sample
    none = copy.copy(adapter)
    none.noise_mode = "none"
    random = copy.copy(adapter)
    random.noise_mode = "random"
    none_a, none_b = none.inpaint_one(image, hole, 7), none.inpaint_one(image, hole, 7)
    random_a, random_b, random_c = (random.inpaint_one(image, hole, s) for s in (7, 7, 8))
    np.testing.assert_array_equal(none_a, none_b)
    np.testing.assert_array_equal(random_a, random_b)
    assert not np.array_equal(random_a, random_c)
    assert not np.array_equal(none_a, runs["first"]) and not np.array_equal(none_a, random_a)


@pytest.mark.slow
def test_full_size_random_generator_end_to_end(tmp_path):
    torch.manual_seed(1)
    generator = mat_net.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3)
    path = tmp_path / "Places_512_FullData_G.pth"
    torch.save(generator.state_dict(), path)
    method = MATInpaint(weights=str(path))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    hole = np.zeros((512, 512), bool)
    hole[100:300, 150:400] = True
    out = method.inpaint_one(image, hole, 1)
    assert_fills_the_hole(out, image, hole)
