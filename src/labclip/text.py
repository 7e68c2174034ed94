"""Text cleaning and tokenisation that reproduce OpenAI's ``clip.tokenize``."""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence

import ftfy
import regex
import torch

from .config import CONTEXT_LENGTH

_WHITESPACE = regex.compile(r"\s+")


class CaptionTruncatedWarning(UserWarning):
    """A caption was longer than the model's context and was cut."""


def clean_text(text: str) -> str:
    """Clean a caption exactly as OpenAI's ``SimpleTokenizer`` does before BPE (lower-casing aside).

    ftfy repairs mojibake, curly quotes and ligatures, HTML entities are unescaped twice,
    and runs of whitespace collapse to one space.
    """
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def tokenize(
    tokenizer,
    texts: Sequence[str],
    context_length: int = CONTEXT_LENGTH,
    openai_clean: bool = True,
) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` padded to the longest one, truncating past ``context_length``.

    A truncated caption keeps its end-of-text token (as ``clip.tokenize(truncate=True)`` does)
    and raises a :class:`CaptionTruncatedWarning` naming it.

    Returns:
        ``input_ids`` and ``attention_mask``, both ``(len(texts), longest)`` int64 tensors.
    """
    cleaned = [clean_text(t) if openai_clean else t for t in texts]
    encoded = tokenizer(cleaned, add_special_tokens=True, truncation=False)["input_ids"]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    rows = []
    for text, ids in zip(texts, encoded):
        if len(ids) > context_length:
            short = text if len(text) <= 60 else text[:57] + "..."
            warnings.warn(
                f"caption {short!r} has {len(ids)} tokens; cut to the model's {context_length}",
                CaptionTruncatedWarning,
                stacklevel=2,
            )
            ids = ids[: context_length - 1] + [eos]
        rows.append(ids)
    longest = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def token_lengths(tokenizer, texts: Sequence[str], openai_clean: bool = True) -> list[int]:
    """BPE tokens per text, without the start and end tokens."""
    cleaned = [clean_text(t) if openai_clean else t for t in texts]
    return [len(ids) for ids in tokenizer(cleaned, add_special_tokens=False)["input_ids"]]


def token_stats(tokenizer, captions: dict[str, Sequence[str]], context_length: int = CONTEXT_LENGTH,
                openai_clean: bool = True):
    """Per language: tokens per caption, tokens per word, UTF-8 bytes per token, captions cut at the context.

    Returns:
        A DataFrame, one row per language.
    """
    import pandas as pd

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
