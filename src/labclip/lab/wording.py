"""How reports name things and describe a model: languages, models, revisions, paths, directions, the
text and image processing, and the untrained-model and fallback warnings. User text goes through :func:`md`."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import shown_path
from ..images import NaflexPreprocess, SquarePreprocess
from ..labels import DIRECTIONS as DIRECTION_NAMES
from ..model import ClipModel
from ..registry import TEXT_HANDLING
from ..spec import shown_model, shown_revision

DIRECTIONS = {d: DIRECTION_NAMES[d] for d in ("t2i", "i2t")}  # labels.DIRECTIONS in the reports' order, t2i first


LANGUAGE_NAMES = {"en": "English", "ru": "Russian", "de": "German", "fr": "French", "es": "Spanish",
                  "it": "Italian", "pl": "Polish", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
                  "ja": "Japanese", "ko": "Korean"}


def md(text: object) -> str:
    """User text made inert in Markdown: one line, every Markdown and HTML special character backslash-escaped.

    Rendered by any CommonMark renderer, the result shows the text as written: no tags, links, images,
    entities or emphasis (``<`` becomes ``\\<``, which renders as ``&lt;``).
    """
    return re.sub(r"([\\`*_\[\]()!#|~$:{}<>&])", r"\\\1", " ".join(str(text).split()))


def language_name(code: str) -> str:
    """``"ru"`` → ``"Russian"``; an unknown code is returned as given."""
    return LANGUAGE_NAMES.get(code, code)


def public_path(path: str | Path | None) -> str:
    """A path as reports may show it: relative to the project when inside it, else only its name."""
    return shown_path(path) if path else "—"


def model_name(name: str) -> str:
    """A model name as reports show it (:func:`labclip.spec.shown_model`, pairs joined by " + ")."""
    return shown_model(name, " + ")


def public_revision(revision: str | None) -> str:
    """A model revision as reports show it (:func:`labclip.spec.shown_revision`; "—" when unknown)."""
    return shown_revision(revision) or "—"


def script(texts: Iterable[str]) -> str | None:
    """The writing system of most letters in ``texts`` (``"Latin"``, ``"Cyrillic"``, ``"Han"``…), from Unicode names."""
    counts: Counter[str] = Counter()
    for text in texts:
        for char in str(text):
            if char.isalpha():
                name = unicodedata.name(char, "")
                if name:
                    counts["Han" if name.startswith("CJK") else name.split()[0].title()] += 1
    return counts.most_common(1)[0][0] if counts else None


def _text_model(model: ClipModel) -> ClipModel:
    """The model whose text tower encodes the captions (an adapter's source tower, else the model)."""
    return model.text_model


def is_openai_clip_tokenizer(model: ClipModel) -> bool:
    """Whether captions go through OpenAI CLIP's text cleaning and byte-level BPE."""
    return not _text_model(model).info.paired and model.openai_text_cleaning


def text_processing(model: ClipModel) -> str:
    """How this model turns a caption into tokens, from the model's own settings (and, for a model
    with a text adapter, the tower that encodes captions and the adapter after it)."""
    size = len(model.tokenizer) if hasattr(model.tokenizer, "__len__") else None
    vocab = f", a vocabulary of {size:,} tokens" if size else ""
    tower = _text_model(model)
    if is_openai_clip_tokenizer(model):
        text = (f"OpenAI CLIP's text cleaning (ftfy, HTML unescaping, whitespace), lower-casing and CLIP's byte-level "
                f"BPE{vocab}, with a {model.context_length}-token context; each batch is padded to its longest caption.")
    else:
        encoder = (f"a separate multilingual text encoder ({type(tower.text.module).__name__}) mapped into the image "
                   "encoder's space" if tower.info.paired else f"the text encoder of the {tower.family} model")
        text = (f"The model's own tokenizer ({type(model.tokenizer).__name__}{vocab}) with its own normalisation, "
                f"{model.context_length}-token context, and {encoder}.")
        handling = getattr(tower.text, "handling", None)
        if handling in TEXT_HANDLING:
            text += (f" As the model was trained, captions are first {TEXT_HANDLING[handling]} and always padded "
                     f"to {model.context_length} tokens.")
    return text + adapter_text(model)


def adapter_text(model: ClipModel) -> str:
    """A sentence on the model's text adapter (the tower before it, what it was fitted on), or ``""``."""
    card = model.adapter_card
    if card is None:
        return ""
    adapted: Any = model  # an AdaptedModel: its base model and whether captions have their own tower
    base = md(model_name(adapted.base.name))
    fitted = ", ".join(part for part in (
        f"{card['pairs']} caption pairs" if card.get("pairs") else "",
        f"{md(card['source_lang'])}→{md(card['target_lang'])}" if card.get("source_lang") and card.get("target_lang")
        else "",
        f"alpha {card['alpha']:g}" if isinstance(card.get("alpha"), (int, float)) else "") if part)
    tower = (f"Captions are encoded by the text tower of {md(card['text_tower']['model'])} (revision "
             f"{md(card['text_tower']['revision'] or '—')}), not by {base}'s own; its embeddings"
             if adapted.separate_text_tower else "The text embeddings")
    return (f" {tower} then pass through the linear text adapter {md(card['label'])} (weights sha256 "
            f"{card['sha256'][:12]}…{'; fitted on ' + fitted if fitted else ''}) into {base}'s embedding space; "
            f"images go through {base}'s image encoder unchanged.")


def banner_text(model: ClipModel) -> str | None:
    """The warning every display of an untrained model's numbers carries, or ``None``."""
    if not model.untrained:
        return None
    which = ("labclip's untrained demo model" if model.is_demo
             else f"the untrained test model '{model_name(model.name)}'")
    return (f"These numbers come from {which}, whose weights are random: they say nothing about CLIP. "
            "Run with real weights (e.g. openai/clip-vit-base-patch32 where the Hugging Face hub is reachable) "
            "for meaningful results.")


def fallback_note(requested: str, reason: str) -> str:
    """Why the demo model stands in, as plain text naming the requested model once (the stored reason
    starts with "could not load model '<name>': ", which the sentence already says)."""
    why = re.sub(r"^could not load model '[^']*'(?: \([^)]*\))?: ", "", " ".join(reason.split()))
    return f"The requested model {model_name(requested)} could not be loaded: {why.rstrip('.')}."


def image_processing(pre) -> str:
    """How the model's images are resized, from its preprocessing settings."""
    if isinstance(pre, NaflexPreprocess):
        return (f"SigLIP 2 NaFlex: each image resized, aspect ratio kept, to at most {pre.max_num_patches} patches "
                f"of {pre.patch_size} px")
    if isinstance(pre, SquarePreprocess):
        kind = {2: "bilinear", 3: "bicubic"}.get(pre.resample, f"PIL filter {pre.resample}")
        return f"As the model's SigLIP image processor does it: {kind} resize to {pre.crop}×{pre.crop} (aspect not kept)"
    return (f"As OpenAI's clip package does it: bicubic resize of the shorter side to {pre.resize} px, centre crop "
            f"to {pre.crop}×{pre.crop}")
