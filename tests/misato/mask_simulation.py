"""Deliberately independent re-derivations of the mask distributions, written from REFERENCE.md section 3.

They use numpy's legacy ``RandomState`` and rasterise a thick line as the set of pixel centres within a radius
of the segment (a capsule), instead of OpenCV/Pillow; only summary statistics are compared with the library's
generators, so the two must agree in distribution, not pixel by pixel. Radii: LaMa draws with ``cv2.line``,
whose thickness-``t`` lines cover pixel centres within ``(t + 1) // 2 + 0.5`` of the segment (checked in
``test_masks_lama.py``); Co-Mod-GAN draws with Pillow, whose width-``w`` lines are ``w`` wide (radius ``w / 2``).
"""
from __future__ import annotations

import math

import numpy as np


def paint_capsule(canvas: np.ndarray, p: tuple[float, float], q: tuple[float, float], width: float) -> None:
    """Set every pixel centre within ``width / 2`` of segment ``p``–``q`` (points as ``(x, y)``)."""
    r = width / 2
    size = canvas.shape[0]
    x0, x1 = int(max(0, math.floor(min(p[0], q[0]) - r))), int(min(size, math.ceil(max(p[0], q[0]) + r) + 1))
    y0, y1 = int(max(0, math.floor(min(p[1], q[1]) - r))), int(min(size, math.ceil(max(p[1], q[1]) + r) + 1))
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(float)
    dx, dy = q[0] - p[0], q[1] - p[1]
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - p[0]) * dx + (ys - p[1]) * dy) / length2, 0, 1)
    distance2 = (xs - p[0] - t * dx) ** 2 + (ys - p[1] - t * dy) ** 2
    canvas[y0:y1, x0:x1] |= distance2 <= r * r


def lama_mask(rs: np.random.RandomState, size: int, strokes: tuple[int, int], max_width: int, max_len: int,
              box_prob: float = 0.0, margin: int = 0, box_side: tuple[int, int] = (0, 0),
              box_times: tuple[int, int] = (0, 0), max_angle: int = 4) -> np.ndarray:
    """LaMa: strokes with probability 1/(1+box_prob), else boxes; REFERENCE's counts and ranges."""
    canvas = np.zeros((size, size), bool)
    if rs.uniform() < box_prob / (1 + box_prob):
        side_hi = min(box_side[1], size - 2 * margin)
        for _ in range(rs.randint(box_times[0], box_times[1] + 1)):
            w, h = rs.randint(box_side[0], side_hi + 1), rs.randint(box_side[0], side_hi + 1)
            x, y = rs.randint(margin, size - margin - w + 1), rs.randint(margin, size - margin - h + 1)
            canvas[y : y + h, x : x + w] = True
        return canvas
    for stroke in range(rs.randint(strokes[0], strokes[1] + 2)):  # the wrapper's max + 1
        x, y = rs.randint(size), rs.randint(size)
        for _ in range(1 + rs.randint(5)):
            angle = 0.01 + rs.randint(max_angle)
            if stroke % 2 == 0:
                angle = 2 * math.pi - angle
            length, width = 10 + rs.randint(max_len), 5 + rs.randint(max_width)
            nx = min(max(int(x + length * math.sin(angle)), 0), size)
            ny = min(max(int(y + length * math.cos(angle)), 0), size)
            paint_capsule(canvas, (x, y), (nx, ny), 2 * ((width + 1) // 2) + 1)
            x, y = nx, ny
    return canvas


def comod_mask(rs: np.random.RandomState, size: int, counts: tuple[int, int, int]) -> np.ndarray:
    """Co-Mod-GAN RandomMask with hole_range [0, 1] (coef 1) and no rejection; counts = (half, full, strokes)."""
    canvas = np.zeros((size, size), bool)
    for tries, max_side in ((counts[0], size // 2), (counts[1], size)):
        for _ in range(rs.randint(tries) if tries else 0):
            w, h = rs.randint(max_side), rs.randint(max_side)
            x, y = rs.randint(-(w // 2), size - w + w // 2), rs.randint(-(h // 2), size - h + h // 2)
            canvas[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
    radius = math.sqrt(2) * size / 8
    for _ in range(rs.randint(counts[2]) if counts[2] else 0):
        steps = rs.randint(4, 18)
        lo = 2 * math.pi / 5 - rs.uniform(0, 2 * math.pi / 15)
        hi = 2 * math.pi / 5 + rs.uniform(0, 2 * math.pi / 15)
        points = [(rs.randint(size), rs.randint(size))]
        for i in range(steps):
            turn = rs.uniform(lo, hi)
            angle = 2 * math.pi - turn if i % 2 == 0 else turn
            r = min(max(rs.normal(radius, radius // 2), 0), 2 * radius)
            points.append((int(min(max(points[-1][0] + r * math.cos(angle), 0), size)),
                           int(min(max(points[-1][1] + r * math.sin(angle), 0), size))))
        width = int(rs.uniform(12, 48))
        for p, q in zip(points[:-1], points[1:]):
            paint_capsule(canvas, p, q, width)
    return canvas


def sample_ratios(draw, n: int, lo: float, hi: float, seed: int = 12345) -> np.ndarray:
    """Hole ratios of ``n`` masks from ``draw(rs)``, keeping those with ``lo < ratio < hi``."""
    rs = np.random.RandomState(seed)
    ratios = []
    while len(ratios) < n:
        ratio = draw(rs).mean()
        if lo < ratio < hi:
            ratios.append(ratio)
    return np.array(ratios)
