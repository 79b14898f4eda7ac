"""Display labels of several runs given on one command line (``--labels A,B,...``): one rule for every command."""
from __future__ import annotations

from collections.abc import Sequence

from misato.errors import MisatoError


def check_given_labels(labels: Sequence[str] | None, count: int, what: str) -> None:
    """``--labels`` must give one non-empty label per ``what`` (e.g. ``"run folder"``); None = labels defaulted.

    Raises :class:`MisatoError` for a missing folder list, a wrong count or an empty label.
    """
    if not count:
        raise MisatoError(f"give at least one {what}")
    if labels is not None and len(labels) != count:
        raise MisatoError(f"--labels has {len(labels)} label(s) for {count} {what}(s)")
    if labels is not None and not all(label.strip() for label in labels):
        raise MisatoError(f"--labels contains an empty label: {','.join(labels)}")


def check_unique_labels(labels: Sequence[str], what: str) -> None:
    """Raise :class:`MisatoError` naming the labels several ``what``s share (pass ``--labels`` to tell them apart)."""
    clashes = sorted({label for label in labels if list(labels).count(label) > 1})
    if clashes:
        raise MisatoError(f"several {what}s share the label {', '.join(map(repr, clashes))}; "
                          "name them with --labels A,B,...")
