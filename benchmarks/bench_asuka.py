"""ASUKA pipeline vs diffusers' StableDiffusionInpaintPipeline: wall time and peak memory on CPU.

Both use the same full-size, randomly initialised SD-1.5-inpainting UNet and VAE (DDIM scheduler), the same image,
mask, step count and seed, and no classifier-free guidance. ASUKA adds the ViT-B MAE prior, the alignment module
and the inpainting decoder (initialised from the VAE decoder); diffusers gets fixed random prompt embeddings
instead of a text encoder.

- timing: one process holds both pipelines (sharing the UNet and VAE) and alternates them ``--repeats`` times, so
  load from other processes affects both alike; the best wall of each is compared. ASUKA's extra stages (MAE +
  alignment, the decoder's condition encoder) are timed separately.
- memory: each pipeline runs once in its own subprocess; peak RSS of the process and its increase during the call.

    python benchmarks/bench_asuka.py [--size 512] [--steps 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(size: int, steps: int, which: tuple[str, ...]) -> dict:
    """Callables ``name -> run(generator)`` for the requested pipelines, sharing one UNet and VAE."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    from asuka.pipeline import ASUKAInpaintPipeline
    from asuka.testing import get_dummy_components

    components = get_dummy_components(seed=0, decoder="asuka" in which, full_size=True)
    if "asuka" not in which:
        components.update(mae=None, alignment=None)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[size // 4 : 3 * size // 4, size // 8 : size // 2] = True
    calls = {}
    if "asuka" in which:
        asuka = ASUKAInpaintPipeline(**components)
        asuka.set_progress_bar_config(disable=True)
        calls["asuka"] = lambda generator: asuka(image, mask, num_inference_steps=steps, generator=generator,
                                                 output_type="np")
        calls["_asuka_pipe"] = asuka
    if "diffusers" in which:
        reference = StableDiffusionInpaintPipeline(
            vae=components["vae"], unet=components["unet"], scheduler=components["scheduler"], text_encoder=None,
            tokenizer=None, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        reference.set_progress_bar_config(disable=True)
        prompt_embeds = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
        pil_image, pil_mask = Image.fromarray(image), Image.fromarray(mask.astype(np.uint8) * 255)
        calls["_diffusers_pipe"] = reference
        calls["diffusers"] = lambda generator: reference(
            prompt_embeds=prompt_embeds, image=pil_image, mask_image=pil_mask, height=size, width=size,
            num_inference_steps=steps, guidance_scale=1.0, generator=generator, output_type="np")
    return calls


def build_warm_up(calls: dict) -> None:
    """One 1-step 64 × 64 call of each pipeline, so lazy initialisation is not charged to whichever runs first."""
    import numpy as np
    import torch
    from PIL import Image

    image, mask = np.zeros((64, 64, 3), np.uint8), np.eye(64, dtype=bool)
    calls["_asuka_pipe"](image, mask, num_inference_steps=1, output_type="np")
    calls["_diffusers_pipe"](prompt_embeds=torch.zeros(1, 77, 768), image=Image.fromarray(image),
                             mask_image=Image.fromarray(mask.astype(np.uint8) * 255), height=64, width=64,
                             num_inference_steps=1, guidance_scale=1.0, output_type="np")


def timed(call) -> float:
    import torch

    start = time.perf_counter()
    call(torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def child_timing(size: int, steps: int, repeats: int) -> dict:
    import torch

    calls = build(size, steps, ("asuka", "diffusers"))
    build_warm_up(calls)
    walls: dict[str, list[float]] = {"asuka": [], "diffusers": []}
    for _ in range(repeats):
        for name in ("diffusers", "asuka"):
            walls[name].append(timed(calls[name]))
    pipe = calls["_asuka_pipe"]
    image = torch.rand(1, 3, size, size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., : size // 2, :] = 1
    with torch.no_grad():
        start = time.perf_counter()
        pipe.encode_prior(image, mask)
        prior_s = time.perf_counter() - start
        start = time.perf_counter()
        pipe.decoder.condition_encoder(torch.cat([image, mask], 1))
        condition_s = time.perf_counter() - start
    return {"walls": walls, "prior_s": prior_s, "condition_encoder_s": condition_s,
            "threads": torch.get_num_threads()}


def child_memory(which: str, size: int, steps: int) -> dict:
    call = build(size, steps, (which,))[which]
    before = _rss_mb()
    timed(call)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_call_mb": before}


def run_child(*arguments: str) -> dict:
    command = [sys.executable, __file__, *arguments]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = ["--size", str(args.size), "--steps", str(args.steps), "--repeats", str(args.repeats)]
    if args.child == "timing":
        print(json.dumps(child_timing(args.size, args.steps, args.repeats)))
        return 0
    if args.child:
        print(json.dumps(child_memory(args.child, args.size, args.steps)))
        return 0
    timing = run_child("--child", "timing", *shape)
    best = {name: min(walls) for name, walls in timing["walls"].items()}
    for name in ("diffusers", "asuka"):
        walls = ", ".join(f"{w:.1f}" for w in timing["walls"][name])
        print(f"{name:9} wall best {best[name]:7.2f} s  (runs: {walls})")
    print(f"  ASUKA extra stages: MAE + alignment {timing['prior_s']:.2f} s, decoder condition encoder "
          f"{timing['condition_encoder_s']:.2f} s")
    print(f"ASUKA / diffusers wall ratio: {best['asuka'] / best['diffusers']:.3f} (target <= 1.10)  "
          f"[{args.size}x{args.size}, {args.steps} steps, {timing['threads']} threads]")
    memory = {name: run_child("--child", name, *shape) for name in ("diffusers", "asuka")}
    for name, record in memory.items():
        print(f"{name:9} peak RSS {record['peak_rss_mb']:7.0f} MB "
              f"(+{record['peak_rss_mb'] - record['rss_before_call_mb']:.0f} MB during the call)")
    print(f"ASUKA / diffusers peak RSS ratio: {memory['asuka']['peak_rss_mb'] / memory['diffusers']['peak_rss_mb']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
