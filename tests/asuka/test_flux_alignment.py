"""The ASUKA-FLUX alignment module: the released nn.Sequential layout, its forward, its size."""
import math

import pytest
import torch
from torch import nn

from asuka.flux.loaders import load_flux_alignment
from asuka.models.flux_alignment import FluxPriorAlignment
from misato.errors import MisatoError


def reference_block(state: dict, prefix: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    """FLUX's single-stream block without modulation, written from the official description with an explicit
    softmax attention (independent of the module under test)."""
    d = x.shape[-1]
    h = nn.functional.layer_norm(x, (d,), eps=1e-6)
    y = h @ state[f"{prefix}linear1.weight"].T + state[f"{prefix}linear1.bias"]
    q, k, v, mlp = y[..., :d], y[..., d:2 * d], y[..., 2 * d:3 * d], y[..., 3 * d:]

    def heads_of(t):
        return t.reshape(*t.shape[:2], heads, d // heads).transpose(1, 2)

    def rms(t, scale):
        return t / torch.sqrt((t ** 2).mean(-1, keepdim=True) + 1e-6) * scale

    q, k, v = heads_of(q), heads_of(k), heads_of(v)
    q, k = rms(q, state[f"{prefix}norm.query_norm.scale"]), rms(k, state[f"{prefix}norm.key_norm.scale"])
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    attention = (weights @ v).transpose(1, 2).reshape(x.shape)
    gelu = 0.5 * mlp * (1 + torch.tanh(math.sqrt(2 / math.pi) * (mlp + 0.044715 * mlp ** 3)))
    out = torch.cat([attention, gelu], -1) @ state[f"{prefix}linear2.weight"].T + state[f"{prefix}linear2.bias"]
    return x + out


def randomised(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module


def test_forward_equals_the_reference_and_ignores_modulation():
    module = randomised(FluxPriorAlignment(prior_dim=24, dim=32, num_layers=4, num_heads=2), 0).eval()
    state = module.state_dict()
    prior = torch.randn(2, 9, 24)
    x = prior @ state["0.weight"].T + state["0.bias"]
    for index in range(1, 5):
        x = reference_block(state, f"{index}.", x, heads=2)
    expected = nn.functional.layer_norm(x, (32,), state["5.weight"], state["5.bias"])
    with torch.no_grad():
        got = module(prior)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        for index in range(1, 5):
            getattr(module, str(index)).modulation.lin.weight.mul_(7)
        assert torch.equal(module(prior), got)


def test_released_sequential_file_loads_strictly(tmp_path):
    released = nn.Sequential(nn.Linear(16, 32), *[FluxPriorAlignment(16, 32, 1, 2).get_submodule("1")
                                                   for _ in range(4)], nn.LayerNorm(32))
    randomised(released, 1)
    keys = list(released.state_dict())
    assert keys[:2] == ["0.weight", "0.bias"] and "1.linear1.weight" in keys and "4.modulation.lin.weight" in keys
    assert keys[-2:] == ["5.weight", "5.bias"]
    torch.save(released.state_dict(), tmp_path / "asuka_alignment_t5.pt")
    loaded, report = load_flux_alignment(tmp_path / "asuka_alignment_t5.pt")
    assert report.ok and loaded.config.dim == 32 and loaded.config.num_layers == 4 and loaded.config.num_heads == 2
    for key, value in released.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    prior = torch.randn(1, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(prior), released[5](released[4](released[3](released[2](
            released[1](released[0](prior)))))))
    broken = released.state_dict()
    broken.pop("2.modulation.lin.bias")
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(MisatoError, match=r"missing keys: 2\.modulation\.lin\.bias"):
        load_flux_alignment(tmp_path / "broken.pt")


@pytest.mark.parametrize("dim, expected", [(4096, 1_008_923_136), (768, 35_819_264)])
def test_full_size_parameter_count_and_shapes(dim, expected):
    with torch.device("meta"):
        module = FluxPriorAlignment(dim=dim)
    total = sum(p.numel() for p in module.parameters())
    assert total == expected == 4 * (15 * dim ** 2 + 11 * dim + 128) + 512 * dim + dim + 2 * dim
    state = module.state_dict()
    assert state["0.weight"].shape == (dim, 512)
    assert state["1.linear1.weight"].shape == (7 * dim, dim) and state["1.linear2.weight"].shape == (dim, 5 * dim)
    assert state["1.modulation.lin.weight"].shape == (3 * dim, dim)
    assert state["1.norm.query_norm.scale"].shape == (64,) and state["5.weight"].shape == (dim,)
    assert getattr(module, "1").num_heads == dim // 64
