"""The training loop's overhead: ``alignment`` steps with full-size random SD-1.5 modules vs their bare compute.

One process holds a full-size, randomly initialised SD-1.5-inpainting UNet and VAE, the ViT-B MAE and the ASUKA
alignment module (``asuka.testing.get_dummy_components(full_size=True)``, handed to the stage in place of files).

- loop: ``misato train alignment`` (:func:`asuka.train.loop.run`) for ``--steps`` + 1 steps at ``--size`` on
  synthetic images, data loaded by ``--workers`` workers; step and data times from its ``log.csv`` (the first step,
  warm-up, is dropped).
- bare: the same modules in the same process with none of the loop: VAE encodes of the image and the masked
  image, the MAE prior, the alignment module, the UNet forward, ``backward()`` and the AdamW step, on one fixed
  batch, ``--steps`` + 1 times (the first dropped), before and after the loop; the faster median is the
  reference (the load of a shared machine drifts over minutes).

Prints the medians, ``loop ÷ bare`` (target ≤ 1.15), ``data ÷ step`` (target ≤ 0.10), peak RSS and what the
parameters and optimiser state account for (the rest is activations, allocator caches and the Python runtime).

    python benchmarks/bench_train.py [--size 256] [--steps 2] [--batch 1] [--workers 1] [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2 ** 20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="timed steps (one warm-up step more)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared CPU, oversubscribed threads are ~10x slower)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    import numpy as np
    import torch
    import torch.nn.functional as F

    import asuka.assemble
    import asuka.train.alignment as alignment_stage
    from asuka.pipeline import ASUKAInpaintPipeline
    from asuka.testing import get_dummy_components
    from asuka.train.loop import run
    from misato.io import write_image
    from misato.masks import make_generator
    from tests.helpers import box_mask, smooth_image

    torch.set_num_threads(args.threads)
    components = get_dummy_components(seed=0, decoder=False, full_size=True)
    pipe = ASUKAInpaintPipeline(vae=components["vae"], unet=components["unet"], scheduler=components["scheduler"])
    asuka.assemble.load_sd_inpaint = lambda sd: pipe  # the stage takes the in-memory modules instead of files
    alignment_stage.load_mae = lambda source: components["mae"]

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    rng = np.random.default_rng(0)
    for index in range(8):
        write_image(work / "images" / f"{index}.png", smooth_image(rng, args.size + 64))
        write_image(work / "objects" / f"{index}.png", np.repeat(box_mask(rng, 64)[..., None] * 255, 3, axis=2)
                    .astype(np.uint8))
    for part in ("unet", "vae"):  # empty stand-ins: train.json hashes the sources the stage names
        (work / "sd" / part).mkdir(parents=True)
    (work / "mae.pth").touch()
    flags = ["--data", str(work / "images"), "--objects", str(work / "objects"), "--out", str(work / "out"),
             "--sd", str(work / "sd"), "--mae", str(work / "mae.pth"), "--resolution", str(args.size), "--batch-size",
             str(args.batch), "--max-steps", str(args.steps + 1), "--num-workers", str(args.workers),
             "--log-every", "1", "--checkpoint-every", "100000", "--val-samples", "0", "--no-progress",
             "--lr", "1e-4"]

    # bare: the same modules and the same arithmetic, written out directly
    unet, vae, mae = components["unet"].requires_grad_(False), components["vae"].requires_grad_(False), \
        components["mae"].requires_grad_(False)
    alignment = components["alignment"].train()
    optimizer = torch.optim.AdamW(alignment.parameters(), lr=1e-4)
    generator = make_generator("asuka-train", args.size, objects=work / "objects")
    image = torch.rand(args.batch, 3, args.size, args.size)
    mask = torch.from_numpy(np.stack([generator.sample(rng)[0] for _ in range(args.batch)])[:, None]).float()

    def bare_steps() -> list[float]:
        times = []
        for _ in range(args.steps + 1):
            started = time.perf_counter()
            with torch.no_grad():
                pixels = image * 2 - 1
                latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
                masked = vae.encode(pixels * (mask < 0.5)).latent_dist.sample() * vae.config.scaling_factor
                latent_mask = F.interpolate(mask, size=latents.shape[-2:])
                noise = torch.randn_like(latents)
                timesteps = torch.randint(1000, (args.batch,))
                prior = mae(image, mask)
            condition = alignment(prior)
            prediction = unet(torch.cat([latents + noise, latent_mask, masked], 1), timesteps,
                              encoder_hidden_states=condition).sample
            F.mse_loss(prediction, noise).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - started)
        return times[1:]

    bare_before = bare_steps()
    run(alignment_stage.AlignmentStage, flags)
    bare_after = bare_steps()  # before and after the loop: other load on the machine changes over minutes
    rows = list(csv.DictReader(open(work / "out" / "log.csv")))[1:]
    step = statistics.median(float(r["step_time"]) for r in rows)
    data = statistics.median(float(r["data_time"]) for r in rows)
    bare_time = min(statistics.median(bare_before), statistics.median(bare_after))
    frozen = _mb([*unet.parameters(), *vae.parameters(), *mae.parameters()])
    trained = _mb(alignment.parameters())
    result = {
        "size": args.size, "batch": args.batch, "timed_steps": args.steps, "workers": args.workers,
        "loop_step_s": round(step, 3), "bare_step_s": round(bare_time, 3),
        "bare_before_s": [round(t, 3) for t in bare_before], "bare_after_s": [round(t, 3) for t in bare_after], "loop_over_bare": round(step / bare_time, 3),
        "data_s": round(data, 4), "data_over_step": round(data / step, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "frozen_params_mb": round(frozen), "trained_params_mb": round(trained),
        "adam_state_mb": round(2 * trained), "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
