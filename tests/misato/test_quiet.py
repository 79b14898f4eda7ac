"""misato.quiet: library loggers, warnings and diffusers' progress bars are off during a load, as before after."""
import logging
import warnings

import diffusers.utils.logging as diffusers_logging

from misato.quiet import quiet_loading


def test_quiet_loading_silences_then_restores():
    logger = logging.getLogger("diffusers")
    before = logger.level
    assert diffusers_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with quiet_loading():
            assert logger.getEffectiveLevel() == logging.ERROR
            assert not diffusers_logging.is_progress_bar_enabled()
            warnings.warn("inside")
        warnings.warn("outside")
    assert [str(w.message) for w in shown] == ["outside"]
    assert logger.level == before and diffusers_logging.is_progress_bar_enabled()
