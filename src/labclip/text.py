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
