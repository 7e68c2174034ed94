"""A command's results: printed as the reports show them, or written with their provenance to ``--out``.

Console labels and number format are the reports' (:mod:`labclip.labels`): percentages with one decimal,
counts as k/n, cosines with three decimals. Files are written together and atomically
(:func:`labclip.atomic.write_texts`): a failed write leaves nothing half-written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..atomic import write_texts
from ..errors import LabclipError
from ..lab.provenance import model_columns, output_provenance
from ..labels import format_metric, metric_label
from ..stats import INTERVAL_SUFFIXES, Estimate, interval_fields, is_interval_field

HIDDEN = {"k", "i2t_hits1", "t2i_hits1"}
label = metric_label
fmt = format_metric


def print_summary(summary: dict) -> None:
    """Each summary figure on a line, as ``Label: value`` (with why it is undefined, where it is)."""
    n = summary.get("n")
    for key, value in summary.items():
        if key not in HIDDEN and not key.endswith("_undefined") and not (key == "threshold" and value is None):
            why = summary.get(f"{key}_undefined")
            print(f"{label(key)}: {fmt(key, value, n)}" + (f" ({why})" if why else ""))
    print()


def print_table(table: pd.DataFrame, n: int | None = None) -> None:
    """The table as the reports show it; an accuracy shows its interval in its cell, so the interval columns go."""
    shown = table.drop(columns=[c for c in table.columns if is_interval_field(c)])
    for column in shown.columns:
        shown[column] = [fmt(column, v, n) for v in shown[column]]
    shown.columns = [label(c) for c in shown.columns]
    with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", None):
        print(shown.to_string(index=False))


def flat_summary(summary: dict) -> dict:
    """Each :class:`~labclip.stats.Estimate` as its value, followed by ``{key}_low`` and ``{key}_high``."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, Estimate):
            out.update({key: value.value, **interval_fields({key: value})})
        else:
            out[key] = value
    return out


def flat_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each column of estimates as their values, followed by ``{column}_low`` and ``{column}_high`` (NaN where
    a cell holds no estimate)."""
    columns: dict[str, object] = {}
    for name in table.columns:
        values = list(table[name])
        if not any(isinstance(v, Estimate) for v in values):
            columns[name] = table[name]
            continue
        for key, part in ((name, "value"), *((f"{name}{s}", s[1:]) for s in INTERVAL_SUFFIXES)):
            columns[key] = [getattr(v, part) if isinstance(v, Estimate) else float("nan") for v in values]
    return pd.DataFrame(columns, index=table.index)


def emit(table: pd.DataFrame, out: Path | None, models: list[dict], summary: dict | None = None, *,
         inputs: Sequence[str | Path] = (), columns: pd.DataFrame | None = None, n: int | None = None,
         not_compared: Sequence[str] = ()) -> None:
    """Print the results, or write them with their provenance to ``out`` (JSON, or CSV + summary CSV).

    Figures given as estimates (in ``summary`` or in ``table``'s cells) print with their interval and are
    written as the value with ``{key}_low`` and ``{key}_high`` beside it. ``columns`` holds per-row model
    columns of several models (compare); otherwise every row gets the one model's. ``n`` is the images
    behind the table's accuracies when no summary gives it. ``not_compared`` (compare) are the reasons of the
    models and strategies left out: the JSON lists them, as the console does on stderr.
    """
    summary = summary or {}
    if out is None:
        if summary:
            print_summary(summary)
        print_table(table, summary.get("n", n))
        return
    summary, table = flat_summary(summary), flat_table(table)
    provenance = output_provenance(models, inputs, several=columns is not None)
    if out.suffix.lower() == ".json":
        left_out = {"not_compared": list(not_compared)} if columns is not None else {}
        write_json(out, {"provenance": provenance, **left_out, **summary, "rows": table.to_dict("records")})
        return
    model_cols = columns if columns is not None else pd.DataFrame([model_columns(models[0])] * len(table))
    rows = pd.concat([table.drop(columns=[c for c in model_cols if c in table]).reset_index(drop=True),
                      model_cols.reset_index(drop=True)], axis=1)
    files = {out: rows.to_csv(index=False)}
    if summary:
        flat = {**summary, **model_columns(models[0]), "precision_reason": models[0]["precision_reason"],
                **{f"{k}_version": v for k, v in provenance["versions"].items()}, "created": provenance["created"]}
        files[out.with_name(f"{out.stem}.summary.csv")] = pd.DataFrame(
            {"name": list(flat), "value": list(flat.values())}).to_csv(index=False)
    publish(files)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented UTF-8 JSON (:func:`publish`)."""
    publish({path: json.dumps(payload, indent=2, ensure_ascii=False, default=str)})


def publish(files: dict[Path, str]) -> None:
    """Write a command's output files together and say so, the summary before the table it belongs to
    (``labclip: wrote FILE`` on stderr, the first file last)."""
    write(files)
    for path in [*list(files)[1:], next(iter(files))]:
        print(f"labclip: wrote {path}", file=sys.stderr)


def write(files: dict[Path, str], kept: str = "") -> None:
    """Write output files together (:func:`labclip.atomic.write_texts`); a full or read-only disk is one line.

    Raises:
        LabclipError: naming the file, the reason and that nothing was written (or what ``kept`` says is left).
    """
    try:
        write_texts(files)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise LabclipError(f"{next(iter(files))}: cannot write ({reason}); "
                           f"{kept or 'nothing was written'}") from None
