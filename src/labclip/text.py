"""Text cleaning and tokenisation that reproduce OpenAI's ``clip.tokenize`` token for token."""

from __future__ import annotations

import html
import string
import warnings
from collections.abc import Sequence
from typing import Any

import ftfy
import regex
import torch
from tokenizers.pre_tokenizers import ByteLevel

from .config import CONTEXT_LENGTH

_WHITESPACE = regex.compile(r"\s+")
# openai/CLIP clip/simple_tokenizer.py: SimpleTokenizer.pat, with its IGNORECASE.
_OPENAI_PIECES = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
_BYTES = ByteLevel(add_prefix_space=False, use_regex=False)


class CaptionTruncatedWarning(UserWarning):
    """A caption was longer than the model's context and was cut."""


def clean_text(text: str) -> str:
    """Clean a caption exactly as OpenAI's ``SimpleTokenizer.encode`` does before BPE.

    ftfy repairs mojibake, curly quotes and ligatures, HTML entities are unescaped twice, runs of
    whitespace collapse to one space, and Python's ``str.lower`` lower-cases (so a word-final
    capital sigma becomes ``ς``). Nothing else is normalised: text that an entity turns into a
    decomposed accent stays decomposed, as in OpenAI's.
    """
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return str(_WHITESPACE.sub(" ", text)).strip().lower()


_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def siglip_text(text: str, handling: str) -> str:
    """A caption as a SigLIP-family model saw text in training (``labclip.registry.TEXT_HANDLING``).

    ``"canonical"`` (SigLIP): lower-cased, ASCII punctuation removed, whitespace runs collapsed to one space
    and stripped, as transformers' ``SiglipTokenizer.canonicalize_text`` (from big_vision) does.
    ``"lowercase"`` (SigLIP 2): lower-cased, as SigLIP 2's Gemma tokenizer was trained. Anything else: as given.
    """
    if handling == "canonical":
        return str(_WHITESPACE.sub(" ", text.lower().translate(_ASCII_PUNCTUATION))).strip()
    if handling == "lowercase":
        return text.lower()
    return text


def _openai_ids(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids as ``SimpleTokenizer.encode`` gives them: OpenAI's cleaning and word pattern, then the
    tokenizer's own byte-level BPE, bypassing the tokenizer's normaliser (NFC and lower-casing of
    its own, which differ from OpenAI's for some text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        encoded: list[list[int]] = tokenizer([clean_text(t) for t in texts],
                                             add_special_tokens=add_special_tokens)["input_ids"]
        return encoded
    bpe = backend.model
    special = [tokenizer.convert_tokens_to_ids(token) for token in _SPECIAL]
    rows: list[list[int]] = []
    for text in texts:
        ids = [special[0]] if add_special_tokens else []
        for piece in _OPENAI_PIECES.findall(clean_text(text)):
            if piece in _SPECIAL:
                ids.append(special[_SPECIAL.index(piece)])
            else:
                ids.extend(token.id for token in bpe.tokenize(_BYTES.pre_tokenize_str(piece)[0][0]))
        rows.append(ids + [special[1]] if add_special_tokens else ids)
    return rows


def tokenize(
    tokenizer: Any,
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
    if openai_clean:
        encoded = _openai_ids(tokenizer, texts, add_special_tokens=True)
    else:
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
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


def token_lengths(tokenizer: Any, texts: Sequence[str], openai_clean: bool = True) -> list[int]:
    """BPE tokens per text, without the start and end tokens."""
    if openai_clean:
        return [len(ids) for ids in _openai_ids(tokenizer, texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
