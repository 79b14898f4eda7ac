"""Evaluator speed and memory, as ratios against references measured in the same run.

    python benchmarks/bench_evaluate.py [--n 32] [--size 512] [--parts all|pipeline|frechet|ids|memory]

Parts:
- ``pipeline``: N synthetic pairs, full-size random-init networks in the official layouts.
  1. evaluator wall ÷ bare network forwards (Inception on real+fake, LPIPS-AlexNet on composite+gt, PyTorch
     defaults, inputs already preprocessed) — target ≤ 1.0;
  2. evaluator ÷ a two-pass pipeline in the style of the official scripts (pass 1: PSNR/SSIM/LPIPS image by
     image; pass 2: Inception features, scipy sqrtm FID, IDS) — target ≤ 0.75;
  3. re-evaluation with cached ground-truth features ÷ cold evaluation — target ≤ 0.75 (at N = 48).
  Each ratio is measured ``--repeat`` times (references in the same minutes) and printed as median [min–max],
  of wall time and of CPU time (this process plus its finished children, i.e. the DataLoader workers; on a
  machine shared with other jobs, wall time is disturbed and the CPU ratio is the steadier one).
- ``cache``: only ratio 3, for large N at small sizes (``--n 2000 --size 96``).
- ``update``: ``InpaintingMetrics.update`` on tensors already in memory ÷ the bare network forwards — target ≤ 1.05.
- ``frechet``: eigh route ÷ scipy ``sqrtm`` route at 2048² float64 (target ≤ 0.4), and their relative difference.
- ``ids``: LinearSVC's share of the IDS computation at N = 2000 (PCA 512).
- ``memory``: peak RSS of the evaluator at two N in fresh processes (features only: should not grow with N
  beyond N × 2 × 2048 × 4 bytes).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (DataLoader workers are joined)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _Clock:
    """Wall and CPU seconds since construction: ``clock.read()`` -> ``(wall, cpu)``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, _cpu_seconds() - self.cpu


def _clocked(function, *args, **kwargs) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one call."""
    clock = _Clock()
    function(*args, **kwargs)
    return clock.read()


def make_data(folder: Path, n: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """N synthetic MISATO pairs plus noisy predictions."""
    from tests.helpers import write_misato_folder, write_predictions

    gt = write_misato_folder(folder / "gt", n=n, size=size, seed=seed)
    return gt, write_predictions(gt, folder / "pred")


def make_weights(folder: Path, protocol: str) -> dict[str, Path]:
    """Random-init networks of the real architectures, saved in the official file formats."""
    from evaluate.features import save_random_official_weights
    from evaluate.protocols import get_protocol
    from misato.weights import get_entry

    inception = get_protocol(protocol).feature_weights
    paths = {}
    for name in (inception, "alexnet"):
        paths[name] = save_random_official_weights(name, folder / get_entry(name).filename, seed=0)
    return paths


def _pairs_in_memory(gt: Path, pred: Path):
    """Ground truths, composites (uint8 [H, W, 3]) and masks of every pair, sorted by name."""
    from evaluate.functional import composite
    from misato.io import list_images, read_image, read_mask_uint8

    gts, comps, masks, preds = [], [], [], []
    for name in sorted(list_images(pred)):
        g, p = read_image(gt / "image" / f"{name}.png"), read_image(pred / f"{name}.png")
        m = read_mask_uint8(gt / "mask" / f"{name}.png")
        gts.append(g), preds.append(p), masks.append(m), comps.append(composite(p, g, m))
    return gts, comps, masks, preds


def bare_forwards(gt: Path, pred: Path, weights: dict[str, Path], protocol: str, batch: int) -> tuple[float, float]:
    """``(wall, cpu)`` seconds for the network forwards alone (PyTorch's default memory format), on inputs decoded
    and preprocessed beforehand (the protocol's route)."""
    import torch

    from evaluate.features import PREPROCESSORS, build_feature_extractor, build_lpips
    from evaluate.protocols import get_protocol

    chosen = get_protocol(protocol)
    extractor = build_feature_extractor(chosen.feature_network, weights_path=weights[chosen.feature_weights])
    lpips_net = build_lpips("alex", backbone_path=weights["alexnet"])
    extractor.to(memory_format=torch.contiguous_format), lpips_net.to(memory_format=torch.contiguous_format)
    gts, comps, _, _ = _pairs_in_memory(gt, pred)
    prepare = PREPROCESSORS[chosen.preprocess]
    to_unit = lambda images: torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images]).float() / 255  # noqa: E731
    real, fake = to_unit(gts), to_unit(comps)

    def network_input(images):
        prepared = torch.stack([prepare(i) for i in images]).float()
        if protocol == "asuka":
            return (prepared / 255 - extractor.mean) / extractor.std
        return (prepared - 128) / 128

    pre_real, pre_fake = network_input(gts), network_input(comps)
    network = extractor.network if protocol == "asuka" else (lambda x: extractor._tapped(x, "2048"))
    with torch.no_grad():
        network(pre_real[:batch])  # warm-up: one-time kernel set-up is not part of the reference
        lpips_net(fake[:batch], real[:batch])
        clock = _Clock()
        for i in range(0, len(gts), batch):
            network(pre_real[i : i + batch])
            network(pre_fake[i : i + batch])
            lpips_net(fake[i : i + batch], real[i : i + batch])
        return clock.read()


def part_update(args) -> None:
    """InpaintingMetrics.update on float tensors already in memory ÷ the bare forwards."""
    import warnings

    import torch

    from evaluate.metrics import InpaintingMetrics

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt, pred = make_data(tmp, args.n, args.size)
        weights = make_weights(tmp / "w", args.protocol)
        bare, bare_cpu = bare_forwards(gt, pred, weights, args.protocol, args.batch)
        gts, _, masks, preds = _pairs_in_memory(gt, pred)
        to_t = lambda images: torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images]).float() / 255  # noqa: E731
        p, g, m = to_t(preds), to_t(gts), torch.from_numpy(np.stack(masks))[:, None]
        inception = weights["inception-v3-imagenet" if args.protocol == "asuka" else "fid-inception"]
        scorer = InpaintingMetrics(args.protocol, inception_weights=inception, alexnet_weights=weights["alexnet"],
                                   ids_pca="none")
        scorer.update(p[:1], g[:1], m[:1], names=["warm-up"])  # warm-up, as for the reference
        scorer.reset()
        clock = _Clock()
        for i in range(0, args.n, args.batch):
            scorer.update(p[i : i + args.batch], g[i : i + args.batch], m[i : i + args.batch])
        took, took_cpu = clock.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scorer.compute()
    print(f"update    N={args.n} size={args.size} protocol={args.protocol} batch={args.batch}")
    print(f"  bare forwards          {bare:8.2f} s wall {bare_cpu:8.2f} s CPU")
    print(f"  InpaintingMetrics.update {took:6.2f} s wall {took_cpu:8.2f} s CPU   ratio to bare forwards: wall "
          f"{took / bare:5.2f}, CPU {took_cpu / bare_cpu:5.2f}  (target <= 1.05)")


def official_style(gt: Path, pred: Path, weights: dict[str, Path], protocol: str, batch: int) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of two passes like the official scripts: per-image PSNR/SSIM/LPIPS, then features,
    sqrtm FID and IDS."""
    import scipy.linalg
    import torch
    from PIL import Image
    from skimage.metrics import structural_similarity
    from sklearn.decomposition import PCA
    from sklearn.svm import LinearSVC

    from evaluate.features import build_feature_extractor, build_lpips
    from evaluate.protocols import get_protocol
    from misato.io import list_images

    chosen = get_protocol(protocol)
    clock = _Clock()
    lpips_net = build_lpips("alex", backbone_path=weights["alexnet"])
    names = sorted(list_images(pred))

    def load(name):
        g = np.asarray(Image.open(gt / "image" / f"{name}.png").convert("RGB")) / 255.0
        p = np.asarray(Image.open(pred / f"{name}.png").convert("RGB")) / 255.0
        m = (np.asarray(Image.open(gt / "mask" / f"{name}.png").convert("L")) / 255.0 >= 0.5)[..., None]
        return g, p * m + g * (1 - m)

    weights_gray = np.array([0.2989, 0.587, 0.114])
    for name in names:  # pass 1
        g, c = load(name)
        -10 * np.log10(np.mean((g - c) ** 2) + 1e-7)
        structural_similarity(g @ weights_gray, c @ weights_gray, data_range=1.0)
        with torch.no_grad():
            to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float()  # noqa: E731
            lpips_net(to_t(c), to_t(g))
    extractor = build_feature_extractor(chosen.feature_network, weights_path=weights[chosen.feature_weights])
    real, fake = [], []
    for i in range(0, len(names), batch):  # pass 2
        loaded = [load(n) for n in names[i : i + batch]]
        with torch.no_grad():
            real.append(extractor(torch.from_numpy(np.stack([g for g, _ in loaded])).permute(0, 3, 1, 2).float()).numpy())
            fake.append(extractor(torch.from_numpy(np.stack([c for _, c in loaded])).permute(0, 3, 1, 2).float()).numpy())
    real, fake = np.concatenate(real).astype(np.float64), np.concatenate(fake).astype(np.float64)
    mu1, mu2, s1, s2 = real.mean(0), fake.mean(0), np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    x = np.vstack([real, fake])
    if len(names) * 2 > 512:
        x = PCA(512).fit_transform(x)
    LinearSVC(dual=False).fit(x, np.r_[np.ones(len(names)), np.zeros(len(names))])
    return clock.read()


def _spread(values: list[float]) -> str:
    """``median [min–max]`` of repeated ratios."""
    return f"{float(np.median(values)):5.2f} [{min(values):.2f}–{max(values):.2f}]"


def _ratio_line(label: str, ratios: dict[str, list[float]], key: str, target: str) -> str:
    """One printed ratio, wall and CPU (``ratios[key]`` and ``ratios[key + "_cpu"]``)."""
    return f"  {label:40s} wall {_spread(ratios[key])}  CPU {_spread(ratios[key + '_cpu'])}  (target {target})"


def _evaluator_settings(tmp: Path, weights: dict[str, Path], args) -> dict:
    return dict(
        protocol=args.protocol,
        inception_weights=weights[("inception-v3-imagenet" if args.protocol == "asuka" else "fid-inception")],
        alexnet_weights=weights["alexnet"],
        batch_size=args.batch,
        workers=args.workers,
        cache_dir=tmp / "cache",
        progress=False,
        ids_pca="none" if 2 * args.n <= args.size else None,
    )


def part_pipeline(args) -> None:
    """Per repetition, in this order: bare forwards, cold evaluation (empty cache), warm evaluation (ground-truth
    features cached), the official-style two passes; the ratios of each repetition come from the same minutes."""
    import shutil

    from evaluate import evaluate_folder

    ratios: dict[str, list[float]] = {key: [] for key in ("bare", "official", "warm", "bare_cpu", "official_cpu",
                                                           "warm_cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt, pred = make_data(tmp, args.n, args.size)
        weights = make_weights(tmp / "w", args.protocol)
        common = _evaluator_settings(tmp, weights, args)
        warm_up = make_data(tmp / "warm-up", 2, args.size)  # imports and first-call set-up, untimed
        evaluate_folder(warm_up[1], warm_up[0], **{**common, "use_cache": False, "ids_pca": "none"})
        for _ in range(args.repeat):
            shutil.rmtree(tmp / "cache", ignore_errors=True)
            bare = bare_forwards(gt, pred, weights, args.protocol, args.batch)
            cold = _clocked(evaluate_folder, pred, gt, **common)
            warm = _clocked(evaluate_folder, pred, gt, **common)
            official = official_style(gt, pred, weights, args.protocol, args.batch)
            for suffix, i in (("", 0), ("_cpu", 1)):
                ratios["bare" + suffix].append(cold[i] / bare[i])
                ratios["official" + suffix].append(cold[i] / official[i])
                ratios["warm" + suffix].append(warm[i] / cold[i])
            print(f"  run (wall/CPU s): bare {bare[0]:.2f}/{bare[1]:.2f}, cold {cold[0]:.2f}/{cold[1]:.2f}, warm "
                  f"{warm[0]:.2f}/{warm[1]:.2f}, official {official[0]:.2f}/{official[1]:.2f}", flush=True)
    print(f"pipeline  N={args.n} size={args.size} protocol={args.protocol} batch={args.batch} workers={args.workers} "
          f"repeats={args.repeat}: median [min–max]")
    print(_ratio_line("evaluator (cold) / bare forwards", ratios, "bare", "<= 1.0"))
    print(_ratio_line("evaluator (cold) / official-style 2-pass", ratios, "official", "<= 0.75"))
    print(_ratio_line("evaluator (GT cached) / cold", ratios, "warm", "<= 0.75"))


def part_cache(args) -> None:
    """Warm (ground-truth features cached) ÷ cold only, for large N at small sizes (no references needed)."""
    import shutil

    from evaluate import evaluate_folder

    ratios: dict[str, list[float]] = {"warm": [], "warm_cpu": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt, pred = make_data(tmp, args.n, args.size)
        weights = make_weights(tmp / "w", args.protocol)
        common = _evaluator_settings(tmp, weights, args)
        for _ in range(args.repeat):
            shutil.rmtree(tmp / "cache", ignore_errors=True)
            cold = _clocked(evaluate_folder, pred, gt, **common)
            warm = _clocked(evaluate_folder, pred, gt, **common)
            ratios["warm"].append(warm[0] / cold[0]), ratios["warm_cpu"].append(warm[1] / cold[1])
            print(f"  run (wall/CPU s): cold {cold[0]:.2f}/{cold[1]:.2f}, warm {warm[0]:.2f}/{warm[1]:.2f}", flush=True)
    print(f"cache     N={args.n} size={args.size} protocol={args.protocol} batch={args.batch} workers={args.workers} "
          f"repeats={args.repeat}: median [min–max]")
    print(_ratio_line("evaluator (GT cached) / cold", ratios, "warm", "<= 0.75"))


def part_frechet(args) -> None:
    import scipy.linalg

    from evaluate.functional import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 2048))
    b = a[:, ::-1] * 0.9 + rng.normal(scale=0.5, size=a.shape)
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def scipy_route():
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))

    t_ref, ref = min((_timed(scipy_route) for _ in range(2)), key=lambda t: t[0])
    t_ours, ours = min((_timed(frechet_distance, mu1, s1, mu2, s2) for _ in range(2)), key=lambda t: t[0])
    print(f"frechet   2048x2048 float64: eigh {t_ours:.2f} s, scipy sqrtm {t_ref:.2f} s, ratio {t_ours / t_ref:.2f} "
          f"(target <= 0.4), relative difference {abs(ours - ref) / abs(ref):.1e}")


def part_ids(args) -> None:
    import warnings

    from sklearn.decomposition import PCA
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    real = rng.normal(size=(2000, 2048)).astype(np.float32)
    fake = (real + rng.normal(scale=1.0, size=real.shape)).astype(np.float32)
    stacked = np.concatenate([real, fake]).astype(np.float64)
    t_pca, projected = _timed(PCA(512, svd_solver="full").fit_transform, stacked)
    labels = np.r_[np.ones(2000), np.zeros(2000)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_svm, _ = _timed(LinearSVC(dual=False, random_state=0).fit, projected, labels)
    print(f"ids       N=2000 PCA-512: PCA {t_pca:.2f} s, LinearSVC {t_svm:.2f} s "
          f"(SVM share of IDS {t_svm / (t_pca + t_svm):.0%})")


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _memory_child(folder: Path, protocol: str) -> None:
    """Evaluate a prepared folder in a fresh process and print its peak RSS (set-up excluded)."""
    from evaluate import evaluate_folder

    weights = json.loads((folder / "weights.json").read_text())
    before = _peak_rss_mb()
    result = evaluate_folder(folder / "pred", folder / "gt", protocol=protocol, metrics="fid,uids,pids",
                             inception_weights=weights["inception"], ids_pca="none", use_cache=False,
                             progress=False, batch_size=16)
    print(json.dumps({"n": result.summary["n"], "before_mb": before, "peak_mb": _peak_rss_mb()}))


def part_memory(args) -> None:
    results = []
    for n in args.memory_n:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_data(folder, n, args.memory_size)
            weights = make_weights(folder / "w", args.protocol)
            inception = weights["inception-v3-imagenet" if args.protocol == "asuka" else "fid-inception"]
            (folder / "weights.json").write_text(json.dumps({"inception": str(inception)}))
            output = subprocess.run([sys.executable, __file__, "--memory-child", str(folder), "--protocol",
                                     args.protocol], check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    for r in results:
        print(f"memory    N={r['n']:5d} at {args.memory_size}px: peak RSS {r['peak_mb']:.0f} MB "
              f"(after imports {r['before_mb']:.0f} MB)")
    if len(results) == 2:
        growth = results[1]["peak_mb"] - results[0]["peak_mb"]
        features = (results[1]["n"] - results[0]["n"]) * 2 * 2048 * 4 / 2**20
        print(f"          growth {growth:.0f} MB for {results[1]['n'] - results[0]['n']} more images "
              f"(their float32 features alone: {features:.0f} MB; FID/IDS work on float64 copies)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="all")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--protocol", default="asuka")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each timed ratio")
    parser.add_argument("--memory-n", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--memory-size", type=int, default=64)
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child, args.protocol)
        return
    parts = ["frechet", "ids", "pipeline", "update", "memory"] if args.parts == "all" else args.parts.split(",")
    for part in parts:
        globals()[f"part_{part}"](args)


if __name__ == "__main__":
    main()
