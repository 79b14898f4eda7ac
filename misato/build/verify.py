"""``verify``: check a MISATO folder (our builds or the official release) and list every problem found."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from misato.errors import MisatoError
from misato.build.builder import BUILD_JSON, STATE_DIR
from misato.io import binarize_mask, list_images, read_image, read_mask_uint8
from misato.layout import DOMAINS, MANIFEST_NAME, domain_of_name, masks_by_image_stem


def _domain_blocks(names: list[str], domains: dict[str, str]) -> list[str]:
    """Problems with the domain order: each domain must occupy one contiguous block of indices, and the
    standard domains must come in the MISATO order (landscape, indoor, building, background)."""
    problems = []
    order: list[str] = []
    for name in names:
        domain = domains[name]
        if not order or order[-1] != domain:
            if domain in order:
                problems.append(f"domain {domain!r} is split into several index blocks (again at {name})")
            order.append(domain)
    standard = [d.name for d in DOMAINS]
    seen_standard = [d for d in dict.fromkeys(order) if d in standard]
    if seen_standard != sorted(seen_standard, key=standard.index):
        problems.append(f"standard domains out of order: {seen_standard} (expected the order {standard})")
    return problems


def verify(root: str | os.PathLike) -> list[str]:
    """Check layout, sizes, mask values, domain ranges and the manifest of a MISATO folder.

    Checks: ``image/`` and ``mask/`` exist and pair one to one by name (the 1024 release's ``00`` mask prefix
    is accepted); names are consecutive 4-digit indices from 0000; every image is square RGB and all share
    one size; every mask has that size and holds only 0 and 255, with at least one hole pixel; with a
    ``manifest.csv``: its names equal the files, ``index``/``hole_ratio`` columns agree with the files and
    the domains form contiguous blocks in the MISATO order; without one, every name lies in a released range;
    with a ``build.json``: its counts agree with the manifest; one of ``manifest.csv``/``build.json`` without the
    other, a manifest row cut short, or a leftover ``.misato-build/`` state folder (an interrupted build) is a
    problem. A folder with neither file is checked as the official release.

    Returns:
        The problems found (empty when the folder is fine).
    Raises:
        MisatoError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise MisatoError(f"MISATO folder not found: {root}")
    problems: list[str] = []
    try:
        images = list_images(root / "image", "image")
        masks = masks_by_image_stem(list_images(root / "mask", "mask"), set(images))
    except MisatoError as error:
        return [str(error)]
    for stem in sorted(set(images) - set(masks)):
        problems.append(f"image/{images[stem].name} has no mask")
    for stem in sorted(set(masks) - set(images)):
        problems.append(f"mask/{masks[stem].name} has no image")
    names = sorted(set(images) & set(masks))
    expected = [f"{i:04d}" for i in range(len(names))]
    if names != expected:
        wrong = sorted(set(names) ^ set(expected))
        problems.append(f"names are not consecutive 4-digit indices from 0000 (e.g. {', '.join(wrong[:5])})")
    sizes: dict[tuple, int] = {}
    ratios: dict[str, float] = {}
    for name in names:
        try:
            image = read_image(images[name])
            mask = read_mask_uint8(masks[name])
        except MisatoError as error:
            problems.append(str(error))
            continue
        sizes[image.shape] = sizes.get(image.shape, 0) + 1
        if image.shape[0] != image.shape[1]:
            problems.append(f"image/{images[name].name} is not square: {image.shape[1]}x{image.shape[0]}")
        if mask.shape != image.shape[:2]:
            problems.append(f"mask/{masks[name].name} is {mask.shape[1]}x{mask.shape[0]}, its image {image.shape[1]}x{image.shape[0]}")
        values = np.unique(mask)
        if not set(values.tolist()) <= {0, 255}:
            problems.append(f"mask/{masks[name].name} is not binary: values {values[:6].tolist()}{'…' if len(values) > 6 else ''}")
        if not (mask == 255).any():
            problems.append(f"mask/{masks[name].name} has no hole")
        ratios[name] = float(binarize_mask(mask).mean())
    if len(sizes) > 1:
        problems.append(f"images have different sizes: {', '.join(f'{s[1]}x{s[0]} ({n})' for s, n in sizes.items())}")
    manifest = root / MANIFEST_NAME
    if (root / STATE_DIR).exists():
        problems.append(f"{STATE_DIR}/ is left over: the build was interrupted (`misato build --resume` finishes it)")
    if manifest.is_file() != (root / BUILD_JSON).is_file():
        present, absent = (MANIFEST_NAME, BUILD_JSON) if manifest.is_file() else (BUILD_JSON, MANIFEST_NAME)
        problems.append(f"{absent} is missing (a finished build writes it beside {present})")
    if manifest.is_file():
        problems += _check_manifest(manifest, names, ratios)
    else:
        outside = [name for name in names if domain_of_name(name) == "unknown"]
        if outside:
            problems.append(f"no {MANIFEST_NAME} and {len(outside)} names outside the released ranges (e.g. {outside[0]})")
    return problems


def _check_manifest(manifest: Path, names: list[str], ratios: dict[str, float]) -> list[str]:
    problems = []
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            columns = next(reader, [])
            records = [(reader.line_num, record) for record in reader if record]
    except (UnicodeDecodeError, csv.Error) as error:
        return [f"{MANIFEST_NAME} is unreadable ({error})"]
    if not {"name", "domain"} <= set(columns):
        return [f"{MANIFEST_NAME} lacks the 'name'/'domain' columns (has {columns})"]
    ragged = [line for line, record in records if len(record) != len(columns)]
    if ragged:  # a file cut mid-row: its rows cannot be trusted field by field
        problems.append(f"{MANIFEST_NAME}: {len(ragged)} row(s) do not have the {len(columns)} fields of the header, "
                        f"first at line {ragged[0]}: the file is truncated or damaged")
    rows = [dict(zip(columns, record)) for _, record in records if len(record) == len(columns)]
    listed = [row["name"] for row in rows]
    if len(set(listed)) != len(listed):
        problems.append(f"{MANIFEST_NAME} lists some names twice")
    if sorted(set(listed)) != names:
        missing, extra = sorted(set(names) - set(listed)), sorted(set(listed) - set(names))
        problems.append(f"{MANIFEST_NAME} does not match the files: {len(missing)} files unlisted {missing[:5]}, {len(extra)} rows without files {extra[:5]}")
    by_name = {row["name"]: row for row in rows}
    for name in names:
        row = by_name.get(name)
        if row is None:
            continue
        if "index" in row and name.isdigit() and row["index"] != str(int(name)):  # other names are reported above
            problems.append(f"{MANIFEST_NAME}: {name} has index {row['index']}")
        if "hole_ratio" in row and name in ratios:
            try:
                listed_ratio = float(row["hole_ratio"])
            except ValueError:
                problems.append(f"{MANIFEST_NAME}: {name} hole_ratio {row['hole_ratio']!r} is not a number")
                continue
            if abs(listed_ratio - ratios[name]) > 1e-6:
                problems.append(f"{MANIFEST_NAME}: {name} hole_ratio {row['hole_ratio']} but the mask has {ratios[name]:.6f}")
    domains = {name: by_name[name]["domain"] for name in names if name in by_name}
    problems += _domain_blocks([n for n in names if n in domains], domains)
    build_json = manifest.parent / BUILD_JSON
    if build_json.is_file():
        try:
            problems += _check_build_report(json.loads(build_json.read_text(encoding="utf-8")), domains)
        except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as error:
            problems.append(f"build.json is unreadable or malformed ({type(error).__name__}: {error})")
    return problems


def _check_build_report(report: dict, domains: dict[str, str]) -> list[str]:
    """Counts and index ranges in build.json against the manifest's domains."""
    problems = []
    for domain, count in report.get("counts", {}).items():
        actual = sum(value == domain for value in domains.values())
        if count.get("written") != actual:
            problems.append(f"build.json says {count.get('written')} {domain} images, the manifest has {actual}")
    for domain, (first, last) in report.get("index_ranges", {}).items():
        block = [int(n) for n, d in domains.items() if d == domain and n.isdigit()]
        if block and (min(block), max(block)) != (first, last):
            problems.append(f"build.json range of {domain} is {first}-{last}, the manifest has {min(block)}-{max(block)}")
    return problems
