"""A command's models: loaded with its options, and named in its output."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, cast

from ..errors import LabclipError
from ..lab.provenance import model_record
from .console import quiet_loading

if TYPE_CHECKING:
    from ..model import ClipModel


def identity(model: ClipModel, requested: str | None = None, fallback_reason: str | None = None) -> dict:
    """Who made a command's numbers: the record its JSON provenance, CSV model columns and tag keys are built
    from (:func:`labclip.lab.provenance.model_record`). The only place the command line identifies a model."""
    return model_record(model, requested, fallback_reason)


def name_demo_flag(err: LabclipError, flag: str = "--model") -> LabclipError:
    """Offline loading errors name the flag that gives the demo model."""
    text = str(err)
    if f"{flag} demo" in text or "'demo' model" not in text:
        return err
    return LabclipError(text.replace("the untrained 'demo' model", f"the untrained demo model ({flag} demo)"))


def configure(model: ClipModel, args: argparse.Namespace) -> ClipModel:
    """Apply ``--batch-size`` and ``--no-cache`` to a loaded model."""
    if args.batch_size:
        model.image_batch_size = model.text_batch_size = args.batch_size
    if args.no_cache:
        model.cache = None
    return model


def load(args: argparse.Namespace, name: str | None = None) -> ClipModel:
    """The model of ``--model`` (or ``name``, a command's second model) with the command's ``--device``,
    ``--precision``, ``--batch-size`` and ``--no-cache``; the one loading wrapper of the commands.

    Raises:
        LabclipError: the model cannot be loaded (offline, the message names ``--model demo``).
    """
    from ..model import load_model

    try:
        with quiet_loading():
            model = load_model(name or args.model, device=args.device, cache=not args.no_cache,
                               precision=args.precision, default_for=args.precision_default_for)
    except LabclipError as err:
        raise name_demo_flag(err) from None
    if model.untrained and name is None:
        print(f"labclip: note: '{args.model}' is an untrained model; its results mean nothing", file=sys.stderr)
    return configure(cast("ClipModel", model), args)  # an AdaptedModel is used as the ClipModel it wraps
