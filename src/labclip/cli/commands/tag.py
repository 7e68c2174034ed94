"""``labclip tag``: the top-k labels of every image of a folder, in a CSV that a rerun resumes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ...bulk import encode_files
from ...embed import add_decode_option
from ...errors import LabclipError
from ..inputs import check_out, count, folder_images, labels
from ..loading import identity, load
from ..options import Subparsers, add_command, label_options, model_options, top_k
from ..output import write
from ..watch import TAG_KEY, add_arguments, tag_key
from ..watch import run as watch

if TYPE_CHECKING:
    from ...model import ClipModel

# Images tagged between two atomic rewrites of the tags CSV: an interrupted run keeps every finished chunk.
TAG_CHUNK = 256

def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "tag", "tag every image of a folder (resumable)", "Write the top-k labels of every "
                    "image in a folder to a CSV. A rerun with the same model, labels, templates and top-k tags only "
                    "new files; with other options it tags every file again.")
    p.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    label_options(p)
    top_k(p, 3, "labels kept per image")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv",
                   help="the tags CSV, read on a rerun and rewritten atomically (required, no default)")
    model_options(p, "tag")
    add_decode_option(p)
    add_arguments(p)


def read_tags(out: Path) -> pd.DataFrame | None:
    """The existing tags file, or ``None`` when there is none."""
    if not out.is_file():
        return None
    try:
        return pd.read_csv(out, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabclipError(f"{out}: existing tags file is unreadable ({type(err).__name__}); "
                           "move it away to start again") from None


def key_changes(done: pd.DataFrame, key: dict[str, str]) -> list[str]:
    """How the options of an existing tags file differ from this run's (empty when they are the same)."""
    if any(c not in done.columns for c in TAG_KEY):
        return ["made by an older labclip without the model and options on each row"]
    changes = []
    for column, value in key.items():
        before = sorted(set(done[column]))
        if before != [value]:
            changes.append(f"{column.replace('_', ' ')} {', '.join(before) or '(none)'} → {value}")
    return changes


def _reusable(done: pd.DataFrame | None, key: dict[str, str], args: argparse.Namespace,
              images: int) -> pd.DataFrame | None:
    """The rows of the existing tags file this run keeps: none when it was made with other options."""
    if done is not None and len(done):
        changes = key_changes(done, key)
        if changes:
            print(f"labclip: {args.out} was made with other options ({'; '.join(changes)}); tagging all "
                  f"{count(images, 'image')} again and replacing its rows (use another --out to keep both)",
                  file=sys.stderr)
            return None
    return done


def _tag(model: ClipModel, args: argparse.Namespace, todo: list[tuple[Path, str]], done: pd.DataFrame | None,
         key: dict[str, str], vocabulary: list[str], templates: list[str]) -> pd.DataFrame:
    """Tag the images of ``todo`` (path, name), rewriting the tags file after each chunk of ``TAG_CHUNK``."""
    from ...lab.tables import top_labels
    from ...zeroshot import class_embeddings, probabilities

    classes = class_embeddings(model, vocabulary, templates)
    table = done if done is not None else pd.DataFrame()
    for start in range(0, max(len(todo), 1), TAG_CHUNK):
        chunk = todo[start:start + TAG_CHUNK]
        probs = probabilities(model, encode_files(model, [path for path, _ in chunk], args.decode), classes)
        new = top_labels(probs, vocabulary, [name for _, name in chunk], args.top_k).assign(
            **key, precision_requested=model.precision.requested, precision_default=model.precision.default)
        table = pd.concat([table, new], ignore_index=True) if len(table) else new
        write({args.out: table.to_csv(index=False)},
              kept=f"{args.out} keeps the images tagged before" if args.out.exists() else "")
    return table


def run(args: argparse.Namespace) -> None:
    if args.watch or args.flag is not None or args.threshold is not None:
        return watch(args)
    from ...zeroshot import load_templates

    check_out(args.out, (".csv",))
    vocabulary, templates = labels(args), load_templates(args.templates, args.lang)
    images = folder_images(args.folder)
    done = read_tags(args.out)
    model = load(args)
    key = tag_key(args, identity(model), vocabulary)
    names = [str(p.relative_to(args.folder)) for p in images]
    before = set(done["image"]) if done is not None and "image" in done.columns else set()
    done = _reusable(done, key, args, len(images))
    finished = set(done["image"]) if done is not None and len(done) else set()
    todo = [i for i, name in enumerate(names) if name not in finished]
    if finished:
        print(f"labclip: {len(images) - len(todo)} of {count(len(images), 'image')} already tagged in {args.out}",
              file=sys.stderr)
    if todo or done is None:
        done = _tag(model, args, [(images[i], names[i]) for i in todo], done, key, vocabulary, templates)
    again = sum(names[i] in before for i in todo)
    did = [f"re-tagged {count(again, 'image')}"] if again else []
    if len(todo) - again or not again:
        did.insert(0, f"tagged {count(len(todo) - again, 'new image')}")
    print(f"labclip: {' and '.join(did)}; {args.out} lists {count(done['image'].nunique(), 'image')}",
          file=sys.stderr)
