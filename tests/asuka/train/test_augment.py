import pytest
import torch
import torchvision.transforms as T
from diffusers import DDPMScheduler

from asuka.testing import dummy_scheduler, get_dummy_components
from asuka.train.augment import ColorJitter, latent_augment, predicted_clean_latent
from misato.errors import MisatoError


def images(batch: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_parameters_are_torchvisions_draws_from_the_same_seed(seed):
    ours = ColorJitter().sample(torch.Generator().manual_seed(seed))
    reference = T.ColorJitter(0.15, 0.2, 0.1, 0.03)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order, b, c, s, h = reference.get_params(reference.brightness, reference.contrast, reference.saturation,
                                                 reference.hue)
    assert ours.order == tuple(order.tolist())
    assert (ours.brightness, ours.contrast, ours.saturation, ours.hue) == (b, c, s, h)
    assert 0.85 <= b <= 1.15 and 0.8 <= c <= 1.2 and 0.9 <= s <= 1.1 and -0.03 <= h <= 0.03


@pytest.mark.parametrize("strengths", [(0.15, 0.2, 0.1, 0.03), (0.5, 0.0, 0.3, 0.2), (1.5, 0.3, 0.0, 0.0)])
def test_one_sample_equals_torchvisions_transform(strengths):
    image = images(1)[0]
    ours = ColorJitter(*strengths)(image[None], generators(3))[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = T.ColorJitter(*strengths)(image)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_every_sample_draws_from_its_own_generator():
    batch = images(4)
    jitter = ColorJitter()
    out = jitter(batch, generators(5, 6, 7, 8))
    for i in range(4):
        torch.testing.assert_close(out[i : i + 1], jitter(batch[i : i + 1], generators(5 + i)), rtol=0, atol=0)
    assert not torch.equal(out[0] - batch[0], out[1] - batch[1])
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="one generator per sample"):
        jitter(batch, generators(1, 2))


def test_global_rng_untouched_and_seed_reproducible():
    batch = images(2)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    first = ColorJitter()(batch, generators(2, 3))
    assert torch.equal(torch.random.get_rng_state(), before)
    second = ColorJitter()(batch, generators(2, 3))
    assert torch.equal(first, second)


def test_bad_strengths_and_shapes():
    with pytest.raises(MisatoError, match="hue"):
        ColorJitter(hue=0.6)
    with pytest.raises(MisatoError, match="brightness"):
        ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        ColorJitter()(torch.rand(3, 8, 8), generators(0))


# ----------------------------------------------------------------------------------------------- latent augmentation


@pytest.fixture(scope="module")
def unet():
    return get_dummy_components(seed=0, decoder=False)["unet"]


def test_predicted_clean_latent_matches_the_schedulers_own_x0():
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    sample, output = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    for t in (0, 17, 500, 999):
        reference = scheduler.step(output, t, sample).pred_original_sample
        ours = predicted_clean_latent(sample, output, scheduler.alphas_cumprod[t].reshape(1))
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    v_scheduler = DDPMScheduler(beta_schedule="scaled_linear", clip_sample=False, prediction_type="v_prediction")
    reference = v_scheduler.step(output, 300, sample).pred_original_sample
    ours = predicted_clean_latent(sample, output, v_scheduler.alphas_cumprod[300].reshape(1), "v_prediction")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_latent_augmentation_is_equation_one_on_the_unet(unet):
    scheduler = dummy_scheduler()
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    result = latent_augment(latents, unet, scheduler, generators(0, 1, 2, 3), probability=0.5,
                            timestep_range=(100, 800))
    # replay the documented draw order of each sample's generator: flip, timestep, noise
    flips, timesteps, noise = [], [], []
    for replay in generators(0, 1, 2, 3):
        flips.append(torch.rand((), generator=replay) < 0.5)
        timesteps.append(torch.randint(100, 801, (), generator=replay))
        noise.append(torch.randn(4, 8, 8, generator=replay))
    flips, timesteps, noise = torch.stack(flips), torch.stack(timesteps), torch.stack(noise)
    assert torch.equal(result.applied, flips) and torch.equal(result.timesteps, timesteps)
    assert 0 < int(flips.sum()) < 4  # this seed exercises both branches
    for i in range(4):
        if not flips[i]:
            assert torch.equal(result.latents[i], latents[i])
            continue
        alpha = scheduler.alphas_cumprod[timesteps[i]]
        noisy = alpha.sqrt() * latents[i : i + 1] + (1 - alpha).sqrt() * noise[i : i + 1]
        unet_input = torch.cat([noisy, torch.zeros(1, 1, 8, 8), latents[i : i + 1]], dim=1)
        with torch.no_grad():
            eps = unet(unet_input, timesteps[i : i + 1], encoder_hidden_states=torch.zeros(1, 1, 32)).sample
        expected = (noisy - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        torch.testing.assert_close(result.latents[i : i + 1], expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(result.latents[i], latents[i])


def test_probability_extremes_and_bad_arguments(unet):
    scheduler = dummy_scheduler()
    latents = torch.randn(3, 4, 8, 8)
    untouched = latent_augment(latents, unet, scheduler, generators(0, 1, 2), probability=0.0)
    assert torch.equal(untouched.latents, latents) and not untouched.applied.any()
    every = latent_augment(latents, unet, scheduler, generators(0, 1, 2), probability=1.0)
    assert every.applied.all()
    assert every.timesteps.min() >= 0 and every.timesteps.max() <= 999
    # a sample's result depends only on its own generator, not on its batch
    alone = latent_augment(latents[1:2], unet, scheduler, generators(1), probability=1.0)
    torch.testing.assert_close(alone.latents, every.latents[1:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(MisatoError, match="latent-aug-p"):
        latent_augment(latents, unet, scheduler, generators(0, 1, 2), probability=1.5)
    with pytest.raises(MisatoError, match="latent-timesteps"):
        latent_augment(latents, unet, scheduler, generators(0, 1, 2), timestep_range=(10, 1000))
