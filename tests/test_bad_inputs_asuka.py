"""Bad inputs of ``misato asuka assemble`` and ``misato train``, in the row format of :mod:`tests.test_bad_inputs`:
exit 2, one line naming the file or option, no traceback, inputs byte-identical; besides, no library log line or
warning escapes a model load, a refused training start leaves nothing that blocks the corrected command, and the
default number of data-loader workers fits the CPUs the process may use.

The inputs are the shared ``world`` of :mod:`tests.test_bad_inputs` plus a tiny SD-inpainting folder and variants of
it with one part broken, checkpoints of the wrong network and a config file that is not UTF-8.
"""
from __future__ import annotations

import json
import logging
import shutil
import socket
import warnings
from pathlib import Path

import pytest
import torch

from misato.cli import main
from misato.quiet import LIBRARY_LOGGERS
from tests.test_bad_inputs import Case, assert_refused_cleanly, world  # noqa: F401 - world is a fixture

TRAIN_MAE = ("train mae --data {in}/raw --objects {in}/objects --out {out}/t --resolution 64 --batch-size 2 "
             "--max-steps 1 --num-workers 0 --val-samples 0 --no-progress")


@pytest.fixture(scope="module")
def inputs(world: Path) -> Path:  # noqa: F811 - the imported fixture
    """``world`` plus ``tiny_sd/`` (loadable), ``sd_unet_of_a_vae/`` (the VAE's weights in ``unet/``),
    ``sd_vae_config_list/``, ``sd_vae_config_cut/`` and ``sd_vae_config_typo/`` (``vae/config.json`` a JSON
    list / cut mid-object / with a number spelled out), ``sd_unet_without_weights/``, ``sd_scheduler_typo/`` and
    ``sd_scheduler_unknown_schedule/`` (a scheduler setting of the wrong type / an unknown beta schedule),
    ``mae_300.pth`` (a tiny MAE-FAR checkpoint), ``zeros.pth`` (a state dict of one zero tensor under another
    name) and ``not_utf8.yaml``."""
    from asuka.models import MAEPrior
    from asuka.testing import TINY_MAE, write_dummy_sd_inpaint_folder
    from misato.reproducibility import seeded

    sd = write_dummy_sd_inpaint_folder(world / "tiny_sd", text_encoder=False)
    wrong_unet = shutil.copytree(sd, world / "sd_unet_of_a_vae")
    shutil.copy(sd / "vae" / "diffusion_pytorch_model.safetensors", wrong_unet / "unet")
    shutil.copytree(sd, world / "sd_vae_config_list")
    (world / "sd_vae_config_list" / "vae" / "config.json").write_text("[1, 2]")
    shutil.copytree(sd, world / "sd_vae_config_cut")
    (world / "sd_vae_config_cut" / "vae" / "config.json").write_text('{"_class_name": "AutoencoderKL",')
    config = json.loads((sd / "vae" / "config.json").read_text())
    shutil.copytree(sd, world / "sd_vae_config_typo")
    (world / "sd_vae_config_typo" / "vae" / "config.json").write_text(json.dumps({**config, "latent_channels": "four"}))
    no_weights = shutil.copytree(sd, world / "sd_unet_without_weights")
    for weights in no_weights.glob("unet/diffusion_pytorch_model*"):
        weights.unlink()
    scheduler = json.loads((sd / "scheduler" / "scheduler_config.json").read_text())
    for name, change in (("sd_scheduler_typo", {"num_train_timesteps": "four"}),
                         ("sd_scheduler_unknown_schedule", {"beta_schedule": "nosuch"})):
        shutil.copytree(sd, world / name)
        (world / name / "scheduler" / "scheduler_config.json").write_text(json.dumps({**scheduler, **change}))
    with seeded(0):
        torch.save({"model": MAEPrior(**TINY_MAE).state_dict()}, world / "mae_300.pth")
    torch.save({"weight": torch.zeros(4)}, world / "zeros.pth")
    (world / "not_utf8.yaml").write_bytes("batch-size: 2\nnote: café\n".encode("latin-1"))
    return world


@pytest.fixture
def library_log():
    """Records the model-loading libraries log at WARNING or above while the test runs (they print to the
    terminal directly, past ``capsys``)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield records
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).removeHandler(handler)


ASSEMBLE = "asuka assemble --sd {in}/tiny_sd --out {out}/a"
CASES = [
    Case("train-config-not-utf8", TRAIN_MAE + " --mae-init scratch --config {in}/not_utf8.yaml",
         ("--config {in}/not_utf8.yaml", "not UTF-8")),
    Case("train-resolution-below-the-masks", TRAIN_MAE.replace("--resolution 64", "--resolution 8") + " --mae-init scratch",
         ("--resolution must be an integer of at least 16 pixels",)),
    Case("train-masks-without-objects", TRAIN_MAE.replace(" --objects {in}/objects", "") + " --mae-init scratch",
         ("--objects",)),
    Case("train-mae-init-random-bytes", TRAIN_MAE + " --mae-init {in}/random.bin",
         ("--mae-init {in}/random.bin", "not a checkpoint of the MAE prior")),
    Case("train-mae-init-another-network", TRAIN_MAE + " --mae-init {in}/zeros.pth",
         ("--mae-init {in}/zeros.pth", "not an MAE-FAR checkpoint", "'pos_embed'")),
    Case("assemble-unet-of-another-network", "asuka assemble --sd {in}/sd_unet_of_a_vae --out {out}/a",
         ("--sd {in}/sd_unet_of_a_vae/unet", "not the expected weights", "UNet2DConditionModel")),
    Case("assemble-vae-config-a-json-list", "asuka assemble --sd {in}/sd_vae_config_list --out {out}/a",
         ("--sd {in}/sd_vae_config_list/vae/config.json", "expected a JSON object")),
    Case("assemble-vae-config-cut", "asuka assemble --sd {in}/sd_vae_config_cut --out {out}/a",
         ("--sd {in}/sd_vae_config_cut/vae/config.json", "not valid JSON")),
    Case("assemble-vae-config-of-the-wrong-type", "asuka assemble --sd {in}/sd_vae_config_typo --out {out}/a",
         ("--sd {in}/sd_vae_config_typo/vae/config.json: cannot build AutoencoderKL from it",)),
    Case("assemble-unet-without-weights", "asuka assemble --sd {in}/sd_unet_without_weights --out {out}/a",
         ("--sd {in}/sd_unet_without_weights/unet: no weight file",)),
    Case("assemble-scheduler-setting-of-the-wrong-type", "asuka assemble --sd {in}/sd_scheduler_typo --out {out}/a",
         ("--sd {in}/sd_scheduler_typo/scheduler/scheduler_config.json: cannot build",)),
    Case("assemble-scheduler-unknown-beta-schedule", "asuka assemble --sd {in}/sd_scheduler_unknown_schedule --out {out}/a",
         ("--sd {in}/sd_scheduler_unknown_schedule/scheduler/scheduler_config.json: cannot build", "nosuch")),
    Case("assemble-parts-without-configs", "asuka assemble --sd {in}/sd --out {out}/a",
         ("--sd {in}/sd/scheduler/scheduler_config.json", "missing")),
    Case("assemble-mae-of-another-network", ASSEMBLE + " --mae {in}/zeros.pth",
         ("--mae {in}/zeros.pth", "not an MAE-FAR checkpoint", "'pos_embed'")),
    Case("assemble-decoder-of-another-network", ASSEMBLE + " --decoder {in}/zeros.pth",
         ("--decoder {in}/zeros.pth", "not an inpainting-decoder checkpoint")),
    Case("assemble-alignment-of-another-network", ASSEMBLE + " --alignment {in}/zeros.pth",
         ("--alignment {in}/zeros.pth", "not the expected weights")),
    Case("assemble-mae-folder-of-another-network", ASSEMBLE + " --mae {in}/tiny_sd/vae",
         ("--mae {in}/tiny_sd/vae", "not the expected weights", "MAEPrior")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_exit_2_one_line_naming_it_inputs_untouched(case, inputs, tmp_path, capsys, monkeypatch,
                                                                 library_log):
    assert_refused_cleanly(case, inputs, tmp_path, capsys, monkeypatch)
    assert [record.getMessage()[:200] for record in library_log] == []
    assert not (tmp_path / "a").exists() and not (tmp_path / "t").exists()  # a refused start writes nothing


@pytest.mark.filterwarnings("error")  # a warning would otherwise go to pytest's record, not stderr
def test_assembling_the_tiny_sd_folder_logs_and_warns_nothing(inputs, tmp_path, capsys, library_log):
    assert main(f"asuka assemble --sd {inputs}/tiny_sd --mae {inputs}/mae_300.pth --out {tmp_path}/a".split()) == 0
    assert capsys.readouterr().err == ""
    assert library_log == []


def test_hub_dataset_offline_fails_at_once_without_touching_the_network(inputs, tmp_path, capsys, monkeypatch):
    import datasets
    import huggingface_hub.constants

    # as in a process started with MISATO_OFFLINE=1 alone: the libraries read HF_HUB_OFFLINE once, at import
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    lookups = []

    def no_network(*args, **kwargs):
        lookups.append(args[0])
        raise OSError("the tests have no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    case = Case("train-hub-dataset-offline", "train mae --data hf:nosuch/x --out {out}/t --mae-init scratch",
                ("--data hf:nosuch/x", "not in the Hugging Face cache", "MISATO_OFFLINE"), env={"MISATO_OFFLINE": "1"})
    assert_refused_cleanly(case, inputs, tmp_path, capsys, monkeypatch)
    assert lookups == []


def test_an_unreachable_hub_is_one_line_without_the_libraries_retry_logs(inputs, tmp_path, capsys, monkeypatch,
                                                                         library_log):
    import datasets

    from misato.weights import OFFLINE_ENVS

    for name in OFFLINE_ENVS:  # online, but the hub cannot be reached
        monkeypatch.delenv(name, raising=False)

    def unreachable(name, split):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    case = Case("train-hub-unreachable", "train mae --data hf:nosuch/x --out {out}/t --mae-init scratch",
                ("--data hf:nosuch/x", "cannot load the Hugging Face dataset", "Couldn't reach"))
    assert_refused_cleanly(case, inputs, tmp_path, capsys, monkeypatch)
    assert library_log == []


def test_a_refused_mae_init_leaves_nothing_that_blocks_the_corrected_run(inputs, tmp_path, capsys):
    command = TRAIN_MAE.replace("{in}", str(inputs)).replace("{out}", str(tmp_path))
    assert main(f"{command} --mae-init {inputs}/random.bin".split()) == 2
    assert "--mae-init" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert main(f"{command} --mae-init {inputs}/mae_300.pth".split()) == 0
    assert (tmp_path / "t" / "mae" / "config.json").is_file()


def test_a_refused_mae_init_in_an_existing_empty_folder_keeps_the_folder(inputs, tmp_path, capsys):
    (tmp_path / "t").mkdir()
    command = TRAIN_MAE.replace("{in}", str(inputs)).replace("{out}", str(tmp_path))
    assert main(f"{command} --mae-init {inputs}/random.bin".split()) == 2
    assert (tmp_path / "t").is_dir() and list((tmp_path / "t").iterdir()) == []


@pytest.mark.parametrize("cpus, workers", [(2, 2), (1, 1), (16, 4)])
def test_default_workers_fit_the_cpus_so_the_data_loader_does_not_warn(inputs, monkeypatch, cpus, workers):
    from asuka.train import data as train_data
    from asuka.train.config import parse_arguments
    from asuka.train.loop import stage_parser
    from asuka.train.mae import MAEStage

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))  # torch's check reads it too
    parser = stage_parser(MAEStage)
    args = parse_arguments(parser, ["--data", str(inputs / "raw"), "--out", "unused"])
    assert args.num_workers == workers
    assert "the CPUs this process may use if fewer" in " ".join(parser.format_help().split())
    dataset = train_data.TrainingImages(train_data.open_source(inputs / "raw"), 16, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "This DataLoader will create 4 worker processes in total. …"
        train_data.make_loader(dataset, 2, 0, 0, 1, args.num_workers, 0)
