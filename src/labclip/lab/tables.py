"""Tables (pandas DataFrames) built from the core's arrays and typed results, for notebooks and the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import CONTEXT_LENGTH
from ..data import CaptionSet
from ..metrics import confusion_matrix, distractor_counts, match_probabilities, topk_indices
from ..stats import proportion
from ..text import token_lengths


def captions_frame(captions: CaptionSet) -> pd.DataFrame:
    """A caption set as a DataFrame: ``image``, ``path``, ``name``, ``id`` if given (``image_id`` where ``id``
    is Indonesian), one column per language, then the file's other columns."""
    ids = {captions.id_name: captions.ids} if captions.ids is not None else {}
    frame = pd.DataFrame({"image": captions.images, "path": captions.paths, "name": captions.names, **ids,
                          **captions.captions, **captions.extra})
    frame.attrs.update(languages=captions.languages, source=captions.source)
    return frame


def topk_table(
    sim: np.ndarray,
    captions: Sequence[str],
    k: int = 3,
    logit_scale: float = 100.0,
    images: Sequence[str] | None = None,
    logit_bias: float | None = None,
) -> pd.DataFrame:
    """The ``k`` best captions of every image, with cosine and probability.

    The probability is the model's (:func:`labclip.metrics.match_probabilities`): the softmax over all
    captions at ``logit_scale``, or with a ``logit_bias`` (SigLIP) the pair's own sigmoid. ``correct``
    marks caption ``i`` for image ``i`` when the set is paired.

    Returns:
        Columns ``image, rank, caption, cosine, probability, correct``; ``k`` rows per image.
    """
    sim = np.asarray(sim)
    order = topk_indices(sim, k)
    probability = match_probabilities(sim, logit_scale, logit_bias, columns=order)
    names = list(images) if images is not None else [str(i) for i in range(len(sim))]
    paired = sim.shape[0] == sim.shape[1]
    rows = [
        {"image": names[i], "rank": r + 1, "caption": captions[j], "cosine": float(sim[i, j]),
         "probability": float(probability[i, r]), "correct": bool(paired and i == j)}
        for i, columns in enumerate(order)
        for r, j in enumerate(columns)
    ]
    return pd.DataFrame(rows, columns=["image", "rank", "caption", "cosine", "probability", "correct"])


def frequent_distractors(sim: np.ndarray, captions: Sequence[str], k: int = 3) -> pd.DataFrame:
    """How many images' top-``k`` lists each wrong caption enters, most frequent first.

    Returns:
        Columns ``caption, appearances``; only captions that appear at least once.
    """
    table = pd.DataFrame({"caption": list(captions), "appearances": distractor_counts(sim, k)})
    table = table[table.appearances > 0]
    return table.sort_values("appearances", ascending=False, kind="stable").reset_index(drop=True)


def top_labels(probs: np.ndarray, labels: Sequence[str], images: Sequence[str], k: int = 5) -> pd.DataFrame:
    """The ``k`` most probable labels per image: columns ``image, rank, label, probability``."""
    rows = [{"image": str(images[i]), "rank": r + 1, "label": labels[j], "probability": float(probs[i, j])}
            for i, order in enumerate(topk_indices(probs, k)) for r, j in enumerate(order)]
    return pd.DataFrame(rows, columns=["image", "rank", "label", "probability"])


def confusion(probs: np.ndarray, truth: Sequence[int], labels: Sequence[str]) -> pd.DataFrame:
    """Counts of true class (rows) against predicted class (columns)."""
    return pd.DataFrame(confusion_matrix(probs, truth, len(labels)), index=list(labels), columns=list(labels))


def per_class_accuracy(probs: np.ndarray, truth: Sequence[int], labels: Sequence[str]) -> pd.DataFrame:
    """Images and top-1 accuracy per class: an :class:`~labclip.stats.Estimate` with its 95% Wilson interval
    (``NaN`` for a class without images)."""
    pred = np.asarray(probs).argmax(axis=1)
    true = np.asarray(truth)
    rows = [{"class": labels[c], "images": int((true == c).sum()),
             "accuracy": proportion(pred[true == c] == c) if (true == c).any() else float("nan")}
            for c in range(len(labels))]
    return pd.DataFrame(rows)


def token_stats(tokenizer, captions: Mapping[str, Sequence[str]], context_length: int = CONTEXT_LENGTH,
                openai_clean: bool = True) -> pd.DataFrame:
    """Per language: tokens per caption, tokens per word, UTF-8 bytes per token, captions cut at the context.

    Returns:
        A DataFrame, one row per language.
    """
    rows = []
    for lang, texts in captions.items():
        lengths = token_lengths(tokenizer, texts, openai_clean)
        words = sum(len(t.split()) for t in texts)
        size = sum(len(t.encode("utf-8")) for t in texts)
        rows.append({
            "language": lang, "captions": len(texts),
            "tokens per caption": sum(lengths) / len(lengths), "max tokens": max(lengths),
            "tokens per word": sum(lengths) / max(words, 1), "bytes per token": size / max(sum(lengths), 1),
            "truncated": sum(n + 2 > context_length for n in lengths),
        })
    return pd.DataFrame(rows)
