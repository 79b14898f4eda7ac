"""The check both picture commands' bad-input tests share."""
from __future__ import annotations

from misato.cli import main


def assert_one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    """``misato ARGV`` exits 2 with one stderr line ``misato COMMAND: error: …`` holding every fragment."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"misato {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in err, err
