"""The one training loop of every ASUKA stage, on ``accelerate`` (multi-GPU/multi-node, bf16/fp16, accumulation;
the same code path on one CPU process).

Interface for a stage (``asuka/train/<stage>.py``; see :mod:`asuka.train.mae` for a complete one)::

    class MyStage(Stage):
        name = "my-stage"              # `misato train my-stage`, `python -m asuka.train.my_stage`
        component = "decoder"          # what the output holds, recorded in train.json (assemble checks it)
        outputs = ("decoder",)         # files/folders save_output writes in --out (for --overwrite)
        defaults = {"lr": 8e-5}        # stage defaults of the common flags (asuka.train.config)

        @classmethod
        def add_arguments(cls, parser): ...            # the stage's own flags

        def __init__(self, config):                    # config: the resolved {flag: value} dict
            super().__init__(config)                   # built under seeded(config["seed"]), on the CPU
            self.trainable = {"generator": G, "discriminator": D}   # checkpointed, prepared (DDP) by the loop
            self.frozen = {"encoder": E}               # moved to the device, eval(), requires_grad False

        def optimisers(self):                          # called after the modules are on the device
            return [Optimiser("generator", ("generator",), adamw(G.parameters(), self.config),
                              lr_scheduler_for(opt, self.config)), ...]

        def phases(self, step):                        # optimisers updated at this step, in order (default: all)
            return ["generator", "discriminator"] if step >= start else ["generator"]

        def training_step(self, batch, step, phase):   # -> {"loss": scalar to backprop, other scalars to log}
            ...

        def validation_images(self, batch):            # optional: [B, 3, H, W] in [0, 1] for the sample grid
        def save_output(self, out):                    # write the component (save_pretrained) under out
            return {"decoder": "decoder"}              # what was written, recorded in train.json

What the loop does for each step: takes ``grad_accum`` micro-batches (see :mod:`asuka.train.data` for the batch
dict and the per-sample seeds — draw all randomness with ``per_sample_rand*``/``sample_generators`` so that resume
and multi-process runs are exact), then for each phase: with several optimisers only that optimiser's parameters
require grad (as the stage left them otherwise), forward in
``accelerator.autocast()``, backward of ``loss / grad_accum`` (DDP sync on the last micro-batch only, fp16 grad
scaler per optimiser), unscale, clip (``--max-grad-norm``), ``optimizer.step()``, ``scheduler.step()``,
``zero_grad(set_to_none=True)``. In a phase, call a module of *another* phase through ``self.unwrapped(name)``
(its DDP wrapper would wait for gradients that never come). ``self.trainable[name]`` is the prepared (possibly
DDP-wrapped) module during training; validation and ``save_output`` see the unwrapped ones. ``self.device`` and
``self.accelerator`` are set before ``optimisers()``.

Outputs in ``--out``: ``checkpoints/step-NNNNNNNN.pt`` every ``--checkpoint-every`` steps (atomic, last
``--keep-checkpoints`` kept: modules, optimisers, schedulers, grad scalers, RNG states, data position, step,
resolved config), ``log.csv`` (+ ``tensorboard/`` when installed), ``samples/step-NNNNNNNN.png``, the stage's
component, and ``train.json`` (stage, component, config, data digest, steps, final losses, provenance).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from asuka.train import config as train_config
from asuka.train import data as train_data
from misato.errors import MisatoError
from misato.io import atomic_write_bytes, atomic_write_text, write_image
from misato.outputs import OutputPolicy, discard_refused_start, prepare_output
from misato.reproducibility import seeded

TRAIN_FILE = "train.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FORMAT = "asuka-train-checkpoint-1"
LOG_FILE = "log.csv"


@dataclass
class Optimiser:
    """One optimiser of a stage: its name (a phase), the trainable modules it updates, optimiser and scheduler."""

    name: str
    modules: tuple[str, ...]
    optimizer: torch.optim.Optimizer
    scheduler: Any


def adamw(params, config: dict[str, Any], lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with the run's ``--lr``, ``--adam-betas``, ``--adam-eps`` and ``--weight-decay``."""
    return torch.optim.AdamW(params, lr=config["lr"] if lr is None else lr, betas=tuple(config["adam_betas"]),
                             eps=config["adam_eps"], weight_decay=config["weight_decay"])


def lr_scheduler_for(optimizer: torch.optim.Optimizer, config: dict[str, Any]):
    """diffusers' ``get_scheduler(--lr-schedule)`` with ``--warmup-steps`` over ``--max-steps``."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(config["lr_schedule"], optimizer, num_warmup_steps=config["warmup_steps"],
                         num_training_steps=config["max_steps"])


class Stage:
    """Base of every training stage (see the module docstring)."""

    name: ClassVar[str]
    component: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    uses_masks: ClassVar[bool] = True
    packages: ClassVar[tuple[str, ...]] = ("accelerate", "diffusers", "safetensors")

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.trainable: dict[str, torch.nn.Module] = {}
        self.frozen: dict[str, torch.nn.Module] = {}
        self.sources: dict[str, str] = {}
        """``{name: path}`` of weight files or folders the stage read (hashed into train.json's provenance)."""
        self.device = torch.device("cpu")
        self.accelerator = None
        self._unwrapped: dict[str, torch.nn.Module] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the stage's own flags."""

    def optimisers(self) -> list[Optimiser]:
        raise NotImplementedError

    def phases(self, step: int) -> Sequence[str]:
        """Names of the optimisers stepped at ``step`` (0-based), in order; default all."""
        return [optimiser.name for optimiser in self._optimisers]

    def training_step(self, batch: dict[str, Any], step: int, phase: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validation_images(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """``[B, 3, H, W]`` in [0, 1] for the sample grid, or None (no grid for this stage)."""
        return None

    def save_output(self, out: Path) -> dict[str, Any]:
        raise NotImplementedError

    def unwrapped(self, name: str) -> torch.nn.Module:
        """Trainable module ``name`` without its DDP/accelerate wrapper."""
        return self._unwrapped.get(name, self.trainable[name])


# ------------------------------------------------------------------------------------------------ helpers


def stage_parser(stage_cls: type[Stage], prog: str | None = None) -> argparse.ArgumentParser:
    """The full flag set of a stage: common flags with the stage's defaults, then its own."""
    parser = train_config._Parser(prog=prog or f"misato train {stage_cls.name}",
                                  description=(stage_cls.__doc__ or "").strip().split("\n\n")[0])
    train_config.add_common_arguments(parser)
    stage_cls.add_arguments(parser.add_argument_group(f"{stage_cls.name} stage"))
    parser.set_defaults(**stage_cls.defaults)
    return parser


def stage_policy(stage_cls: type[Stage] | None) -> OutputPolicy:
    """The output policy of a training run of ``stage_cls`` (None: only what every stage writes)."""
    outputs = stage_cls.outputs if stage_cls is not None else ()
    return OutputPolicy(what="training run", markers=(TRAIN_FILE,),
                        owned=(CHECKPOINTS, "samples", "tensorboard", LOG_FILE, TRAIN_FILE, *outputs))


def record_policy(record: dict) -> OutputPolicy:
    """The output policy of the training run whose ``train.json`` is ``record`` (for
    :func:`misato.outputs.check_not_owned_by_job`)."""
    from asuka.train import get_stage

    try:
        return stage_policy(get_stage(str(record.get("stage"))))
    except MisatoError:  # an unknown stage, or one not installed here
        return stage_policy(None)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`misato.io.atomic_write_bytes` (readers never see a partial file)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def checkpoint_paths(out: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = out / CHECKPOINTS
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


def _rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()),
        "loader": loader_generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    loader_generator.set_state(state["loader"])


def read_train_checkpoint(path: str | os.PathLike, stage_cls: type[Stage] | None = None) -> dict[str, Any]:
    """A training checkpoint (safe loading); a file of another kind or another stage is a MisatoError."""
    from misato.checkpoint import read_checkpoint

    content = read_checkpoint(path, "a training checkpoint")
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise MisatoError(f"{path}: not a checkpoint written by asuka.train")
    if stage_cls is not None and content["stage"] != stage_cls.name:
        raise MisatoError(f"{path}: a checkpoint of stage {content['stage']}, not {stage_cls.name}")
    return content


def _image_grid(rows: list[torch.Tensor]) -> np.ndarray:
    """Rows of ``[B, 3, H, W]`` images in [0, 1] → ``uint8 [rows·H, B·W, 3]``."""
    grid = torch.cat([torch.cat(list(row.float().clamp(0, 1).cpu()), dim=2) for row in rows], dim=1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class _CsvLog:
    """``log.csv`` rows; on resume, rows after the resumed step are dropped (they are recomputed)."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]
        self._write()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        columns: list[str] = ["step"]
        for row in self.rows:
            columns.extend(key for key in row if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def _on_main(accelerator, function):
    """Run ``function`` on the main process; a MisatoError there is raised on every process."""
    from accelerate.utils import broadcast_object_list

    result = [None, None]
    if accelerator.is_main_process:
        try:
            result = [function(), None]
        except MisatoError as error:
            result = [None, str(error)]
    if accelerator.num_processes > 1:
        broadcast_object_list(result)
    if result[1] is not None:
        raise MisatoError(result[1])
    return result[0]


# ------------------------------------------------------------------------------------------------ the loop


def train(stage_cls: type[Stage], args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) one training stage with parsed flags ``args``; returns the train.json record (with
    ``"complete": False`` when stopped by ``--stop-at-step``).

    accelerate keeps its settings (mixed precision, …) in a process-wide singleton; it is reset on return (the
    process group, if any, stays), so one process can run several stages with different settings.

    Raises:
        MisatoError: bad data, options or output folder; ``--resume`` with another config or stage.
    """
    from accelerate.state import AcceleratorState

    try:
        return _train(stage_cls, args)
    finally:
        AcceleratorState._reset_state()


def _train(stage_cls: type[Stage], args: argparse.Namespace) -> dict[str, Any]:
    from accelerate import Accelerator
    from misato.masks import make_generator

    config = train_config.resolved_config(args)
    out = Path(args.out)
    accelerator = Accelerator(mixed_precision=config["mixed_precision"], cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index

    source = train_data.open_source(config["data"], config["data_split"], config["image_column"])
    masks = None
    if stage_cls.uses_masks:
        try:
            masks = make_generator(config["mask_preset"], config["resolution"], config["mask_ratio"], config["objects"])
        except MisatoError as error:  # the mask side is training's --resolution (its own parser's flag)
            raise MisatoError(error.for_flags({"size": "--resolution", "objects": "--objects"})) from None
    dataset = train_data.TrainingImages(source, config["resolution"], config["seed"], masks, config["crop"],
                                        config["small_images"])

    def check_output():
        previous = prepare_output(out, stage_policy(stage_cls), resume=args.resume, overwrite=args.overwrite,
                                  inputs=[p for p in (config["data"],) if isinstance(p, str) and Path(p).is_dir()])
        if previous is not None:
            record = previous.record
            if record.get("stage") != stage_cls.name:
                raise MisatoError(f"--resume: {out} holds a training run of stage {record.get('stage')}, "
                                  f"not {stage_cls.name}")
            differing = train_config.differing_keys(record.get("config", {}), config)
            if differing:
                raise MisatoError(f"--resume: {out} was trained with another config; differing keys: "
                                  f"{'; '.join(differing)} (use --overwrite or another --out)")
        checkpoints = checkpoint_paths(out) if previous is not None else []
        if previous is None:
            atomic_write_text(out / TRAIN_FILE, json.dumps(
                {"stage": stage_cls.name, "component": stage_cls.component, "config": config, "complete": False},
                indent=2))
        return previous is None, str(checkpoints[-1]) if checkpoints else None

    out_existed = out.exists()
    fresh, latest = _on_main(accelerator, check_output)
    accelerator.wait_for_everyone()

    try:
        with seeded(config["seed"]):
            stage = stage_cls(config)
    except MisatoError:
        # the stage refused its inputs (an init checkpoint, an SD folder) before a step ran: a fresh run's
        # train.json goes, so the corrected command starts afresh instead of being told to resume
        if fresh and accelerator.is_main_process:
            discard_refused_start(out, out / TRAIN_FILE, made_here=not out_existed)
        raise
    stage.accelerator, stage.device = accelerator, accelerator.device
    for module in stage.frozen.values():
        module.requires_grad_(False).eval().to(accelerator.device)
    for module in stage.trainable.values():
        module.train().to(accelerator.device)
    optimisers = {optimiser.name: optimiser for optimiser in stage.optimisers()}
    stage._optimisers = list(optimisers.values())
    scalers = {name: torch.amp.GradScaler(accelerator.device.type, enabled=config["mixed_precision"] == "fp16")
               for name in optimisers}
    trainable_flags = {name: [p.requires_grad for p in module.parameters()] for name, module in stage.trainable.items()}

    loader_generator = torch.Generator().manual_seed(config["seed"])
    start_step, skipped_total, resumed_losses = 0, 0, {}
    if latest is not None:
        state = read_train_checkpoint(latest, stage_cls)
        if state["world_size"] != world:
            raise MisatoError(f"--resume: {latest} was written by a run of {state['world_size']} processes; this "
                              f"one has {world} (the global batch would change)")
        from misato.checkpoint import load_strict

        for name, module in stage.trainable.items():
            load_strict(module, state["modules"][name], f"{latest} ({name})")
        for name, optimiser in optimisers.items():
            optimiser.optimizer.load_state_dict(state["optimisers"][name])
            optimiser.scheduler.load_state_dict(state["schedulers"][name])
            scalers[name].load_state_dict(state["scalers"][name])
        _set_rng_state(state["rng"], loader_generator)
        start_step, skipped_total, resumed_losses = state["step"], state["skipped"], state["losses"]

    names = list(stage.trainable)
    prepared = accelerator.prepare(*[stage.trainable[name] for name in names]) if names else []
    prepared = [prepared] if len(names) == 1 else list(prepared)
    stage._unwrapped = dict(stage.trainable)
    stage.trainable = dict(zip(names, prepared))

    accum, batch_size = config["grad_accum"], config["batch_size"]
    loader = train_data.make_loader(dataset, batch_size, start_step * accum, rank, world, args.num_workers,
                                    config["seed"], pin_memory=accelerator.device.type == "cuda")
    loader.generator.set_state(loader_generator.get_state())
    batches = iter(loader)
    validation = (train_data.validation_batch(dataset, config["val_samples"])
                  if accelerator.is_main_process and config["val_samples"] else None)

    log = _CsvLog(out / LOG_FILE, start_step if latest is not None else 0) if accelerator.is_main_process else None
    board = None
    if accelerator.is_main_process:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            board = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)

    def to_device(batch):
        return {key: value.to(accelerator.device, non_blocking=True) if torch.is_tensor(value) else value
                for key, value in batch.items()}

    def save_checkpoint(step: int) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {
                "format": CHECKPOINT_FORMAT, "stage": stage_cls.name, "component": stage_cls.component,
                "step": step, "world_size": world, "config": config, "skipped": skipped_total, "losses": last_losses,
                "modules": {name: module.state_dict() for name, module in stage._unwrapped.items()},
                "optimisers": {name: o.optimizer.state_dict() for name, o in optimisers.items()},
                "schedulers": {name: o.scheduler.state_dict() for name, o in optimisers.items()},
                "scalers": {name: scaler.state_dict() for name, scaler in scalers.items()},
                "rng": _rng_state(loader.generator),
            }
            _atomic_torch_save(state, out / CHECKPOINTS / f"step-{step:08d}.pt")
            for old in checkpoint_paths(out)[:-config["keep_checkpoints"]]:
                old.unlink(missing_ok=True)
        accelerator.wait_for_everyone()

    def validate(step: int) -> None:
        if not accelerator.is_main_process or not config["val_samples"]:
            return
        trained, stage.trainable = stage.trainable, stage._unwrapped
        for module in stage.trainable.values():
            module.eval()
        try:
            with torch.no_grad(), accelerator.autocast():
                images = stage.validation_images(to_device(validation))
        finally:
            for module in stage.trainable.values():
                module.train()
            stage.trainable = trained
        if images is None:
            return
        masked = validation["image"] * (1 - validation["mask"]) + 0.5 * validation["mask"]
        write_image(out / "samples" / f"step-{step:08d}.png",
                    _image_grid([masked, images.detach().float().cpu(), validation["image"]]))

    from tqdm.auto import tqdm

    bar = tqdm(total=config["max_steps"], initial=start_step, desc=f"train {stage_cls.name}",
               disable=not (args.progress and accelerator.is_main_process), file=sys.stderr)
    last_losses: dict[str, float] = dict(resumed_losses)
    step = start_step
    stopped = False
    for step in range(start_step, config["max_steps"]):
        started = time.perf_counter()
        micro = [next(batches) for _ in range(accum)]
        data_time = time.perf_counter() - started
        for batch in micro:
            if batch["error"] is not None:
                raise MisatoError(batch["error"])
            skipped_total += batch["skipped"]
        sums: dict[str, torch.Tensor] = {}
        phases = list(stage.phases(step))
        for phase in phases:
            optimiser = optimisers[phase]
            owned = set(optimiser.modules)
            if len(optimisers) > 1:
                for name, module in stage._unwrapped.items():
                    for parameter, flag in zip(module.parameters(), trainable_flags[name]):
                        parameter.requires_grad_(flag and name in owned)
            for index, batch in enumerate(micro):
                batch = to_device(batch)
                with contextlib.ExitStack() as stack:
                    if index < accum - 1:
                        for name in optimiser.modules:
                            stack.enter_context(accelerator.no_sync(stage.trainable[name]))
                    with accelerator.autocast():
                        losses = stage.training_step(batch, step, phase)
                    if "loss" not in losses:
                        raise RuntimeError(f"stage {stage_cls.name} phase {phase}: training_step returned no 'loss'")
                    scalers[phase].scale(losses["loss"] / accum).backward()
                prefix = "" if len(optimisers) == 1 else f"{phase}/"
                for key, value in losses.items():
                    sums[prefix + key] = sums.get(prefix + key, 0.0) + value.detach().float() / accum
            parameters = [p for name in optimiser.modules for p in stage._unwrapped[name].parameters()
                          if p.grad is not None]
            scalers[phase].unscale_(optimiser.optimizer)
            if config["max_grad_norm"] > 0 and parameters:
                torch.nn.utils.clip_grad_norm_(parameters, config["max_grad_norm"])
            scalers[phase].step(optimiser.optimizer)
            scalers[phase].update()
            optimiser.scheduler.step()
            optimiser.optimizer.zero_grad(set_to_none=True)
        done = step + 1
        step_time = time.perf_counter() - started
        if done % config["log_every"] == 0 or done == config["max_steps"]:
            keys = sorted(sums)
            values = torch.stack([torch.as_tensor(sums[key], device=accelerator.device) for key in keys])
            values = accelerator.reduce(values, reduction="mean") if world > 1 else values
            last_losses = {key: float(value) for key, value in zip(keys, values.cpu())}
            if log is not None:
                row = {"step": done, **{key: f"{value:.6g}" for key, value in last_losses.items()}}
                for name, optimiser in optimisers.items():
                    row[f"lr/{name}" if len(optimisers) > 1 else "lr"] = f"{optimiser.scheduler.get_last_lr()[0]:.6g}"
                row.update({"step_time": f"{step_time:.4f}", "data_time": f"{data_time:.4f}",
                            "images_per_s": f"{batch_size * world * accum / step_time:.3f}",
                            "skipped_images": skipped_total})
                log.add(row)
                if board is not None:
                    for key, value in row.items():
                        if key != "step":
                            board.add_scalar(key, float(value), done)
            bar.set_postfix({key: f"{value:.4g}" for key, value in last_losses.items()})
        if any(not math.isfinite(float(value)) for value in sums.values()):
            values = ", ".join(f"{key}={float(value)}" for key, value in sums.items())
            raise MisatoError(f"step {done}: the loss is not finite ({values}); "
                              "lower --lr or use --mixed-precision no")
        bar.update()
        if done % config["checkpoint_every"] == 0 or done == config["max_steps"] or done == args.stop_at_step:
            save_checkpoint(done)
        if config["validate_every"] and done % config["validate_every"] == 0:
            validate(done)
        if args.stop_at_step is not None and done >= args.stop_at_step and done < config["max_steps"]:
            stopped = True
            break
    bar.close()
    if board is not None:
        board.close()
    final_step = step + 1 if config["max_steps"] > start_step else start_step
    record = {"stage": stage_cls.name, "component": stage_cls.component, "config": config,
              "complete": not stopped, "steps": final_step, "final_losses": last_losses,
              "data": {"source": source.description, "images": len(source), "digest": source.digest(),
                       "skipped_images": skipped_total},
              "seed": config["seed"], "world_size": world,
              "global_batch": batch_size * world * accum}
    if stopped:
        if accelerator.is_main_process:
            atomic_write_text(out / TRAIN_FILE, json.dumps(record, indent=2))
        accelerator.wait_for_everyone()
        return record
    if not (config["validate_every"] and final_step % config["validate_every"] == 0):
        validate(final_step)
    if accelerator.is_main_process:
        from misato.hashing import tree_sha256
        from misato.provenance import provenance

        trained, stage.trainable = stage.trainable, stage._unwrapped
        record["outputs"] = stage.save_output(out)
        stage.trainable = trained
        record["provenance"] = provenance(stage_cls.packages,
                                          weights={k: tree_sha256(v) for k, v in stage.sources.items()})
        atomic_write_text(out / TRAIN_FILE, json.dumps(record, indent=2))
    accelerator.wait_for_everyone()
    return record


def run(stage_cls: type[Stage], argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    """Parse ``argv`` for ``stage_cls`` and :func:`train` it (MisatoError for user mistakes)."""
    args = train_config.parse_arguments(stage_parser(stage_cls, prog), argv)
    return train(stage_cls, args)


def main_for(stage_cls: type[Stage], argv: list[str] | None = None) -> int:
    """``python -m asuka.train.<stage>``: :func:`run`, a user mistake printed as one line (exit 2)."""
    prog = f"python -m asuka.train.{stage_cls.name.replace('-', '_')}"
    try:
        record = run(stage_cls, argv, prog)
    except MisatoError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    state = "finished" if record["complete"] else "stopped (resume with --resume)"
    print(f"{stage_cls.name}: {state} at step {record['steps']}; losses {record['final_losses']}")
    return 0

