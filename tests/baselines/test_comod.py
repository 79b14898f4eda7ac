"""Co-Mod-GAN: layout against the port's architecture, layer numerics, strict loading, inference details.

The full Places2 512 configuration is checked for every tensor shape and the parameter count on the meta device,
and its file (random weights, official state-dict format) is loaded strictly; end-to-end runs use the same code at
a reduced configuration (resolution 16, 16 channels — the port's ``--crop_size``/``--fmap_base``/``--fmap_max``
options) and, in the slow tier, at full size (about 25 s per 512 forward on 2 busy CPU cores).
"""
from __future__ import annotations

import copy
import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from scipy import signal

from baselines import comod_net
from baselines.base import create_method, get_spec
from baselines.comod import CoModInpaint
from misato.errors import MisatoError
from tests.helpers import assert_fills_the_hole

FULL_SIZE_PARAMETERS = 79_792_231
"""Parameters of the port's Places2 512 generator, counted by :func:`port_shapes` from the port's constructors."""
FULL_SIZE_KERNELS = 21
"""FIR-kernel buffers in its state dict: 7 encoder downsamplings, 7 upsampling convolutions, 7 ToRGB upsamplings."""
TINY = comod_net.CoModConfig(resolution=16, fmap_base=128, fmap_max=16, dlatent_size=32)


def port_shapes(resolution=512, fmap_base=16 << 10, fmap_max=512, dlatent=512) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of the port's ``Generator`` and its shape, written out from zengxianyu/co-mod-gan-pytorch
    ``models/networks/co_mod_gan.py`` and ``stylegan2.py`` (independently of baselines.comod_net)."""
    def nf(stage):
        return int(min(max(fmap_base // 2 ** stage, 1), fmap_max))

    log2 = int(np.log2(resolution))
    mod = dlatent + 2 * nf(1)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(8):
        out = dlatent if i == 7 else 512
        shapes[f"G_mapping.G_mapping.Dense{i}.weight"] = (out, 512)
        shapes[f"G_mapping.G_mapping.Dense{i}.bias"] = (out,)

    def conv_layer(p, c_in, c_out, k, down=False):  # ConvLayer(activate=True): [Blur,] EqualConv2d (no bias), FusedLReLU
        i = 0
        if down:
            shapes[f"{p}.0.kernel"] = (4, 4)
            i = 1
        shapes[f"{p}.{i}.weight"] = (c_out, c_in, k, k)
        shapes[f"{p}.{i + 1}.bias"] = (c_out,)

    def modulated(p, c_in, c_out, k, up=False):
        shapes[f"{p}.weight"] = (1, c_out, c_in, k, k)
        shapes[f"{p}.modulation.weight"], shapes[f"{p}.modulation.bias"] = (c_in, mod), (c_in,)
        if up:
            shapes[f"{p}.blur.kernel"] = (4, 4)

    def styled(p, c_in, c_out, up=False):
        modulated(f"{p}.conv", c_in, c_out, 3, up)
        shapes[f"{p}.noise.weight"], shapes[f"{p}.activate.bias"] = (1,), (c_out,)

    def to_rgb(p, c_in, up=True):
        modulated(f"{p}.conv", c_in, 3, 1)
        shapes[f"{p}.bias"] = (1, 3, 1, 1)
        if up:
            shapes[f"{p}.upsample.kernel"] = (4, 4)

    e = "G_synthesis.E"
    conv_layer(f"{e}.{resolution}x{resolution}_0.FromRGB", 4, nf(log2 - 1), 1)
    for res in range(log2, 2, -1):
        conv_layer(f"{e}.{2 ** res}x{2 ** res}.Conv0", nf(res - 1), nf(res - 1), 3)
        conv_layer(f"{e}.{2 ** res}x{2 ** res}.Conv1_down", nf(res - 1), nf(res - 2), 3, down=True)
    conv_layer(f"{e}.4x4.Conv", nf(2), nf(1), 3)
    shapes[f"{e}.4x4.Dense0.weight"], shapes[f"{e}.4x4.Dense0.bias"] = (2 * nf(1), 16 * nf(1)), (2 * nf(1),)
    g = "G_synthesis.G_4x4"
    shapes[f"{g}.Dense.weight"], shapes[f"{g}.Dense.bias"] = (16 * nf(1), 2 * nf(1)), (16 * nf(1),)
    styled(f"{g}.Conv", nf(1), nf(1))
    to_rgb(f"{g}.ToRGB", nf(1), up=False)
    for res in range(3, log2 + 1):
        g = f"G_synthesis.G_{2 ** res}x{2 ** res}"
        styled(f"{g}.Conv0_up", nf(res - 2), nf(res - 1), up=True)
        styled(f"{g}.Conv1", nf(res - 1), nf(res - 1))
        to_rgb(f"{g}.ToRGB", nf(res - 1))
    return shapes


def meta_generator(config: comod_net.CoModConfig) -> comod_net.Generator:
    with torch.device("meta"):
        return comod_net.Generator(config)


@pytest.mark.parametrize("config", [comod_net.CoModConfig(), TINY], ids=["places512", "tiny"])
def test_every_tensor_shape_matches_the_port(config):
    own = {k: tuple(v.shape) for k, v in meta_generator(config).state_dict().items()}
    assert own == port_shapes(config.resolution, config.fmap_base, config.fmap_max, config.dlatent_size)


def test_full_size_parameter_count():
    generator = meta_generator(comod_net.CoModConfig())
    shapes = port_shapes()
    kernels = [k for k in shapes if k.endswith("kernel")]
    assert len(kernels) == FULL_SIZE_KERNELS
    assert sum(int(np.prod(s)) for k, s in shapes.items() if k not in kernels) == FULL_SIZE_PARAMETERS
    assert sum(p.numel() for p in generator.parameters()) == FULL_SIZE_PARAMETERS


@pytest.mark.parametrize("config", [comod_net.CoModConfig(), TINY,
                                    comod_net.CoModConfig(resolution=1024)], ids=["places512", "tiny", "ffhq1024"])
def test_config_is_read_off_the_state_dict(config):
    assert comod_net.config_from_state_dict(meta_generator(config).state_dict(), "x") == config


# --- layer numerics against scipy (the port's rosinality layers, written as plain signal processing) -----------

BLUR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def zero_insert(x: np.ndarray, trailing: bool) -> np.ndarray:
    """Upsample by 2 with zeros between pixels (and after the last one if ``trailing``)."""
    h, w = x.shape
    out = np.zeros((2 * h - (not trailing), 2 * w - (not trailing)))
    out[::2, ::2] = x
    return out


def test_modulated_upsampling_conv_matches_transposed_conv_then_blur():
    torch.manual_seed(0)
    layer = comod_net.ModulatedConv2d(3, 2, 3, style_dim=5, upsample=True).double()
    x, style = torch.randn(1, 3, 5, 6, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    out = layer(x, style)[0].detach().numpy()
    s = (style @ (layer.modulation.weight * layer.modulation.scale).T + layer.modulation.bias)[0].detach().numpy()
    w = layer.weight[0].detach().numpy() * layer.scale * s[None, :, None, None]
    w = w / np.sqrt((w ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
    for o in range(2):  # conv_transpose2d(stride 2) = full convolution of the zero-inserted input; blur pad (1, 1)
        full = sum(signal.convolve2d(zero_insert(x[0, i].numpy(), False), w[o, i], "full") for i in range(3))
        expected = signal.convolve2d(np.pad(full, 1), 4 * BLUR, "valid")
        np.testing.assert_allclose(out[o], expected, rtol=1e-10, atol=1e-10)
    # the shared op's transposed route gives the same (rosinality's layer = NVIDIA's conv2d_resample, unflipped)
    from baselines import stylegan_ops as ops
    reference = ops.conv2d_resample(x, torch.from_numpy(w), f=ops.setup_filter([1, 3, 3, 1]).double(), up=2,
                                    padding=1, flip_weight=False)
    np.testing.assert_allclose(out, reference[0].numpy(), rtol=1e-10, atol=1e-10)


def test_downsampling_conv_layer_matches_blur_then_strided_correlation():
    torch.manual_seed(1)
    layer = comod_net.ConvLayer(2, 3, 3, downsample=True).double()
    with torch.no_grad():
        layer[2].bias.normal_()
    x = torch.randn(1, 2, 8, 10, dtype=torch.float64)
    out = layer(x)[0].detach().numpy()
    w = layer[1].weight.detach().numpy() * layer[1].scale
    for o in range(3):
        acc = sum(signal.correlate2d(signal.convolve2d(np.pad(x[0, i].numpy(), 2), BLUR, "valid"), w[o, i], "valid")
                  for i in range(2))[::2, ::2] + layer[2].bias[o].item()
        np.testing.assert_allclose(out[o], np.where(acc > 0, acc, 0.2 * acc) * np.sqrt(2), rtol=1e-10, atol=1e-10)


def test_to_rgb_upsamples_the_skip_like_the_port():
    torch.manual_seed(2)
    layer = comod_net.ToRGB(4, style_dim=3, out_channel=3).double()
    x, style = torch.randn(1, 4, 6, 6, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    skip = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    got = (layer(x, style, skip) - layer(x, style)).detach().numpy()[0]
    for c in range(3):  # Upsample: upfirdn2d(up=2, pad=(2, 1)) with the kernel × 4
        padded = np.pad(zero_insert(skip[0, c].numpy(), True), ((2, 1), (2, 1)))
        np.testing.assert_allclose(got[c], signal.convolve2d(padded, 4 * BLUR, "valid"), rtol=1e-10, atol=1e-10)


def test_mapping_is_pixel_norm_then_equalised_lrelu_layers():
    torch.manual_seed(3)
    mapping = comod_net.G_mapping(TINY).double()
    z = torch.randn(2, 512, dtype=torch.float64)
    x = z.numpy() / np.sqrt((z.numpy() ** 2).mean(1, keepdims=True) + 1e-8)
    for i in range(8):
        dense = getattr(mapping.G_mapping, f"Dense{i}")
        x = x @ (dense.weight.detach().numpy() * 0.01 / np.sqrt(512)).T + dense.bias.detach().numpy() * 0.01
        x = np.where(x > 0, x, 0.2 * x) * np.sqrt(2)
    np.testing.assert_allclose(mapping(z).detach().numpy(), x, rtol=1e-10)


def test_encoder_input_and_compositing_use_mask_1_as_hole():
    torch.manual_seed(4)
    generator = comod_net.Generator(TINY).eval()
    seen = {}
    first = getattr(generator.G_synthesis.E, "16x16_0").FromRGB
    first.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., 3:9, 5:12] = 1
    with torch.no_grad():
        out = generator(images, masks, torch.randn(1, 512), noise_mode="none")
    x = seen["x"][0]
    torch.testing.assert_close(x[0], 0.5 - masks[0, 0])  # official TF: mask − 0.5 with 1 = known
    torch.testing.assert_close(x[1:], images[0] * (1 - masks[0]))
    torch.testing.assert_close(out * (1 - masks), images * (1 - masks))
    assert not torch.allclose(out * masks, images * masks)


# --- the adapter on a reduced configuration ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(5)
    generator = comod_net.Generator(TINY)
    with torch.no_grad():  # non-zero noise strengths and biases so that noise and polarity show in the output
        for name, p in generator.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias"):
                p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("comod") / "tiny_net_G_ema.pth"
    torch.save(generator.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def adapter(tiny_file) -> CoModInpaint:
    return CoModInpaint(weights=str(tiny_file))


@pytest.fixture()
def sample():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(12, 14, 3), dtype=np.uint8)
    hole = np.zeros((12, 14), bool)
    hole[3:8, 4:11] = True
    return image, hole


def test_checkpoint_loads_strictly_with_every_value(adapter, tiny_file):
    saved = torch.load(tiny_file, weights_only=True)
    loaded = adapter.generator.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert adapter.resolution == 16 and adapter.generator.config == TINY


def test_data_parallel_prefix_is_dropped_as_the_port_does(tiny_file, tmp_path):
    state = torch.load(tiny_file, weights_only=True)
    path = tmp_path / "parallel_net_G_ema.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    loaded = comod_net.load_generator(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_known_pixels_untouched_and_same_seed_same_bytes(adapter, sample):
    image, hole = sample
    first = adapter.inpaint_one(image, hole, 7)
    assert first.shape == image.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first[~hole], image[~hole])
    assert (first[hole] != image[hole]).mean() > 0.5
    assert adapter.inpaint_one(image, hole, 7).tobytes() == first.tobytes()
    assert not np.array_equal(adapter.inpaint_one(image, hole, 8), first)


def test_polarity_both_ways(adapter, sample):
    image, _ = sample
    one = np.zeros(image.shape[:2], bool)
    one[5, 6] = True
    out = adapter.inpaint_one(image, one, 1)  # a single hole pixel: only it may change
    changed = np.argwhere((out != image).any(-1))
    assert changed.tolist() in ([[5, 6]], [])
    assert not np.array_equal(out[5, 6], image[5, 6])
    inverted = adapter.inpaint_one(image, ~one, 1)  # everything is hole except that pixel
    assert inverted[5, 6].tolist() == image[5, 6].tolist()
    assert (inverted != image).any(-1).mean() > 0.9


class RecordingNetwork:
    """Stands in for the generator: records its inputs, returns a constant image."""

    def __init__(self, value: float, config) -> None:
        self.value, self.config, self.calls = value, config, []

    def __call__(self, images_in, masks_in, z, truncation, truncation_latent, noise_mode, generator):
        self.calls.append(dict(images_in=images_in, masks_in=masks_in, z=z, truncation=truncation,
                               noise_mode=noise_mode))
        return torch.full_like(images_in, self.value)


def test_inputs_padding_polarity_and_quantisation(adapter, sample):
    image, hole = sample
    spy = copy.copy(adapter)
    spy.generator = RecordingNetwork(0.5, adapter.generator.config)
    out = spy.inpaint_one(image, hole, 3)
    call = spy.generator.calls[0]
    images_in, masks_in = call["images_in"][0], call["masks_in"][0, 0]
    assert images_in.shape == (3, 16, 16) and masks_in.shape == (16, 16)
    np.testing.assert_array_equal(masks_in[:12, :14].numpy(), hole.astype(np.float32))  # 1 = hole
    assert bool((masks_in[12:] == 0).all()) and bool((masks_in[:, 14:] == 0).all())  # padding is known
    reflected = np.pad(image, ((0, 4), (0, 2), (0, 0)), mode="symmetric")
    torch.testing.assert_close(images_in, torch.from_numpy(reflected).permute(2, 0, 1).float() / 127.5 - 1)
    z = torch.randn([1, 512], generator=torch.Generator().manual_seed(3))
    assert torch.equal(call["z"], z) and call["truncation"] == 1 and call["noise_mode"] == "random"
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert (out[hole] == 191).all()  # (0.5 + 1) / 2 * 255 = 191.25, truncated


def test_image_without_hole_unchanged_and_too_large_refused(adapter, sample):
    image, _ = sample
    spy = copy.copy(adapter)
    spy.generator = RecordingNetwork(0.0, adapter.generator.config)
    np.testing.assert_array_equal(spy.inpaint_one(image, np.zeros(image.shape[:2], bool), 1), image)
    assert spy.generator.calls == []
    big = np.zeros((17, 10, 3), np.uint8)
    with pytest.raises(MisatoError, match="larger than the network's 16x16"):
        spy.inpaint_one(big, np.ones((17, 10), bool), 1)


def test_noise_modes_and_truncation(tiny_file, adapter, sample):
    image, hole = sample
    quiet = CoModInpaint(weights=str(tiny_file), noise_mode="none")
    a, b = quiet.inpaint_one(image, hole, 1), quiet.inpaint_one(image, hole, 1)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, adapter.inpaint_one(image, hole, 1))
    truncated = CoModInpaint(weights=str(tiny_file), noise_mode="none", truncation=0.0)
    # ψ = 0: every latent maps to the truncation centre, so the seed no longer matters without noise
    assert truncated.inpaint_one(image, hole, 1).tobytes() == truncated.inpaint_one(image, hole, 2).tobytes()
    torch.testing.assert_close(truncated.w_avg, truncated.generator.mean_latent(4096, 0))
    with pytest.raises(MisatoError, match="--noise-mode 'const'"):
        CoModInpaint(weights=str(tiny_file), noise_mode="const")
    with pytest.raises(MisatoError, match="--truncation"):
        CoModInpaint(weights=str(tiny_file), truncation=1.5)


def test_describe_records_truncation_noise_and_weight_hash(tiny_file, adapter):
    record = adapter.describe()
    assert record["weights"]["sha256"] == hashlib.sha256(tiny_file.read_bytes()).hexdigest()
    assert record["weights"]["origin"] == "explicit"
    assert record["truncation"] == 1 and record["truncation_latent"] is None
    assert record["noise_mode"] == "random" and record["resolution"] == 16
    truncated = CoModInpaint(weights=str(tiny_file), truncation=0.7, noise_mode="none").describe()
    assert truncated["truncation"] == 0.7 and "4096" in truncated["truncation_latent"]
    assert truncated["noise_mode"] == "none"


def test_registered_with_its_options(tiny_file):
    spec = get_spec("comod")
    assert spec.weights == ("comod-places512",) and spec.gpu_advised
    assert {o.name for o in spec.options} == {"weights", "noise_mode", "truncation", "device"}
    assert spec.option("noise_mode").choices == ("random", "none")
    method = create_method("comod", weights=str(tiny_file), noise_mode="none")
    assert isinstance(method, CoModInpaint) and method.noise_mode == "none"


def test_runner_writes_every_image_and_the_record(tiny_file, tmp_path):
    from baselines import run_method
    from tests.helpers import assert_fills_the_hole, write_misato_folder

    data = write_misato_folder(tmp_path / "data", n=2, size=16)
    method = create_method("comod", weights=str(tiny_file))
    run_method(method, data, tmp_path / "pred", progress=False)
    record = json.loads((tmp_path / "pred" / "run.json").read_text())
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == ["0000.png", "0001.png"]
    described = json.loads(json.dumps(method.describe()))
    assert {key: record[key] for key in described} == described  # truncation, noise mode, weight sha256, ...


def test_missing_weights_name_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("MISATO_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("MISATO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MisatoError, match="co-mod-gan-places2-050000_net_G_ema.pth.*sharepoint"):
        CoModInpaint()


def test_checkpoint_of_another_configuration_names_its_keys(tmp_path):
    state = comod_net.Generator(TINY).state_dict()
    del state["G_synthesis.G_8x8.Conv1.noise.weight"]
    state["G_synthesis.G_8x8.Conv1.noise.strength"] = torch.zeros(1)
    state["G_synthesis.G_16x16.ToRGB.bias"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(MisatoError) as error:
        CoModInpaint(weights=str(path))
    message = str(error.value)
    assert "G_synthesis.G_8x8.Conv1.noise.weight" in message  # missing
    assert "G_synthesis.G_8x8.Conv1.noise.strength" in message  # unexpected
    assert "G_synthesis.G_16x16.ToRGB.bias" in message  # shape mismatch


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    from baselines import mat_net

    path = tmp_path / "Places_512_FullData_G.pth"
    with torch.device("meta"):
        names = list(mat_net.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=128, img_channels=3).state_dict())
    torch.save({name: torch.zeros(1) for name in names}, path)
    with pytest.raises(MisatoError, match="not a Co-Mod-GAN generator.*first keys: mapping"):
        CoModInpaint(weights=str(path))


def test_official_tensorflow_pickle_is_refused_with_the_route(tmp_path):
    path = tmp_path / "co-mod-gan-places2-050000.pkl"
    # the head of a TF1 network pickle: dnnlib.tflib.network.Network objects (built here without dnnlib)
    path.write_bytes(pickle.dumps(("dnnlib.tflib.network", "Network", {"variables": []}), protocol=2))
    with pytest.raises(MisatoError, match="TensorFlow 1 .*_net_G_ema.pth"):
        CoModInpaint(weights=str(path))


def test_full_size_file_loads_strictly(tmp_path):
    torch.manual_seed(6)
    generator = comod_net.Generator()
    path = tmp_path / "co-mod-gan-places2-050000_net_G_ema.pth"
    torch.save(generator.state_dict(), path)
    loaded = comod_net.load_generator(path)
    assert loaded.config == comod_net.CoModConfig()
    key = "G_synthesis.G_512x512.Conv1.conv.weight"
    assert torch.equal(loaded.state_dict()[key], generator.state_dict()[key])


@pytest.mark.slow
def test_full_size_random_generator_end_to_end(tmp_path):
    torch.manual_seed(7)
    path = tmp_path / "co-mod-gan-places2-050000_net_G_ema.pth"
    torch.save(comod_net.Generator().state_dict(), path)
    method = CoModInpaint(weights=str(path))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    hole = np.zeros((40, 48), bool)
    hole[10:30, 12:40] = True
    out = method.inpaint_one(image, hole, 1)
    assert_fills_the_hole(out, image, hole)
