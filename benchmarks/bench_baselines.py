"""Adapter overhead of the native baselines, each against the bare forward pass measured in the same run.

``comod``: the adapter's ``inpaint_one`` (array → tensors, padding, seeded latent and noise, forward, quantisation,
paste-back) on one ``size``² image with the full-size Places2 512 Co-Mod-GAN generator (random weights saved in the
port's ``*_net_G_ema.pth`` format and loaded through the adapter, CPU) ÷ the bare generator call on the same
tensors. Target <= 1.10. Timings are interleaved (bare, adapter, bare, …) so that load changes hit both alike; on a
shared machine a forward of tens of seconds varies by more than the adapter adds, so the adapter's own steps are
also timed with the network replaced by the identity (a load-independent bound on the overhead).

    python benchmarks/bench_baselines.py [--size 512] [--repeats 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def timed(function) -> float:
    """Seconds taken by one call."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def bench_comod(size: int, repeats: int) -> None:
    import torch

    from baselines.comod import CoModInpaint
    from baselines.comod_net import Generator
    from tests.helpers import box_mask, smooth_image

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "co-mod-gan-places2-050000_net_G_ema.pth"
        torch.save(Generator().state_dict(), path)
        method = CoModInpaint(weights=str(path))
    rng = np.random.default_rng(0)
    image, hole = smooth_image(rng, size), box_mask(rng, size)
    images_in, masks_in = method.network_inputs(image, hole)

    def bare():
        z, generator = method.latent(0)
        with torch.no_grad():
            method.generator(images_in, masks_in, z, noise_mode="random", generator=generator)

    bare()  # warm-up (allocations)
    adapter_times, bare_times = [], []
    for _ in range(repeats):
        bare_times.append(timed(bare))
        adapter_times.append(timed(lambda: method.inpaint_one(image, hole, 0)))
        print(f"  comod timing: bare {bare_times[-1]:.2f} s, adapter {adapter_times[-1]:.2f} s", flush=True)
    adapter, forward = min(adapter_times), min(bare_times)
    network = method.generator
    method.generator = lambda images_in, masks_in, *args, **kwargs: images_in  # the adapter's own steps alone
    steps = min(timed(lambda: method.inpaint_one(image, hole, 0)) for _ in range(5))
    method.generator = network
    print(f"comod {size}x{size} CPU, {torch.get_num_threads()} threads: adapter {adapter:.2f} s "
          f"({1 / adapter:.3f} images/s), bare forward {forward:.2f} s; ratio {adapter / forward:.3f} (target <= 1.10); "
          f"adapter steps without the network {steps * 1000:.1f} ms = (bare + steps) / bare "
          f"{(forward + steps) / forward:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="timings per variant (the best is kept)")
    args = parser.parse_args(argv)
    bench_comod(args.size, args.repeats)


if __name__ == "__main__":
    main()
