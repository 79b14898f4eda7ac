"""Adapter and runner overhead of the baselines, each against a reference measured in the same run.

1. ``telea``: ``run_method`` on ``n`` images of a MISATO folder (reading, writing PNGs, run record) ÷ the bare
   ``inpaint_one`` calls on the same arrays held in memory. Target <= 1.10. The PNG read+write time alone (done
   serially, as the runner's writer) is printed too: the runner overlaps it with the method in two threads, so
   the ratio approaches 1 only where a second core is free.
2. ``lama``: the adapter's ``inpaint`` (array → tensor, padding, forward, crop, quantise, paste-back) on one
   ``size``² image with the full-size big-lama generator (random weights, CPU) ÷ the bare forward pass of the
   same network on the same tensors. Target <= 1.10.
3. ``maefar``: the same for the full-size MAE-FAR network at ``--maefar-size`` (its bare forward includes the MAE
   branch and the positional encoding).
4. ``mat``: as 2. with the full-size MAT generator (random weights saved as ``Places_512_FullData_G.pth`` and loaded
   through the adapter), noise mode const, one image per call (about a minute per forward on 2 busy cores).
5. ``comod``: as 2. with the full-size Places2 512 Co-Mod-GAN generator (random weights saved in the port's
   ``*_net_G_ema.pth`` format and loaded through the adapter); the adapter's own steps are also timed with the
   network replaced by the identity (a load-independent bound on the overhead).

Timings are interleaved with alternating order, so that load changes hit both sides alike.

    python benchmarks/bench_baselines.py [--size 512] [--repeats 2] [--n 200] [--maefar-size 512]
        [--skip-telea] [--skip-lama] [--skip-maefar] [--skip-mat] [--skip-comod]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def best_of(repeats: int, function) -> float:
    """The fastest of ``repeats`` timed calls (seconds)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def tensor_adapter_vs_bare(label: str, net, method, size: int, repeats: int) -> None:
    """``method.inpaint`` on one ``size``² image ÷ the bare ``net`` forward on the same tensors."""
    import torch

    from tests.helpers import box_mask, smooth_image

    rng = np.random.default_rng(0)
    image, hole = smooth_image(rng, size), box_mask(rng, size)
    tensors = method.to_tensors([image], [hole])

    def bare():
        with torch.inference_mode():
            net(*tensors)

    bare()  # warm-up (allocations, FFT plans)
    adapter_vs_bare(label, size, bare, lambda: method.inpaint([image], [hole], [0]), repeats)


def bench_lama(size: int, repeats: int) -> None:
    import torch

    from baselines.lama import _modules, build_generator
    from baselines.torchscript import TensorInpainter

    torch.manual_seed(0)
    net = _modules().LamaInpainter(build_generator()).eval()
    tensor_adapter_vs_bare("lama", net, TensorInpainter(net, "lama", pad_multiple=8), size, repeats)


def bench_maefar(size: int, repeats: int) -> None:
    import torch

    from baselines.maefar import MAEFARMethod, build_network

    torch.manual_seed(0)
    net = build_network().eval()
    tensor_adapter_vs_bare("maefar", net, MAEFARMethod(net, size), size, repeats)


def bench_mat(size: int, repeats: int) -> None:
    import torch

    from baselines.mat import MATInpaint
    from baselines.mat_net import Generator
    from tests.helpers import box_mask, smooth_image

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "Places_512_FullData_G.pth"
        torch.save(Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3).state_dict(), path)
        method = MATInpaint(weights=str(path))
    rng = np.random.default_rng(0)
    image, hole = smooth_image(rng, size), box_mask(rng, size)
    images_in, masks_in = method.network_inputs(image, hole)
    noise_mode = method.effective_noise_mode(*masks_in.shape[-2:])

    def bare():
        with torch.no_grad():
            method.generator(images_in, masks_in, method.z, truncation_psi=1, noise_mode=noise_mode,
                             generator=torch.Generator().manual_seed(0))

    adapter_vs_bare("mat", size, bare, lambda: method.inpaint([image], [hole], [0]), repeats)


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
    adapter_vs_bare("comod", size, bare, lambda: method.inpaint_one(image, hole, 0), repeats)
    network = method.generator
    method.generator = lambda images_in, masks_in, *args, **kwargs: images_in  # the adapter's own steps alone
    steps = best_of(5, lambda: method.inpaint_one(image, hole, 0))
    method.generator = network
    print(f"comod adapter steps without the network: {steps * 1000:.1f} ms")


def adapter_vs_bare(label: str, size: int, bare, adapter, repeats: int) -> None:
    """Time ``bare`` and ``adapter`` alternately ``repeats`` times; print the best of each and their ratio."""
    import torch

    adapter_times, bare_times = [], []
    for repeat in range(repeats):  # interleaved, order alternating, so that load changes hit both alike
        for variant in ("bare", "adapter") if repeat % 2 == 0 else ("adapter", "bare"):
            if variant == "bare":
                bare_times.append(best_of(1, bare))
            else:
                adapter_times.append(best_of(1, adapter))
        print(f"  {label} timing: bare {bare_times[-1]:.2f} s, adapter {adapter_times[-1]:.2f} s", flush=True)
    adapter_time, forward = min(adapter_times), min(bare_times)
    print(f"{label} {size}x{size} CPU, {torch.get_num_threads()} threads: adapter {adapter_time:.2f} s "
          f"({1 / adapter_time:.3f} images/s), bare forward {forward:.2f} s; ratio {adapter_time / forward:.3f} "
          "(target <= 1.10)")


def bench_telea(n: int, size: int, repeats: int) -> None:
    from baselines import create_method, run_method
    from baselines.runner import write_prediction
    from misato.io import read_image, read_mask
    from tests.helpers import write_misato_folder

    with tempfile.TemporaryDirectory() as scratch:
        data = write_misato_folder(Path(scratch) / "data", n=n, size=size)
        names = sorted(p.stem for p in (data / "image").glob("*.png"))
        images = [read_image(data / "image" / f"{name}.png") for name in names]
        masks = [read_mask(data / "mask" / f"{name}.png") for name in names]
        method = create_method("telea")

        def bare():
            for index, (image, mask) in enumerate(zip(images, masks)):
                method.inpaint_one(image, mask, index)

        def io():
            for name, image in zip(names, images):
                read_image(data / "image" / f"{name}.png")
                read_mask(data / "mask" / f"{name}.png")
                write_prediction(Path(scratch) / "io" / f"{name}.png", image)

        def runner():
            run_method(method, data, Path(scratch) / "pred", overwrite=True, progress=False)

        wall: dict = {"bare": [], "runner": [], "io": []}
        cpu: dict = {"bare": [], "runner": [], "io": []}
        for repeat in range(repeats):  # interleaved, order alternating, so that load changes hit all alike
            for variant in ("bare", "runner", "io") if repeat % 2 == 0 else ("io", "runner", "bare"):
                started, started_cpu = time.perf_counter(), time.process_time()
                {"bare": bare, "runner": runner, "io": io}[variant]()
                wall[variant].append(time.perf_counter() - started)
                cpu[variant].append(time.process_time() - started_cpu)
        bare_time, runner_time, io_time = (min(wall[k]) for k in ("bare", "runner", "io"))
        print(f"telea {n} images at {size}x{size}: runner {runner_time:.2f} s, bare adapter {bare_time:.2f} s, "
              f"PNG read+write alone (serial) {io_time:.2f} s; ratio {runner_time / bare_time:.3f} (target <= 1.10); "
              f"CPU time (all threads) runner {min(cpu['runner']):.2f} s ÷ bare {min(cpu['bare']):.2f} s = "
              f"{min(cpu['runner']) / min(cpu['bare']):.3f}; best of {repeats}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="timings per variant (the best is kept)")
    parser.add_argument("--n", type=int, default=200, help="telea images")
    parser.add_argument("--skip-lama", action="store_true")
    parser.add_argument("--skip-mat", action="store_true")
    parser.add_argument("--skip-comod", action="store_true")
    parser.add_argument("--skip-telea", action="store_true")
    parser.add_argument("--maefar-size", type=int, default=512, choices=(256, 512), help="MAE-FAR's --size")
    parser.add_argument("--skip-maefar", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_telea:
        bench_telea(args.n, args.size, args.repeats)
    if not args.skip_lama:
        bench_lama(args.size, args.repeats)
    if not args.skip_maefar:
        bench_maefar(args.maefar_size, args.repeats)
    if not args.skip_mat:
        bench_mat(args.size, args.repeats)
    if not args.skip_comod:
        bench_comod(args.size, args.repeats)


if __name__ == "__main__":
    main()
