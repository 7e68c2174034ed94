"""What a user sees while a command runs: labclip's warnings as one line, known third-party noise dropped,
no "Loading weights" bar."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# Third-party log messages that say nothing to a labclip user, by logger: silenced while a command runs.
KNOWN_NOISE = {
    # labclip counts tokens itself and names each caption it truncates (CaptionTruncatedWarning)
    "transformers.tokenization_utils_base": "Token indices sequence length is longer than the specified maximum",
    # M-CLIP's config declares model type "M-CLIP"; labclip loads its XLM-R text encoder on purpose
    "transformers.configuration_utils": "You are using a model of type `M-CLIP` to instantiate",
    # the report runner says in its own one line that a kernel died or the run was interrupted
    "papermill": "Kernel died while waiting for execute reply.",
}


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' "Loading weights" bar while a model loads; hub download bars stay."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bar_on, hub_off = hf_logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if not hub_off:
        enable_progress_bars()
    try:
        yield
    finally:
        if bar_on:
            hf_logging.enable_progress_bar()
        if hub_off:
            disable_progress_bars()


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def console() -> Iterator[None]:
    """While a command runs: drop the log messages in ``KNOWN_NOISE`` (only those, only from their loggers)
    and print labclip's own warnings as one ``labclip: warning: ...`` line."""
    filters = [(logging.getLogger(name), _DropMessage(prefix)) for name, prefix in KNOWN_NOISE.items()]
    for logger, drop in filters:
        logger.addFilter(drop)
    show = warnings.showwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        if not category.__module__.startswith("labclip"):
            return show(message, category, filename, lineno, file, line)
        print(f"labclip: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)
