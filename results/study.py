"""The paper's study in one call: every method ready here inpainted, evaluated and tabulated, resumably.

A study (``misato reproduce --config CONFIG --data MISATO --out STUDY``) is described by a TOML file
(:func:`load_config`; the paper's is ``results/paper.toml``) and writes::

    STUDY/study.json           settings, each method's status and reason, the tables written (no timestamps)
    STUDY/skipped.csv          every configured method that is not done, and why
    STUDY/predictions/<name>/  the runner's output (:func:`baselines.run_method`)
    STUDY/runs/<name>/         the evaluator's run folder (``evaluate.evaluate_folder``), <name> = the config entry
    STUDY/state/<name>.json    what the evaluation in runs/<name> was computed from (predictions digest, protocol,
                               metrics): a finished evaluation is reused only when these are unchanged
    STUDY/logs/<name>.log      everything the method's job printed, appended session after session
    STUDY/tables/              the paper's tables (:func:`results.paper.build_tables`)

Every level resumes: finished prediction runs (complete ``run.json``, every image present) are reused without
loading the method, unfinished ones continue through the runner's resume, finished evaluations are reused unless
their predictions or settings changed. Methods run one after another, or ``jobs`` at a time in worker processes;
a failing method is logged and reported and the others go on.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import traceback
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
from pathlib import Path
from typing import Any

from misato.errors import MisatoError
from misato.io import atomic_write_text
from baselines.runner import RUN_POLICY
from evaluate.schema import RUN_FILES
from misato.outputs import OutputPolicy, prepare_output, read_record, within
from results.paper import TABLES_POLICY

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STUDY_FILE = "study.json"
SKIPPED_CSV = "skipped.csv"
STUDY_POLICY = OutputPolicy(what="study", markers=(STUDY_FILE,),
                            owned=(*within("predictions/*", RUN_POLICY.owned), *within("runs/*", RUN_FILES),
                                   "state/*.json", "logs/*.log", *within("tables", TABLES_POLICY.owned), STUDY_FILE,
                                   SKIPPED_CSV))
"""``overwrite`` deletes what the study's jobs wrote (the runner's files in ``predictions/<name>/``, the evaluator's
in ``runs/<name>/``, the tables), not a user's notes kept beside them."""
PAPER_CONFIG = "paper.toml"
"""The paper's study, shipped in this package (:func:`paper_config`)."""
STUDY_PACKAGES = ("opencv-python-headless", "scikit-image", "diffusers")
DONE, FAILED, SKIPPED, NOT_SELECTED = "done", "failed", "skipped", "not selected"
GPU_RULE = ("GPU advised and the study's device is not CUDA (no GPU here, or --device): skipped unless named in "
            "--methods, which runs it on that device anyway")


def paper_config() -> Path:
    """The path of the shipped ``results/paper.toml``."""
    return Path(str(resources.files(__package__).joinpath(PAPER_CONFIG)))


# --- the configuration ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """One method of a study.

    Attributes:
        name: the entry's name: the folder under ``predictions/`` and ``runs/``, the row the tables look up.
        method: the registered ``misato inpaint --method`` name.
        options: the factory's keyword options, validated and completed with the declared defaults.
        requires: options that must name an existing file or folder for the method to be ready (``model``).
        batch_size: images handed to the method at once.
    """

    name: str
    method: str
    options: dict[str, Any]
    requires: tuple[str, ...] = ()
    batch_size: int = 1


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A parsed study file: the methods, the evaluation every method gets, the tables to build.

    Attributes:
        tables: names of shipped table mappings (``misato tables --table``) to build.
        mappings: mapping files of one's own (``misato tables --mapping``), resolved against the config's folder.
        protocol, metrics, ids_pca: what ``evaluate_folder`` is called with for every method (``ids_pca`` None:
            the protocol's).
    """

    path: Path
    methods: dict[str, MethodEntry]
    tables: tuple[str, ...]
    mappings: tuple[Path, ...]
    protocol: str
    metrics: tuple[str, ...]
    ids_pca: str | int | None = None
    seed: int = 0
    eval_batch_size: int = 8


SECTIONS = {"study": {"seed"}, "evaluation": {"protocol", "metrics", "batch_size", "ids_pca"},
            "tables": {"build", "mappings"}, "methods": None}
METHOD_KEYS = {"method", "options", "requires", "batch_size"}


def _unknown_keys(where: str, found, allowed) -> None:
    unknown = sorted(set(found) - set(allowed))
    if unknown:
        raise MisatoError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _typed(option, value: Any) -> Any:
    """``value`` as the option's declared type (TOML integers accepted for floats), else an error (the caller
    prefixes where the value came from)."""
    if option.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, option.type) or (option.type is int and isinstance(value, bool)):
        raise MisatoError(f"option {option.name} must be {option.type.__name__}, got {value!r}")
    return value


ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _refuse_names_equal_but_for_case(names, where: str) -> None:
    """Entry names differing only in case would share their folders on a case-insensitive file system (macOS,
    Windows): refused everywhere, so a study moves between machines unchanged."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise MisatoError(f"{where}: {other!r} and {name!r} differ only in case; their folders would be one on "
                              "a case-insensitive file system, so rename one")


def check_entry_name(name: str, where: str) -> None:
    """Refuse an entry name that is not one plain path component: it names ``predictions/<name>/``,
    ``runs/<name>/`` and ``logs/<name>.log``, so ``../x`` or ``a/b`` would write outside the study folder (and
    ``--set NAME.OPTION=VALUE`` splits at the first dot, so a dot is refused too)."""
    if not ENTRY_NAME.fullmatch(name) or len(name) > 100:
        raise MisatoError(f"{where}: the name {name!r} names the study's folders and files, so it must be letters, "
                          f"digits, '_' and '-' only, starting with a letter or digit "
                          f"(at most 100 characters)")


def _parse_override(text: str, option, where: str) -> Any:
    """A ``--set`` value typed as ``option`` declares it."""
    if option.type is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise MisatoError(f"{where}: {option.name} takes true or false, got {text!r}")
        return lowered in ("true", "1", "yes", "on")
    try:
        return option.type(text)
    except ValueError:
        raise MisatoError(f"{where}: {option.name} takes a {option.type.__name__}, got {text!r}") from None


def method_entry(name: str, method: str, options: dict[str, Any], where: str, requires: Sequence[str] = (),
                 batch_size: int = 1) -> MethodEntry:
    """A validated :class:`MethodEntry`: the method is registered, every option is one it declares, of its type
    and among its choices; declared defaults fill the rest (as ``misato inpaint`` does)."""
    from baselines.base import get_spec

    check_entry_name(name, where)
    try:
        spec = get_spec(method)
        typed = {}
        for key, value in options.items():
            option = spec.option(key)
            typed[key] = value if option is None else _typed(option, value)  # undeclared: refused below
        options = spec.resolve_options(typed)
    except MisatoError as error:
        raise MisatoError(f"{where}: {error}") from None
    undeclared = [key for key in requires if spec.option(key) is None]
    if undeclared:
        raise MisatoError(f"{where}: requires {', '.join(undeclared)}, which method {method} does not take")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MisatoError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
    return MethodEntry(name, method, dict(sorted(options.items())), tuple(requires), batch_size)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read and check a study file (the format is documented in ``results/paper.toml`` and docs/reproduce.md).

    Args:
        overrides: ``NAME.OPTION=VALUE`` strings (``--set``), applied to method ``NAME``'s options: how a
            machine's model folders reach the shipped config.
    Raises:
        MisatoError: a missing or malformed file, an unknown section or key, an unknown method, option, metric,
        protocol or table, an option of the wrong type, a bad ``ids_pca``, a table measured with another protocol
        or showing metrics the study does not compute.
    """
    from baselines.base import get_spec
    from evaluate.metric_info import parse_metrics
    from evaluate.protocols import get_protocol

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MisatoError(f"study config {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise MisatoError(f"{path}: not a readable TOML file ({error})") from None
    _unknown_keys(str(path), document, SECTIONS)
    for section, keys in SECTIONS.items():
        if not isinstance(document.get(section, {}), dict):
            raise MisatoError(f"{path}: [{section}] must be a table")
        if keys is not None:
            _unknown_keys(f"{path} [{section}]", document.get(section, {}), keys)

    study, evaluation, tables = (document.get(key, {}) for key in ("study", "evaluation", "tables"))
    build, mappings = tables.get("build", []), tables.get("mappings", [])
    if not (isinstance(build, list) and isinstance(mappings, list) and all(isinstance(t, str) for t in build + mappings)):
        raise MisatoError(f"{path} [tables]: build and mappings must be lists of strings")
    if not build and not mappings:
        raise MisatoError(f"{path} [tables]: give build = [table names] and/or mappings = [mapping files]")
    if "protocol" not in evaluation or "metrics" not in evaluation:
        raise MisatoError(f"{path} [evaluation]: needs protocol = \"...\" and metrics = [...]")
    try:
        protocol = get_protocol(evaluation["protocol"]).name
        metrics = tuple(parse_metrics(list(evaluation["metrics"])))
    except (MisatoError, TypeError) as error:
        raise MisatoError(f"{path} [evaluation]: {error}") from None

    methods: dict[str, dict[str, Any]] = {}
    for name, entry in document.get("methods", {}).items():
        where = f"{path} [methods.{name}]"
        if not isinstance(entry, dict):
            raise MisatoError(f"{where}: must be a table")
        _unknown_keys(where, entry, METHOD_KEYS)
        requires = entry.get("requires", [])
        if not isinstance(entry.get("options", {}), dict) or not (isinstance(requires, list)
                                                                  and all(isinstance(r, str) for r in requires)):
            raise MisatoError(f"{where}: options must be a table and requires a list of option names")
        methods[name] = {"method": entry.get("method", name), "options": dict(entry.get("options", {})),
                         "requires": entry.get("requires", []), "batch_size": entry.get("batch_size", 1)}
    _refuse_names_equal_but_for_case(methods, f"{path} [methods]")
    for override in overrides:
        target, equals, value = override.partition("=")
        name, dot, option = target.partition(".")
        if not (equals and dot and name and option):
            raise MisatoError(f"--set {override}: expected NAME.OPTION=VALUE (e.g. sd.model=/models/sd-inpainting)")
        if name not in methods:
            raise MisatoError(f"--set {override}: the config has no method {name!r} ({', '.join(methods)}); a "
                              f"method named only in --methods runs with its defaults: to set its options, add "
                              f"[methods.{name}] to a copy of the config")
        declared = get_spec(methods[name]["method"]).option(option.replace("-", "_"))
        if declared is None:
            raise MisatoError(f"--set {override}: method {methods[name]['method']} takes no option {option}")
        methods[name]["options"][declared.name] = _parse_override(value, declared, f"--set {override}")

    seed, eval_batch, ids_pca = study.get("seed", 0), evaluation.get("batch_size", 8), evaluation.get("ids_pca")
    if not isinstance(seed, int) or not isinstance(eval_batch, int) or eval_batch < 1:
        raise MisatoError(f"{path}: [study] seed must be an integer and [evaluation] batch_size a positive integer")
    if not (ids_pca is None or ids_pca == "none" or (type(ids_pca) is int and ids_pca > 0)):
        raise MisatoError(f"{path} [evaluation]: ids_pca must be a positive integer or \"none\", got {ids_pca!r}")
    config = StudyConfig(
        path=path,
        methods={name: method_entry(name, m["method"], m["options"], f"{path} [methods.{name}]", m["requires"],
                                    m["batch_size"]) for name, m in methods.items()},
        tables=tuple(dict.fromkeys(build)),
        mappings=tuple((path.parent / m).resolve() for m in mappings),
        protocol=protocol,
        metrics=metrics,
        ids_pca=ids_pca,
        seed=seed,
        eval_batch_size=eval_batch,
    )
    _check_tables(config)
    return config


# --- what is ready here -----------------------------------------------------------------------------------------

def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def not_ready_reasons(entry: MethodEntry, explicit: bool, cuda: bool) -> list[str]:
    """Why ``entry`` cannot run here (empty: it is ready).

    - a required option (``requires``) not given, or naming a path that does not exist;
    - an explicit ``weights`` option naming no file; otherwise (and without a ``model`` folder, which carries its
      own weights) the weights-registry files the method needs
      (:meth:`baselines.base.MethodSpec.status`, as ``misato methods`` reports), with the registry's message
      saying where to put each missing one;
    - :attr:`baselines.base.MethodSpec.gpu_advised` when ``cuda`` is False (the study's device is not CUDA),
      unless ``explicit`` (named in ``--methods``): :data:`GPU_RULE`.
    """
    from baselines.base import get_spec
    from misato import weights

    spec = get_spec(entry.method)
    reasons = []
    for option in entry.requires:
        value = entry.options.get(option)
        if value is None:
            reasons.append(f"option {option} is not set: give it with --set {entry.name}.{option}=PATH "
                           f"or in a copy of the config ([methods.{entry.name}.options])")
        elif not Path(value).expanduser().exists():
            reasons.append(f"option {option}: {value} does not exist")
    if entry.options.get("model") is not None:
        pass  # a model folder carries its own weights (checked when the method loads it)
    elif entry.options.get("weights") is not None:
        if not Path(entry.options["weights"]).expanduser().is_file():
            reasons.append(f"option weights: file {entry.options['weights']} not found")
    else:
        status = spec.status()
        if status["problem"]:
            reasons.append(status["problem"])
        elif not status["ready"]:
            missing = []
            for name in spec.weights:
                try:
                    weights.resolve(name, allow_download=False)
                except MisatoError as error:
                    missing.append(str(error))
            reasons.extend(missing or [f"weights {', '.join(status['weights'])} not found (see `misato methods`)"])
    if spec.gpu_advised and not cuda and not explicit:
        reasons.append(GPU_RULE)
    return reasons


def select_methods(config: StudyConfig, methods: Sequence[str] | None) -> dict[str, MethodEntry]:
    """The entries a run covers: all of the config's, or those named (a registered method the config does not
    list runs with its default options under its own name).

    Raises:
        MisatoError: an empty ``methods``, a name given twice, or one neither in the config nor registered.
    """
    if methods is None:
        return dict(config.methods)
    from baselines.base import method_specs

    if not methods:
        raise MisatoError("--methods: no method named; give config entries or registered methods, comma-separated")
    twice = sorted({name for name in methods if list(methods).count(name) > 1})
    if twice:
        raise MisatoError(f"--methods: {', '.join(twice)} named more than once; give each method once")
    chosen = {}
    for name in methods:
        if name in config.methods:
            chosen[name] = config.methods[name]
        elif name in method_specs():
            chosen[name] = method_entry(name, name, {}, f"--methods {name}")
        else:
            raise MisatoError(f"--methods: {name!r} is neither in {config.path} ({', '.join(config.methods)}) nor a "
                              "registered method (see `misato methods`)")
    _refuse_names_equal_but_for_case([*config.methods, *chosen], "--methods")
    return chosen


# --- one method's job (run in this process or in a worker) -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs to inpaint and evaluate one method (picklable): ``metrics`` are the study's,
    ``computable`` those whose weights are here (the others are left out and recorded by the evaluator)."""

    entry: MethodEntry
    study: str
    data: str
    seed: int
    protocol: str
    metrics: tuple[str, ...]
    computable: tuple[str, ...]
    ids_pca: str | int | None
    eval_batch_size: int
    device: str
    threads: int | None = None


def finished_predictions(folder: Path, names: Sequence[str]) -> bool:
    """Whether ``folder`` holds a complete runner output for every name (complete ``run.json`` without a limit
    over the same number of images, and every ``<name>.png``)."""
    from baselines.runner import RUN_FILE

    if not (folder / RUN_FILE).is_file():
        return False
    record = read_record(folder / RUN_FILE)
    return (record.get("complete") is True and record.get("limit") is None and record.get("n_images") == len(names)
            and all((folder / f"{name}.png").is_file() for name in names))


def files_digest(files: dict[str, Path]) -> str:
    """sha256 over every ``name → file``'s name and sha256, in name order."""
    from misato.hashing import file_sha256

    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\t{file_sha256(files[name])}\n".encode())
    return digest.hexdigest()


def predictions_digest(folder: Path, names: Sequence[str]) -> str:
    """What an evaluation of the prediction ``folder`` was computed from (:func:`files_digest` of its PNGs)."""
    return files_digest({name: folder / f"{name}.png" for name in names})


def _inpaint_and_evaluate(job: Job) -> dict[str, Any]:
    from baselines import create_method, run_method
    from misato.compat import import_evaluator
    from misato.layout import open_pairs

    evaluator = import_evaluator()
    from evaluate.schema import SUMMARY_JSON

    study, name = Path(job.study), job.entry.name
    names = open_pairs(job.data).names
    predictions = study / "predictions" / name
    if finished_predictions(predictions, names):
        inpainted = "reused"
    else:
        method = create_method(job.entry.method, **job.entry.options)
        run_method(method, job.data, predictions, seed=job.seed, resume=True, batch_size=job.entry.batch_size)
        inpainted = "computed"
    key = {"predictions_sha256": predictions_digest(predictions, names), "n": len(names), "protocol": job.protocol,
           "metrics": list(job.computable), "ids_pca": job.ids_pca}
    state, run = study / "state" / f"{name}.json", study / "runs" / name
    finished = (run / SUMMARY_JSON).is_file()
    if finished and state.is_file() and read_record(state).get("evaluation") == key:
        evaluated = "reused"
    else:
        (run / SUMMARY_JSON).unlink(missing_ok=True)  # first: a killed redo must not leave the old one looking new
        atomic_write_text(state, json.dumps({"evaluation": key}, indent=2) + "\n")
        evaluator.evaluate_folder(predictions, job.data, run, protocol=job.protocol, metrics=list(job.metrics),
                                  ids_pca=job.ids_pca, batch_size=job.eval_batch_size, device=job.device, method=name,
                                  skip_missing_weights=True, overwrite=True)  # the study's own run folder
        evaluated = "redone" if finished else "computed"
    return {"status": DONE, "predictions_sha256": key["predictions_sha256"], "inpainted": inpainted,
            "evaluated": evaluated}


def run_job(job: Job) -> dict[str, Any]:
    """Inpaint (or reuse) and evaluate (or reuse) one method, printing into ``STUDY/logs/<name>.log``.

    Returns:
        ``{"name", "status": "done" | "failed", ...}``; a failure carries ``reason`` (one line) and its
        traceback is in the log. Never raises for a failing method (KeyboardInterrupt does propagate).
    """
    log = Path(job.study) / "logs" / f"{job.entry.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle, redirect_stdout(handle), redirect_stderr(handle):
        if job.threads is not None:
            import torch

            torch.set_num_threads(job.threads)
        print(f"== {job.entry.name}: method {job.entry.method}, options {job.entry.options}", flush=True)
        try:
            outcome = _inpaint_and_evaluate(job)
        except Exception as error:  # one method's failure must not stop the study; the log keeps the traceback
            traceback.print_exc()
            text = str(error) if isinstance(error, MisatoError) else f"{type(error).__name__}: {error}"
            outcome = {"status": FAILED, "reason": f"{text} (see logs/{job.entry.name}.log)"}
        print(f"== {job.entry.name}: {outcome['status']}", flush=True)
    return {"name": job.entry.name, **outcome}


def run_jobs(jobs: Sequence[Job], workers: int, on_done: Callable[[dict[str, Any]], None]) -> None:
    """Run ``jobs`` here one by one (``workers`` 1) or in ``workers`` spawned processes; ``on_done`` gets each
    outcome as it arrives. A worker that dies (out of memory, a crash in native code) fails its job."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            on_done(run_job(job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:  # BrokenProcessPool and the like: the worker is gone, its job failed
                name = futures[future].entry.name
                outcome = {"name": name, "status": FAILED,
                           "reason": f"its worker process died ({type(error).__name__}: {error}); run again with "
                           f"--resume (see logs/{name}.log)"}
            on_done(outcome)


# --- tables ---------------------------------------------------------------------------------------------------

def table_mappings(config: StudyConfig) -> list[tuple[Any, dict[str, Any]]]:
    """``[(results.mapping.TableMapping, build_tables selection), ...]`` for ``config``'s tables."""
    from results import mapping

    try:
        return ([(mapping.shipped_mapping(name), {"tables": [name]}) for name in config.tables]
                + [(mapping.load_mapping(path), {"mapping": path}) for path in config.mappings])
    except MisatoError as error:
        raise MisatoError(f"{config.path} [tables]: {error}") from None


def _check_tables(config: StudyConfig) -> None:
    """Every configured table exists and is measured with the study's protocol on metrics the study computes."""
    for table, _ in table_mappings(config):
        for section in table.sections:
            missing = [m for m in section.metrics if m not in config.metrics]
            if section.protocol != config.protocol or missing:
                problem = (f"is measured with protocol {section.protocol}" if section.protocol != config.protocol
                           else f"needs metrics {', '.join(missing)}")
                raise MisatoError(f"{config.path}: table {table.name} ({table.source}) {problem}, but [evaluation] "
                                  f"has protocol {config.protocol} and metrics {', '.join(config.metrics)}")


def build_study_tables(config: StudyConfig, study: Path) -> dict[str, Any]:
    """Build each of ``config``'s tables that has at least one run in ``study/runs`` into ``study/tables``
    (:func:`results.paper.build_tables`, with the reported numbers beside the measured ones).

    Returns:
        ``{"built": {table: [file names]}, "skipped": {table: why}, "failed": {table: the builder's error}}``
        (no absolute paths: a study's record does not depend on where it lies), plus ``"problem"`` (one line)
        when a table failed or none was built.
    """
    from results import paper

    runs = study / "runs"
    built, skipped, failed = {}, {}, {}
    for table, selection in table_mappings(config):
        table = table.with_runs_in(runs)
        if not table.has_runs_in(runs):
            skipped[table.name] = f"none of its runs is in runs/ (it reads {', '.join(table.run_folders)})"
            continue
        try:
            report = paper.build_tables(runs, study / "tables", vs_reported=True, **selection)
        except MisatoError as error:
            failed[table.name] = str(error)
            continue
        built[table.name] = sorted(path.name for path in report.files)
    result: dict[str, Any] = {"built": built, "skipped": skipped, "failed": failed}
    if failed:
        result["problem"] = f"table(s) {', '.join(failed)} could not be built"
    elif not built:
        result["problem"] = "no configured table has a run here" if skipped else "no table is configured"
    return result


# --- the study ------------------------------------------------------------------------------------------------

GLOBAL_SETTINGS = ("data", "data_sha256", "seed", "protocol", "ids_pca")


def _check_resumable(previous: dict[str, Any], settings: dict[str, Any], entries: dict[str, MethodEntry],
                     out: Path) -> None:
    """A resumed study keeps its data, seed and protocol, and each method that has predictions keeps its options."""
    differing = [key for key in GLOBAL_SETTINGS if previous.get(key) != settings[key]]
    for name, entry in entries.items():
        before = previous.get("methods", {}).get(name)
        if before is not None and (out / "predictions" / name).exists() and \
                (before.get("method"), before.get("options")) != (entry.method, entry.options):
            differing.append(f"options of {name}")
    if differing:
        raise MisatoError(f"{out} was started with other settings ({', '.join(differing)}); resume with the same "
                          "ones, or pass --overwrite, or choose another --out")


def _skipped_csv(methods: dict[str, dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "method", "status", "reason"])
    for name, entry in methods.items():
        if entry["status"] != DONE:
            writer.writerow([name, entry["method"], entry["status"], entry.get("reason") or ""])
    return buffer.getvalue()


def reproduce(
    config: str | os.PathLike | StudyConfig | None = None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike = "study",
    methods: Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    jobs: int = 1,
    tables_only: bool = False,
    overrides: Sequence[str] = (),
    device: str | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the study ``config`` (default: the paper's) on ``data`` into ``out``; see the module docstring.

    Args:
        methods: entry names to run (default: every configured one); naming a GPU-advised method runs it on a
            non-CUDA device too (otherwise it is skipped there: :data:`GPU_RULE`).
        resume: continue the study in ``out`` (each finished level reused); without it, a study folder is refused.
        overwrite: replace the study in ``out`` (only what a study writes is deleted).
        jobs: methods run at the same time, each in its own worker process (1: one by one in this process).
        tables_only: only build the tables from ``out/runs`` (e.g. runs made by separate cluster jobs).
        overrides: ``NAME.OPTION=VALUE`` (see :func:`load_config`).
        device: torch device of the methods that take one (unless their options fix it) and of the evaluation;
            default ``cuda`` where available, else ``cpu``. Without CUDA, GPU-advised methods are skipped unless
            named in ``methods``.
        report: called with one line per finished method (default: print to stdout).
    Returns:
        The ``study.json`` record (``{"methods": {name: {"status", "reason", ...}}, "tables": ..., ...}``);
        with ``tables_only`` just ``{"tables": ...}``.
    Raises:
        MisatoError: bad config, ``data`` not a MISATO folder, ``out`` inside ``data``, a study in ``out`` without
        ``resume``/``overwrite`` or started with other settings, no metric computable with the weights here.
    """
    from misato.layout import open_pairs
    from misato.provenance import provenance

    report = report or print
    if jobs < 1:
        raise MisatoError(f"--jobs must be at least 1, got {jobs}")
    if not isinstance(config, StudyConfig):
        config = load_config(config if config is not None else paper_config(), overrides)
    out = Path(out)
    if tables_only:
        if not (out / "runs").is_dir():
            raise MisatoError(f"--tables-only: {out / 'runs'} not found; point --out at a study folder")
        return {"tables": build_study_tables(config, out)}
    if data is None:
        raise MisatoError("--data is required (except with --tables-only)")
    device = study_device(device)
    cuda = device.startswith("cuda")
    chosen = {name: on_device(entry, device) for name, entry in select_methods(config, methods).items()}
    pairs = open_pairs(data)
    from misato.compat import import_evaluator

    import_evaluator()
    from evaluate.evaluator import weights_plan
    from evaluate.protocols import get_protocol

    metrics, metric_skips = weights_plan(get_protocol(config.protocol), list(config.metrics))
    if not metrics:
        raise MisatoError("no metric can be computed here: " + "; ".join(f"{m}: {r}" for m, r in metric_skips.items()))
    # every check on the arguments is done: only now may --overwrite delete the previous study
    previous = prepare_output(out, STUDY_POLICY, resume=resume, overwrite=overwrite, inputs=[data])
    masks = {f"mask/{name}": path for name, path in pairs.masks.items()}
    settings = {"data": str(Path(data).resolve()), "data_sha256": files_digest({**pairs.images, **masks}),
                "seed": config.seed, "protocol": config.protocol, "ids_pca": config.ids_pca}
    if previous is not None:
        _check_resumable(previous.record, settings, chosen, out)
    explicit = set(methods or ())
    before = previous.record.get("methods", {}) if previous is not None else {}
    record: dict[str, Any] = {
        "config": config.path.name, **settings, "n_images": len(pairs.names), "tables": {},
        "metrics": metrics, "metrics_skipped": metric_skips, "gpu_rule": GPU_RULE, "methods": {}, "complete": False,
        "provenance": provenance(STUDY_PACKAGES, protocol=config.protocol),
    }
    todo = []
    for name in dict.fromkeys([*config.methods, *chosen]):
        entry = chosen.get(name, config.methods.get(name))
        row = {"method": entry.method, "options": entry.options}
        if name not in chosen:
            row.update(before.get(name) or {"status": NOT_SELECTED, "reason": "not named in --methods"})
        elif reasons := not_ready_reasons(entry, name in explicit, cuda):
            row.update(status=SKIPPED, reason="; ".join(reasons))
        else:
            row.update(status="pending")
            todo.append(Job(entry, str(out), str(data), config.seed, config.protocol, config.metrics, tuple(metrics),
                            config.ids_pca, config.eval_batch_size, device,
                            None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)))
        record["methods"][name] = row
    for name, row in record["methods"].items():
        if row["status"] == SKIPPED:
            report(f"{name}: skipped: {row['reason']}")
    unselected = [name for name, row in record["methods"].items() if row["status"] == NOT_SELECTED]
    if unselected:
        report(f"not selected (not named in --methods): {', '.join(unselected)}")

    def write() -> None:
        atomic_write_text(out / STUDY_FILE, json.dumps(record, indent=2) + "\n")
        atomic_write_text(out / SKIPPED_CSV, _skipped_csv(record["methods"]))

    out.mkdir(parents=True, exist_ok=True)
    write()

    def finished(outcome: dict[str, Any]) -> None:
        name = outcome.pop("name")
        session = {key: outcome.pop(key) for key in ("inpainted", "evaluated") if key in outcome}
        record["methods"][name].update(outcome)
        write()
        detail = f" (predictions {session['inpainted']}, evaluation {session['evaluated']})" if session else ""
        report(f"{name}: {outcome['status']}{detail}" + (f": {outcome['reason']}" if "reason" in outcome else ""))

    run_jobs(todo, jobs, finished)
    record["tables"] = build_study_tables(config, out)
    record["complete"] = True
    write()
    return record


def study_device(device: str | None) -> str:
    """``device`` checked (:func:`baselines.base.check_device`), or ``cuda`` where available, else ``cpu``."""
    from baselines.base import check_device

    if device is None:
        return "cuda" if cuda_available() else "cpu"
    check_device(device)
    return device


def on_device(entry: MethodEntry, device: str) -> MethodEntry:
    """``entry`` with its ``device`` option set to ``device`` when the method takes one and the config does not
    fix it."""
    from baselines.base import get_spec

    if "device" in entry.options or get_spec(entry.method).option("device") is None:
        return entry
    return dataclasses.replace(entry, options=dict(sorted({**entry.options, "device": device}.items())))


def study_commands(config: StudyConfig, data: str | os.PathLike, out: str | os.PathLike,
                   methods: Sequence[str] | None = None, device: str | None = None) -> list[tuple[str, list[str]]]:
    """The ``misato`` command lines that do what the study does for each method, one job per method (e.g. one
    cluster job each, see docs/reproduce.md): ``misato inpaint`` into ``out/predictions/<name>`` with the entry's
    options and ``misato evaluate`` into ``out/runs/<name>``; afterwards ``misato reproduce --tables-only``.

    Returns:
        ``[(name, argv without the leading "misato"), ...]``, two per method (inpaint, then evaluate), for every
        selected entry whether or not it is ready here.
    """
    from baselines.base import get_spec

    device, out, data = study_device(device), Path(out), str(data)
    commands = []
    for name, entry in select_methods(config, methods).items():
        spec, entry = get_spec(entry.method), on_device(entry, device)
        flags = []
        for key, value in entry.options.items():
            flag = spec.option(key).flag
            flags += ([flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)])
        predictions = str(out / "predictions" / name)
        commands.append((name, ["inpaint", "--method", entry.method, "--data", data, "--out", predictions,
                                "--seed", str(config.seed), "--batch-size", str(entry.batch_size), "--resume", *flags]))
        ids_pca = ["--ids-pca", str(config.ids_pca)] if config.ids_pca is not None else []
        commands.append((name, ["evaluate", "--pred", predictions, "--gt", data, "--out", str(out / "runs" / name),
                                "--protocol", config.protocol, "--metrics", ",".join(config.metrics), *ids_pca,
                                "--batch-size", str(config.eval_batch_size), "--device", device, "--method", name,
                                "--skip-missing-weights"]))
    return commands


def exit_code(record: dict[str, Any]) -> int:
    """0 when every selected ready method is done and the tables were built; 1 when a method failed or the
    tables could not be built (skipped methods do not count: they are reported)."""
    failed = any(entry["status"] == FAILED for entry in record.get("methods", {}).values())
    return 1 if failed or "problem" in record.get("tables", {}) else 0

