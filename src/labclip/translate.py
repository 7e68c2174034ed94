"""Translate-then-CLIP: captions translated to English with a MarianMT model, translations cached."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from filelock import FileLock

from .atomic import write_text
from .config import cache_dir
from .errors import LabclipError

DEFAULT_TRANSLATOR = "Helsinki-NLP/opus-mt-{lang}-en"
# MarianTokenizer's advice when sacremoses is missing. Its Moses punctuation normaliser is only kept as
# ``MarianTokenizer.normalize``, which transformers never calls while tokenising, so the advice is noise.
SACREMOSES_ADVICE = r"Recommended: pip install sacremoses"


def translator_name(template: str, language: str) -> str:
    """``Helsinki-NLP/opus-mt-{lang}-en`` with the language filled in (a fixed name passes through)."""
    return template.format(lang=language)


class Translator:
    """A seq2seq translation model (MarianMT by default) with a persistent cache of its translations.

    Each distinct text is sent to the model once; ``model_calls`` counts the texts it translated.
    ``revision`` is the commit of the hub snapshot the weights came from (``None`` for a local
    folder); the translation cache is keyed by it.
    """

    def __init__(self, name: str, device: str = "cpu", cache: bool | str | os.PathLike = True,
                 max_new_tokens: int = 128):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from .hub import cached_revision, from_hub, load_failure
        from .spec import fingerprint_sources

        self.name, self.device, self.max_new_tokens = name, device, max_new_tokens
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=SACREMOSES_ADVICE, category=UserWarning)
                self.tokenizer, self.model = from_hub(name, lambda **kw: (
                    AutoTokenizer.from_pretrained(name, **kw), AutoModelForSeq2SeqLM.from_pretrained(name, **kw)))
        except Exception as err:  # noqa: BLE001 - one user-facing line
            raise LabclipError(load_failure(name, name, err, "translation model", demo=False)) from err
        self.model = self.model.eval().to(device)
        self.model_calls = 0
        self.revision: str | None = getattr(self.model.config, "_commit_hash", None) or cached_revision(name)
        key = fingerprint_sources([name], str(self.revision))
        root = cache_dir() if cache is True else Path(cache) if cache else None
        self.cache_file = root / "translations" / f"{key}.json" if root else None

    def _load_cache(self) -> dict[str, str]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(data, dict) else {}

    def _store(self, new: dict[str, str]) -> None:
        if self.cache_file is None or not new:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.cache_file) + ".lock"):
            merged = {**self._load_cache(), **new}
            write_text(self.cache_file, json.dumps(merged, ensure_ascii=False, indent=0))

    def translate(self, texts: Sequence[str], batch_size: int = 16) -> list[str]:
        """Translations of ``texts``, in order."""
        known = self._load_cache()
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        new: dict[str, str] = {}
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                batch = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True).to(self.device)
                limit = min(self.max_new_tokens, getattr(self.model.config, "max_position_embeddings", 1024) - 1)
                out = self.model.generate(**batch, max_new_tokens=limit, num_beams=1, do_sample=False)
                new.update(zip(chunk, self.tokenizer.batch_decode(out, skip_special_tokens=True)))
                self.model_calls += len(chunk)
        self._store(new)
        known.update(new)
        return [known[t] for t in texts]

