"""``labclip search``: a folder's images ranked by similarity to a text query."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ...bulk import encode_files
from ...config import shown_names
from ...embed import add_decode_option
from ...index import is_embedding_folder
from ...registry import DEFAULT_MODEL
from ..inputs import check_out, folder_images
from ..loading import identity, load
from ..options import Subparsers, add_command, query, result_options
from ..output import emit
from ..shardsearch import DefaultModel, search_shards


def add_parser(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "search", "find images in a folder by text", "Rank a folder's images by "
                    "similarity to a text query.")
    p.add_argument("folder", type=Path, help="folder of images (searched recursively), or of embedding shards (EMB)")
    p.add_argument("query", type=query, help="the text to look for, e.g. 'a red car'")
    result_options(p, "search", 5, "images listed", summary=True)
    add_decode_option(p)
    p.set_defaults(model=DefaultModel(DEFAULT_MODEL))  # EMB: the shards' model unless --model is given
    p.add_argument("--exact", action="store_true", help="EMB: search every row (default: the index, where labclip "
                   "index built a current one)")


def run(args: argparse.Namespace) -> None:
    check_out(args.out)
    if is_embedding_folder(args.folder):
        table, record, summary, shards = search_shards(args, load)
        return emit(table, args.out, [record], summary if args.out else None, inputs=shards)
    images = folder_images(args.folder)
    model = load(args)
    scores = encode_files(model, images, args.decode) @ model.encode_texts([args.query])[0]
    order = np.argsort(-scores, kind="stable")[: args.top_k]
    names = shown_names(images)
    table = pd.DataFrame({"rank": range(1, len(order) + 1), "image": [names[i] for i in order],
                          "cosine": scores[order].astype(float)})
    emit(table, args.out, [identity(model)], {"query": args.query, "decode": args.decode} if args.out else None, inputs=images)
