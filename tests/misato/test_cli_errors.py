"""The command line turns the user's file-system errors into exit 2 with one line naming the path."""
from __future__ import annotations

import errno

import pytest

import misato.masks
from misato.cli import main

MASKS = ["masks", "--preset", "rect", "--n", "2", "--size", "32", "--seed", "0", "--out"]


def test_a_file_where_the_output_folder_should_be_is_exit_2_naming_it(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    assert main([*MASKS, str(tmp_path / "afile" / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"misato masks: error: {tmp_path / 'afile' / 'sub'}: Not a directory"
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_disk_full_and_permission_errors_anywhere_in_a_command_are_exit_2(tmp_path, capsys, monkeypatch, code):
    def fails(*args, **kwargs):
        raise OSError(code, "injected", str(tmp_path / "out" / "00000.png"))

    monkeypatch.setattr(misato.masks, "generate_masks", fails)
    assert main([*MASKS, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'out' / '00000.png'}: injected" in err


def test_other_os_errors_are_bugs_and_keep_their_traceback(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise OSError("a bug, not the user's file system")

    monkeypatch.setattr(misato.masks, "generate_masks", fails)
    with pytest.raises(OSError, match="a bug"):
        main([*MASKS, str(tmp_path / "out")])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_options_are_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(["inpaint", "--method", "sd", "--model", str(tmp_path), "--data", str(tmp_path), "--out",
              str(tmp_path / "out"), f"--guidance-scale={value}"])
    assert stop.value.code == 2 and "expected a finite number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_the_subcommands_load_is_exit_130_without_a_traceback(monkeypatch, capsys):
    import misato.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(misato.cli, "build_parser", interrupted)
    assert misato.cli.main(["masks", "--help"]) == 130
    assert capsys.readouterr().err == "misato: interrupted\n"
