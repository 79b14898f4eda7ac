"""Adapter and runner overhead of the baselines, each against a reference measured in the same run.

1. ``telea``: ``run_method`` on ``n`` images of a MISATO folder into a fresh folder (reading, writing PNGs, run
   record) ÷ the bare ``inpaint_one`` calls on the same arrays held in memory, median [min–max] of the interleaved
   repeats, in wall and in CPU time. Target <= 1.10. First the CPU time per image of each step of a run, done
   serially: the runner overlaps the file work with the method in other threads, so the wall ratio approaches 1
   only where a second core is free for it (the load averages are printed), while the CPU ratio is about
   1 + file work ÷ method.
2. ``lama``: the adapter's ``inpaint`` (array → tensor, padding, forward, crop, quantise, paste-back) on one
   ``size``² image with the full-size big-lama generator (random weights, CPU) ÷ the bare forward pass of the
   same network on the same tensors. Target <= 1.10.
3. ``maefar``: the same for the full-size MAE-FAR network at ``--maefar-size`` (its bare forward includes the MAE
   branch and the positional encoding).
4. ``mat``: as 2. with the full-size MAT generator (random weights saved as ``Places_512_FullData_G.pth`` and loaded
   through the adapter), noise mode const, one image per call (about a minute per forward on 2 busy cores).
5. ``comod``: as 2. with the full-size Places2 512 Co-Mod-GAN generator (random weights saved in the port's
   ``*_net_G_ema.pth`` format and loaded through the adapter).

For each network the adapter's own steps are also timed with the network replaced by the identity: a bound on
its overhead that load hardly disturbs (ratio <= 1 + steps ÷ forward).

Timings are interleaved with alternating order, so that load changes hit both sides alike.

    python benchmarks/bench_baselines.py [--size 512] [--repeats 3] [--n 200] [--maefar-size 512]
        [--skip-telea] [--skip-lama] [--skip-maefar] [--skip-mat] [--skip-comod]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
    adapter_steps(label, method, "net", lambda *tensors: tensors[0], lambda: method.inpaint([image], [hole], [0]))


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
    adapter_steps("mat", method, "generator", lambda images_in, masks_in, *args, **kwargs: images_in,
                  lambda: method.inpaint([image], [hole], [0]))


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
    adapter_steps("comod", method, "generator", lambda images_in, masks_in, *args, **kwargs: images_in,
                  lambda: method.inpaint_one(image, hole, 0))


def adapter_steps(label: str, method, attribute: str, identity, adapter) -> None:
    """Time ``adapter`` with ``method.<attribute>`` (the network) replaced by ``identity``: the adapter's own
    steps alone, a bound on its overhead that load hardly disturbs."""
    network = getattr(method, attribute)
    setattr(method, attribute, identity)
    try:
        steps = best_of(5, adapter)
    finally:
        setattr(method, attribute, network)
    print(f"{label} adapter steps without the network: {steps * 1000:.1f} ms (best of 5)")


def adapter_vs_bare(label: str, size: int, bare, adapter, repeats: int) -> None:
    """Time ``bare`` and ``adapter`` alternately ``repeats`` times; print the median [min–max] of their ratios in
    wall and in CPU time, and the load averages."""
    import torch

    wall: dict = {"bare": [], "adapter": []}
    cpu: dict = {"bare": [], "adapter": []}
    load = os.getloadavg()
    for repeat in range(repeats):  # interleaved, order alternating, so that load changes hit both alike
        for variant in ("bare", "adapter") if repeat % 2 == 0 else ("adapter", "bare"):
            started, started_cpu = time.perf_counter(), time.process_time()
            (bare if variant == "bare" else adapter)()
            wall[variant].append(time.perf_counter() - started)
            cpu[variant].append(time.process_time() - started_cpu)
        print(f"  {label} timing: bare {wall['bare'][-1]:.2f} s, adapter {wall['adapter'][-1]:.2f} s", flush=True)
    adapter_time, forward = statistics.median(wall["adapter"]), statistics.median(wall["bare"])
    print(f"{label} {size}x{size} CPU, {torch.get_num_threads()} threads: adapter {adapter_time:.2f} s "
          f"({1 / adapter_time:.3f} images/s), bare forward {forward:.2f} s (medians); ratio "
          f"{median_range([a / b for a, b in zip(wall['adapter'], wall['bare'])])} (target <= 1.10), CPU time "
          f"ratio {median_range([a / b for a, b in zip(cpu['adapter'], cpu['bare'])])}; {repeats} repeats; load "
          f"averages {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


def median_range(values: list[float]) -> str:
    """``median [min–max]`` of ``values`` with three decimals."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def bench_telea(n: int, size: int, repeats: int) -> None:
    from baselines import create_method, run_method
    from misato.io import read_image, read_mask
    from tests.helpers import write_misato_folder

    with tempfile.TemporaryDirectory() as scratch:
        data = write_misato_folder(Path(scratch) / "data", n=n, size=size)
        names = sorted(p.stem for p in (data / "image").glob("*.png"))
        images = [read_image(data / "image" / f"{name}.png") for name in names]
        masks = [read_mask(data / "mask" / f"{name}.png") for name in names]
        method = create_method("telea")
        telea_stages(method, data, Path(scratch) / "stages")

        def bare():
            for index, (image, mask) in enumerate(zip(images, masks)):
                method.inpaint_one(image, mask, index)

        def runner():
            run_method(method, data, Path(scratch) / "pred", progress=False)

        wall: dict = {"bare": [], "runner": []}
        cpu: dict = {"bare": [], "runner": []}
        others: dict = {"bare": [], "runner": []}
        load = os.getloadavg()
        for repeat in range(repeats):  # interleaved, order alternating, so that load changes hit both alike
            for variant in ("bare", "runner") if repeat % 2 == 0 else ("runner", "bare"):
                shutil.rmtree(Path(scratch) / "pred", ignore_errors=True)  # a fresh run each time
                started, started_cpu, started_busy = time.perf_counter(), time.process_time(), busy_cpu_seconds()
                {"bare": bare, "runner": runner}[variant]()
                wall[variant].append(time.perf_counter() - started)
                cpu[variant].append(time.process_time() - started_cpu)
                others[variant].append((busy_cpu_seconds() - started_busy - cpu[variant][-1]) / wall[variant][-1])
            print(f"  telea timing: bare {wall['bare'][-1]:.2f} s, runner {wall['runner'][-1]:.2f} s; other "
                  f"processes busy {others['bare'][-1]:.2f} and {others['runner'][-1]:.2f} CPUs", flush=True)
        ratios = [r / b for r, b in zip(wall["runner"], wall["bare"])]
        cpu_ratios = [r / b for r, b in zip(cpu["runner"], cpu["bare"])]
        print(f"telea {n} images at {size}x{size}: runner {statistics.median(wall['runner']):.2f} s, bare adapter "
              f"{statistics.median(wall['bare']):.2f} s (medians); ratio {median_range(ratios)} (target <= 1.10); "
              f"CPU time (all threads) ratio {median_range(cpu_ratios)}; {repeats} interleaved repeats; load "
              f"averages {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs; "
              "a ratio near 1 needs a CPU free for the file work); other processes kept "
              f"{median_range(others['runner'])} CPUs busy during the runner's timings")


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, all processes; Linux /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def telea_stages(method, data: Path, scratch: Path) -> None:
    """Print the CPU milliseconds per image of each step of a run, done serially, besides the method's own."""
    import cv2

    from baselines.base import image_seed
    from baselines.runner import RUN_PACKAGES, _checked_results, data_fingerprint, write_prediction
    from misato.io import atomic_write_text, read_image, read_mask
    from misato.layout import open_pairs
    from misato.provenance import provenance

    pairs = open_pairs(data)
    names = pairs.names
    images = [read_image(pairs.images[name]) for name in names]
    masks = [read_mask(pairs.masks[name]) for name in names]
    results = [method.inpaint_one(image, mask, image_seed(0, name)) for name, image, mask in zip(names, images, masks)]
    parameters = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    stages = {
        "listing, pairing and data fingerprint": lambda: data_fingerprint(open_pairs(data)),
        "read + decode image": lambda: [read_image(pairs.images[name]) for name in names],
        "read + decode mask": lambda: [read_mask(pairs.masks[name]) for name in names],
        "result checks (_checked_results)": lambda: [_checked_results(method, scratch, [name], [image], [result])
                                                     for name, image, result in zip(names, images, results)],
        "image seeds": lambda: [image_seed(0, name) for name in names],
        "the method (inpaint_one)": lambda: [method.inpaint_one(i, m, 0) for i, m in zip(images, masks)],
        "RGB→BGR + PNG encode": lambda: [cv2.imencode(".png", cv2.cvtColor(r, cv2.COLOR_RGB2BGR), parameters)
                                         for r in results],
        "encode + atomic write (write_prediction)": lambda: [write_prediction(scratch / f"{name}.png", result)
                                                             for name, result in zip(names, results)],
        "run record (provenance + run.json, twice a run)": lambda: [
            atomic_write_text(scratch / "run.json", json.dumps(provenance(RUN_PACKAGES))) for _ in range(2)],
    }
    spent = {}
    for stage, work in stages.items():
        started = time.process_time()
        work()
        spent[stage] = (time.process_time() - started) * 1000 / len(names)
    print(f"telea run stages, CPU ms per image over {len(names)} images (serial, one thread):")
    for stage, milliseconds in spent.items():
        print(f"  {stage:48s} {milliseconds:7.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings per variant")
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
