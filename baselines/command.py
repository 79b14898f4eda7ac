"""The ``command`` method: run an upstream repository's own inference script on the runner's images.

For each chunk of images the runner hands over, the adapter

1. writes the images (8-bit RGB PNG) and masks (8-bit single-channel PNG, 0/255, in the script's polarity:
   ``hole`` = 255 is the hole, ``known`` = 255 is a kept pixel) into a fresh scratch folder, named by
   ``image_pattern`` / ``mask_pattern`` (``{name}`` = ``00000``, ``00001``, … in chunk order): into ``images/`` and ``masks/``, or
   both into ``input/`` when the command uses ``{input}`` (LaMa's ``<name>.png`` + ``<name>_mask.png``);
2. runs the command template once, with ``{images}``, ``{masks}``, ``{input}``, ``{out}`` (an empty folder for
   the script's results), ``{weights}`` and ``{repo}`` replaced by absolute paths. Without ``shell`` the template
   is split with :func:`shlex.split` first and each placeholder replaced inside its word (a path with spaces stays
   one argument; no shell runs, so pipes, ``&&`` and ``$VAR`` are not interpreted); with ``shell`` it runs under
   ``/bin/sh -c`` with every path quoted. With ``repo`` the command runs in that folder, with the folder prepended
   to ``PYTHONPATH`` (upstream scripts import their own packages from the repository root);
3. reads ``out/<output_pattern>`` for every image, checks that it is 8-bit RGB of the input's size, and pastes the
   known pixels back from the input (``paste_back``, on by default).

A failing command stops the run with its exit status and the last lines of its stderr (stdout when stderr is
empty); a missing output names the file expected. Outputs of earlier chunks, already written by the runner, are
kept, and ``--resume`` continues from the first unfinished chunk. ``chunk`` images go to one command call (the
runner's default batch for this method), so a killed run loses at most one chunk.

Presets (:data:`PRESETS`) hold the file naming, polarity and command of the four upstream repositories of the
paper's baselines; any option given explicitly overrides the preset's value.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from baselines.base import WEIGHTS_OPTION, InpaintingMethod, MethodOption, checked_hole, register_method
from baselines.signed_io import paste_back
from misato.errors import MisatoError
from misato.io import read_image, write_image, write_mask

PLACEHOLDERS = ("images", "masks", "input", "out", "weights", "repo")
MASK_POLARITIES = ("hole", "known")
STDERR_LINES = 20
"""How many of the command's last stderr lines a failure shows."""
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")  # `${hydra}` interpolations are left alone


@dataclasses.dataclass(frozen=True)
class Preset:
    """What one upstream repository's inference script expects.

    Attributes:
        command: the command template (run in the repository's folder, ``--repo``).
        image_pattern, mask_pattern: input file names (``{name}`` = file stem).
        output_pattern: the file the script writes per image.
        mask_polarity: ``hole`` (255 = hole) or ``known`` (255 = kept pixel).
        upstream: where the command comes from (for the docs and ``run.json``).
    """

    command: str
    image_pattern: str
    mask_pattern: str
    output_pattern: str
    mask_polarity: str
    upstream: str


PRESETS: dict[str, Preset] = {
    # bin/predict.py: masks are `*mask*.png` under indir, the image is `<stem before _mask>.png` (dataset.img_suffix
    # .png in configs/prediction/default.yaml), `mask > 0` is the hole, the result is outdir/<mask stem>.png.
    "lama": Preset("python bin/predict.py model.path={weights} indir={input} outdir={out}",
                   "{name}.png", "{name}_mask.png", "{name}_mask.png", "hole",
                   "advimman/lama bin/predict.py (--weights: the big-lama folder holding config.yaml and models/)"),
    # generate_image.py: images and masks globbed and paired in sorted order, mask / 255 with 1 = known,
    # the result is outdir/<image name>.png.
    "mat": Preset("python generate_image.py --network {weights} --dpath {images} --mpath {masks} --outdir {out}",
                  "{name}.png", "{name}.png", "{name}.png", "known",
                  "fenglinglwb/MAT generate_image.py (--weights: Places_512_FullData.pkl)"),
    # test.py with --dataset_mode testimage (test.sh): masks listed from mask_dir, the image of the same name,
    # mask > 0 is the hole, the result is output_dir/<name>; the checkpoint is read from
    # ./checkpoints/comod-places-512/co-mod-gan-places2-050000_net_G_ema.pth inside the repository.
    "comod": Preset("python test.py --mixing 0 --batchSize 1 --nThreads 1 --name comod-places-512 "
                    "--dataset_mode testimage --image_dir {images} --mask_dir {masks} --output_dir {out} "
                    "--load_size 512 --crop_size 512 --z_dim 512 --model comod --netG comodgan "
                    "--which_epoch co-mod-gan-places2-050000",
                    "{name}.png", "{name}.png", "{name}.png", "hole",
                    "zengxianyu/co-mod-gan-pytorch test.py as in test.sh (checkpoint in checkpoints/comod-places-512/)"),
    # test_custom.py: images and masks globbed and paired in sorted order, mask > 127 is the hole, the result is
    # output_path/<image name with .jpg → .png>.
    "maefar": Preset("python test_custom.py --resume {weights} --config configs/config_FAR_places2_finetune_512.yml "
                     "--image_path {images} --mask_path {masks} --output_path {out} --image_size 512 --load_pl",
                     "{name}.png", "{name}.png", "{name}.png", "hole",
                     "ewrfcas/MAE-FAR test_custom.py (--weights: the Lightning checkpoint)"),
}


def _tail(text: str, lines: int = STDERR_LINES) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept)


class CommandMethod(InpaintingMethod):
    """Runs an external inference command per chunk of images (see the module docstring).

    Args:
        command: the command template; None takes the preset's.
        preset: one of :data:`PRESETS` (its values fill every option not given).
        repo: the folder the command runs in (``{repo}``), prepended to ``PYTHONPATH``; None: the current folder.
        weights: the path put in for ``{weights}`` (a file or folder).
        image_pattern, mask_pattern, output_pattern: file names with ``{name}``.
        mask_polarity: ``hole`` or ``known``.
        shell: run the command under ``/bin/sh -c`` (paths quoted) instead of as a split word list.
        chunk: images per command call (also the runner's default batch for this method).
        paste_back: copy the known pixels from the input into the outputs.
    """

    name = "command"

    def __init__(self, command: str | None = None, preset: str | None = None, repo: str | None = None,
                 weights: str | None = None, image_pattern: str | None = None, mask_pattern: str | None = None,
                 output_pattern: str | None = None, mask_polarity: str | None = None, shell: bool = False,
                 chunk: int = 16, paste_back: bool = True) -> None:
        if preset is not None and preset not in PRESETS:
            raise MisatoError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        defaults = PRESETS[preset] if preset is not None else Preset(command or "", "{name}.png", "{name}.png",
                                                                      "{name}.png", "hole", "")
        self.command = command if command is not None else defaults.command
        if not self.command:
            raise MisatoError(f"method command needs --command TEMPLATE or --preset ({', '.join(PRESETS)})")
        self.preset = preset
        self.upstream = defaults.upstream
        self.image_pattern = image_pattern or defaults.image_pattern
        self.mask_pattern = mask_pattern or defaults.mask_pattern
        self.output_pattern = output_pattern or defaults.output_pattern
        self.mask_polarity = mask_polarity or defaults.mask_polarity
        if self.mask_polarity not in MASK_POLARITIES:
            raise MisatoError(f"--mask-polarity must be one of {', '.join(MASK_POLARITIES)}, got {self.mask_polarity!r}")
        if chunk < 1:
            raise MisatoError(f"--chunk must be at least 1, got {chunk}")
        self.batch_size = self.chunk = int(chunk)
        self.shell = bool(shell)
        self.paste_back = bool(paste_back)
        self.repo = self._existing(repo, "--repo", folder=True)
        self.weights = self._existing(weights, "--weights")
        self._check_template()

    @staticmethod
    def _existing(path: str | None, flag: str, folder: bool = False) -> Path | None:
        if path is None:
            return None
        resolved = Path(path).expanduser().resolve()
        if not (resolved.is_dir() if folder else resolved.exists()):
            raise MisatoError(f"{flag} {path}: no such {'folder' if folder else 'file or folder'}")
        return resolved

    def _check_template(self) -> None:
        used = set(_PLACEHOLDER.findall(self.command))
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown:
            raise MisatoError(f"--command: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                              f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if "out" not in used or not ({"images", "masks"} <= used or "input" in used):
            raise MisatoError("--command must use {out} and either {images} and {masks} or {input}")
        for pattern, flag in ((self.image_pattern, "--image-pattern"), (self.mask_pattern, "--mask-pattern"),
                              (self.output_pattern, "--output-pattern")):
            if "{name}" not in pattern or "/" in pattern or os.sep in pattern:
                raise MisatoError(f"{flag} {pattern!r} must contain {{name}} and no folder")
        self.one_folder = "input" in used
        if self.one_folder and self.image_pattern == self.mask_pattern:
            raise MisatoError(f"with {{input}} images and masks share one folder: --image-pattern and --mask-pattern "
                              f"must differ (both are {self.image_pattern!r})")
        for needed, value in (("weights", self.weights), ("repo", self.repo)):
            if needed in used and value is None:
                raise MisatoError(f"--command uses {{{needed}}}: pass --{needed}")
        if self.preset is not None and self.repo is None:
            raise MisatoError(f"--preset {self.preset} runs the script inside its repository: pass --repo "
                              "(the upstream checkout)")
        if not self.shell:
            try:
                shlex.split(self.command)
            except ValueError as error:
                raise MisatoError(f"--command {self.command!r}: cannot split it into words ({error})") from None

    def _argv(self, paths: dict[str, Path]) -> list[str]:
        values = {key: str(value) for key, value in paths.items() if value is not None}
        if self.shell:
            return ["/bin/sh", "-c", _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), self.command)]
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in shlex.split(self.command)]

    def _run(self, argv: list[str], scratch: Path) -> None:
        environment = dict(os.environ)
        if self.repo is not None:
            environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.repo), environment.get("PYTHONPATH")]))
        with open(scratch / "stdout.log", "wb") as stdout, open(scratch / "stderr.log", "wb") as stderr:
            try:
                status = subprocess.run(argv, cwd=self.repo, env=environment, stdin=subprocess.DEVNULL,
                                        stdout=stdout, stderr=stderr).returncode
            except OSError as error:
                raise MisatoError(f"method command: cannot start {argv[0]!r} ({error.strerror})") from None
        if status != 0:
            log = (scratch / "stderr.log").read_text(errors="replace") or (scratch / "stdout.log").read_text(
                errors="replace")
            raise MisatoError(f"method command: {shlex.join(argv)} exited with status {status}; outputs of "
                              f"earlier chunks are kept. Last lines of its output:\n{_tail(log)}")

    def _collect(self, out: Path, name: str, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        from PIL import Image

        path = out / self.output_pattern.replace("{name}", name)
        if not path.is_file():
            written = sorted(p.name for p in out.iterdir())[:5]
            raise MisatoError(f"method command: the command wrote no {path.name} (--output-pattern "
                              f"{self.output_pattern}); its output folder holds {', '.join(written) or 'nothing'}")
        with Image.open(path) as opened:
            mode = opened.mode
        if mode != "RGB":
            raise MisatoError(f"method command: {path.name} is a {mode} image; expected 8-bit RGB")
        result = read_image(path)
        if result.shape != image.shape:
            raise MisatoError(f"method command: {path.name} is {result.shape[1]}x{result.shape[0]} but its input is "
                              f"{image.shape[1]}x{image.shape[0]} (the script resized or cropped it)")
        return paste_back(result, image, hole) if self.paste_back else result

    def inpaint(self, images: list[np.ndarray], masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        """Run the command on ``images`` in chunks of :attr:`chunk` (the upstream script seeds itself: ``seeds``
        are unused)."""
        results: list[np.ndarray] = []
        for start in range(0, len(images), self.chunk):
            results += self._inpaint_chunk(images[start : start + self.chunk], masks[start : start + self.chunk])
        return results

    def _inpaint_chunk(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """One command call. The scratch files are named ``00000``, ``00001``, … in chunk order (not by the MISATO
        stems: names sort alike everywhere, and no stem can match a script's glob such as LaMa's ``*mask*``)."""
        holes = [checked_hole(self.name, image, mask) for image, mask in zip(images, masks)]
        names = [f"{index:05d}" for index in range(len(images))]
        with tempfile.TemporaryDirectory(prefix="misato-command-") as scratch:
            scratch = Path(scratch).resolve()
            folders = ({"input": scratch / "input"} if self.one_folder
                       else {"images": scratch / "images", "masks": scratch / "masks"})
            folders["out"] = scratch / "out"
            for folder in folders.values():
                folder.mkdir()
            image_dir = folders.get("input", folders.get("images"))
            mask_dir = folders.get("input", folders.get("masks"))
            for name, image, hole in zip(names, images, holes):
                write_image(image_dir / self.image_pattern.replace("{name}", name), image)
                write_mask(mask_dir / self.mask_pattern.replace("{name}", name), hole if self.mask_polarity == "hole" else ~hole)
            self._run(self._argv({**folders, "weights": self.weights, "repo": self.repo}), scratch)
            return [self._collect(folders["out"], name, image, hole) for name, image, hole in zip(names, images, holes)]

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        return self.inpaint([image], [mask], [seed])[0]

    def describe(self) -> dict[str, Any]:
        from misato.hashing import tree_sha256

        return {
            "method": self.name,
            "preset": self.preset,
            "upstream": self.upstream or None,
            "command": self.command,
            "shell": self.shell,
            "repo": str(self.repo) if self.repo else None,
            "weights": str(self.weights) if self.weights else None,
            "weights_sha256": tree_sha256(self.weights) if self.weights else None,
            "image_pattern": self.image_pattern,
            "mask_pattern": self.mask_pattern,
            "output_pattern": self.output_pattern,
            "mask_polarity": self.mask_polarity,
            "mask_files": "8-bit single-channel PNG, 255 = " + self.mask_polarity,
            "paste_back": self.paste_back,
            "seeding": "by the upstream script itself (the run seed is not passed on)",
        }


register_method(
    "command",
    CommandMethod,
    options=(
        MethodOption("command", str, "command template with {images} {masks} {out} (or {input} {out}), {weights}, "
                     "{repo}; split with shlex, no shell unless --shell"),
        MethodOption("preset", str, "file naming, polarity and command of an upstream repository", tuple(PRESETS)),
        MethodOption("repo", str, "folder the command runs in (the upstream checkout), prepended to PYTHONPATH"),
        WEIGHTS_OPTION,
        MethodOption("image_pattern", str, "input image file name, with {name} (default {name}.png)"),
        MethodOption("mask_pattern", str, "input mask file name, with {name} (default {name}.png)"),
        MethodOption("output_pattern", str, "file the command writes per image, with {name} (default {name}.png)"),
        MethodOption("mask_polarity", str, "what a 1 (255 in mask files) means: hole, or known pixel (command: "
                     "the preset's, else hole)", MASK_POLARITIES),
        MethodOption("shell", bool, "run the command through /bin/sh -c (paths quoted)", default=False),
        MethodOption("chunk", int, "images per command call (a killed run loses at most one chunk)", default=16,
                     bounds=(1, 100_000)),
        MethodOption("paste_back", bool, "copy the known pixels from the input into the outputs (default on)"),
    ),
    description="an upstream repository's own inference script, run per chunk (--preset lama|mat|comod|maefar)",
)
