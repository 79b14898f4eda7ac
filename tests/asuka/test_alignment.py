import pytest
import torch

from asuka.models.alignment import ALIGNMENT_VARIANTS, PriorAlignment


@pytest.mark.parametrize("variant", sorted(ALIGNMENT_VARIANTS))
def test_variant_shapes(variant):
    torch.manual_seed(0)
    module = PriorAlignment.from_variant(variant, prior_dim=16, cross_attention_dim=32, num_heads=4, num_queries=8)
    out = module(torch.randn(2, 16, 16))
    expected_length = 8 if variant == "cross4" else 16
    assert out.shape == (2, expected_length, 32)
    assert len(module.blocks) == ALIGNMENT_VARIANTS[variant]["num_layers"]


def test_default_is_asuka_for_sd15():
    module = PriorAlignment()
    assert module.config.cross_attention_dim == 768 and len(module.blocks) == 4
    assert module(torch.randn(1, 256, 512)).shape == (1, 256, 768)


def test_linear_variant_is_projection_then_layernorm():
    torch.manual_seed(0)
    module = PriorAlignment.from_variant("linear", prior_dim=16, cross_attention_dim=32)
    x = torch.randn(3, 5, 16)
    expected = torch.nn.functional.layer_norm(x @ module.proj_in.weight.T + module.proj_in.bias, (32,),
                                              module.norm_out.weight, module.norm_out.bias)
    torch.testing.assert_close(module(x), expected)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    module = PriorAlignment.from_variant("cross4", prior_dim=16, cross_attention_dim=32, num_heads=2, num_queries=4)
    module.save_pretrained(tmp_path)
    loaded = PriorAlignment.from_pretrained(tmp_path)
    x = torch.randn(1, 16, 16)
    torch.testing.assert_close(loaded(x), module(x))


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown alignment variant"):
        PriorAlignment.from_variant("nope")
