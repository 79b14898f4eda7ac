from pathlib import Path

import pytest
import torch
from torch import nn

from asuka.train.decoder_losses import (
    DecoderLoss,
    DecoderLossConfig,
    NLayerDiscriminator,
    adaptive_weight,
    hinge_d_loss,
)
from evaluate.features import build_lpips, save_random_official_weights
from misato.weights import find_local, get_entry


def alexnet_file(folder: Path) -> Path:
    """The real AlexNet trunk when it is in the weights cache, else a random AlexNet of the official layout
    written to ``folder`` (LPIPS' linear layers ship in the lpips wheel)."""
    found = find_local(get_entry("alexnet"))
    if found is not None:
        return found.path
    return save_random_official_weights("alexnet", folder / "alexnet.pth", seed=0)


def lpips_alex(folder: Path):
    return build_lpips("alex", backbone_path=alexnet_file(folder))


@pytest.fixture(scope="module")
def lpips(tmp_path_factory):
    return lpips_alex(tmp_path_factory.mktemp("lpips"))


def test_hinge_loss_hand_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2   -> mean 5/6
    fake = torch.tensor([-3.0, 0.0, 1.0, -0.5])  # relu(1 + fake) = 0, 1, 2, 0.5 -> mean 7/8
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 7 / 8))
    assert hinge_d_loss(torch.ones(4), -torch.ones(4)).item() == 0.0


def test_adaptive_weight_analytic_and_clamped():
    x = torch.tensor([1.0, -2.0, 2.0])
    w = torch.tensor([0.3, 0.1, -0.2], requires_grad=True)
    out = w * x
    rec, g = (3.0 * out).sum(), (-0.5 * out).sum()  # gradients 3x and -0.5x: norms 3·3 and 0.5·3
    assert adaptive_weight(rec, g, w, disc_weight=0.8).item() == pytest.approx(0.8 * 9.0 / (1.5 + 1e-4), rel=1e-6)
    out = w * x
    rec, flat = (3.0 * out).sum(), (0.0 * out).sum()  # zero generator gradient -> 9 / 1e-4 = 9e4 -> clamp at 1e4
    assert adaptive_weight(rec, flat, w, disc_weight=1.0).item() == pytest.approx(1e4)


def test_discriminator_has_tamings_layout():
    disc = NLayerDiscriminator()
    shapes = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    assert shapes["main.0.weight"] == (64, 3, 4, 4) and shapes["main.0.bias"] == (64,)
    assert shapes["main.2.weight"] == (128, 64, 4, 4) and "main.2.bias" not in shapes
    assert shapes["main.3.running_var"] == (128,)
    assert shapes["main.5.weight"] == (256, 128, 4, 4) and shapes["main.8.weight"] == (512, 256, 4, 4)
    assert shapes["main.11.weight"] == (1, 512, 4, 4) and shapes["main.11.bias"] == (1,)
    assert [m.stride for m in disc.modules() if isinstance(m, nn.Conv2d)] == [(2, 2)] * 3 + [(1, 1)] * 2
    assert disc(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    conv = disc.main[8].weight
    assert abs(conv.mean().item()) < 2e-3 and conv.std().item() == pytest.approx(0.02, rel=0.05)
    assert disc.main[3].bias.abs().sum() == 0 and disc.main[3].weight.std().item() == pytest.approx(0.02, rel=0.5)


def test_reconstruction_is_l1_plus_the_lpips_metric(lpips):
    loss = DecoderLoss(DecoderLossConfig(perceptual_weight=0.7), lpips=lpips)
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    recon = (target + 0.3 * torch.randn(2, 3, 64, 64, generator=generator)).clamp(-1, 1)
    value, parts = loss.reconstruction(target, recon)
    metric = lpips((recon + 1) / 2, (target + 1) / 2).mean()  # the evaluation metric, [0, 1] inputs
    l1 = (target - recon).abs().mean()
    torch.testing.assert_close(parts["lpips"], metric)
    torch.testing.assert_close(value, l1 + 0.7 * metric)
    assert not any(p.requires_grad for p in loss.lpips.parameters())
    assert not loss.train().lpips.training
    assert DecoderLoss(DecoderLossConfig(perceptual_weight=0.0), lpips=lpips).lpips is None


class TinyDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(4, 8, 3, padding=1)
        self.conv_out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, z):
        return self.conv_out(torch.relu(self.body(z)))


def test_generator_loss_gradient_is_rec_plus_adaptive_gan(lpips):
    torch.manual_seed(0)
    decoder = TinyDecoder()
    loss = DecoderLoss(DecoderLossConfig(disc_start=5, disc_channels=8, disc_layers=2), lpips=lpips)
    discriminator = loss.make_discriminator()
    z, target = torch.randn(2, 4, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    # before the start step: the reconstruction loss only
    before, parts = loss.generator_loss(target, decoder(z), decoder.conv_out.weight, 4, discriminator)
    assert "g" not in parts and torch.equal(before, loss.reconstruction(target, decoder(z))[0])

    discriminator.eval()  # fixed BatchNorm statistics, so repeated discriminator calls agree
    total, parts = loss.generator_loss(target, decoder(z), decoder.conv_out.weight, 5, discriminator)
    grads = torch.autograd.grad(total, list(decoder.parameters()))
    # the hand computation: separate graphs, gradients of each term at the last layer
    rec = loss.reconstruction(target, decoder(z))[0]
    g = -discriminator(decoder(z)).mean()
    rec_last = torch.autograd.grad(rec, decoder.conv_out.weight, retain_graph=True)[0]
    g_last = torch.autograd.grad(g, decoder.conv_out.weight, retain_graph=True)[0]
    weight = 0.8 * min(rec_last.norm().item() / (g_last.norm().item() + 1e-4), 1e4)
    assert parts["adaptive_weight"].item() == pytest.approx(weight, rel=1e-5)
    expected = torch.autograd.grad(rec + weight * g, list(decoder.parameters()))
    for ours, reference in zip(grads, expected):  # float32 sums in another order: tolerance scaled to the gradient
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5 * reference.abs().max().item())
    assert all(p.grad is None for p in discriminator.parameters())


def test_discriminator_loss_sees_detached_inputs():
    decoder = TinyDecoder()
    discriminator = NLayerDiscriminator(ndf=8, n_layers=2)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    d_loss, parts = DecoderLoss.discriminator_loss(target, decoder(torch.randn(2, 4, 32, 32)), discriminator)
    d_loss.backward()
    assert all(p.grad is None for p in decoder.parameters())
    assert all(p.grad is not None for p in discriminator.parameters())
    assert d_loss.item() == pytest.approx(parts["d"].item()) and d_loss.item() >= 0
