import torch

from misato.reproducibility import float32_matmul, seeded


def test_seeded_block_is_deterministic_and_restores_the_callers_stream():
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    with seeded(3):
        first = torch.nn.Linear(4, 2).weight.clone()
    assert torch.equal(torch.rand(4), expected)
    with seeded(3):
        assert torch.equal(torch.nn.Linear(4, 2).weight, first)


def test_float32_matmul_restores_the_tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with float32_matmul():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
