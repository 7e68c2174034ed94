"""Every model family and model labclip knows, as data (like open_clip's ``pretrained.py``).

A **family** says how a checkpoint is laid out and loaded (see ``labclip.encoders.LOADERS``);
a **model** entry says what a hub id is: its family, the image encoder it pairs with, its text
context, languages, licence, the weight files of its main branch, and whether labclip compares
it by default. Aliases live here too, so ``ViT-B/32`` resolves in one place.

This module imports nothing heavy: the CLI, reports and README tables can read it cheaply.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_MULTILINGUAL = "google/siglip2-base-patch16-224"  # the default Russian-capable model (SigLIP 2)
DEMO_MODEL = "demo"

CLIP = "clip"
ALTCLIP = "altclip"
SENTENCE_TRANSFORMERS = "sentence-transformers"
MCLIP = "m-clip"
SIGLIP = "siglip"


@dataclass(frozen=True)
class Family:
    """How a kind of checkpoint is built.

    Attributes:
        name: the key of the family's loader in ``labclip.encoders.LOADERS``.
        multilingual: the family's text encoders are trained for many languages (a model's own
            ``languages`` decide when the registry lists them, e.g. an English-only SigLIP).
        paired: the repository holds only a text tower; images go through ``ModelInfo.image_tower``.
        openai_text_cleaning: captions are cleaned like OpenAI's ``clip.tokenize`` (ftfy, HTML, spaces).
    """

    name: str
    multilingual: bool
    paired: bool
    openai_text_cleaning: bool


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(CLIP, multilingual=False, paired=False, openai_text_cleaning=True),
    Family(ALTCLIP, multilingual=True, paired=False, openai_text_cleaning=False),
    Family(SENTENCE_TRANSFORMERS, multilingual=True, paired=True, openai_text_cleaning=False),
    Family(MCLIP, multilingual=True, paired=True, openai_text_cleaning=False),
    Family(SIGLIP, multilingual=True, paired=False, openai_text_cleaning=False),
)}

# The 50+ languages of sentence-transformers' multilingual students (model card, 2021).
ST_LANGUAGES = ("ar", "bg", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "gl", "gu", "he",
                "hi", "hr", "hu", "hy", "id", "it", "ja", "ka", "ko", "ku", "lt", "lv", "mk", "mn", "mr", "ms",
                "my", "nb", "nl", "pl", "pt", "ro", "ru", "sk", "sl", "sq", "sr", "sv", "th", "tr", "uk", "ur",
                "vi", "zh")
# Languages named on the model cards of AltCLIP-m9 / -m18, and a conservative list for multilingual SigLIP (WebLI).
ALTCLIP_M9 = ("en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it")
ALTCLIP_M18 = ("en", "zh", "ja", "th", "ko", "hi", "uk", "ar", "tr", "vi", "pl", "nl", "pt", "it", "es", "de", "fr",
               "ru")
# How SigLIP text is normalised before tokenising. SigLIP: transformers' SiglipTokenizer.canonicalize_text (from
# big_vision's prompt_engineering.py): lower-cased, ASCII punctuation removed, whitespace runs collapsed, stripped.
# SigLIP 2 (Gemma tokenizer): lower-cased (transformers' Siglip2Tokenizer adds a Lowercase normaliser, "SigLIP2
# training default"; the model cards: "the model was trained with lowercased text"). Both pad to max_length 64.
CANONICAL = "canonical"
LOWERCASE = "lowercase"
TEXT_HANDLING = {CANONICAL: "lower-cased, stripped of punctuation and repeated spaces (SigLIP's canonicalize_text)",
                 LOWERCASE: "lower-cased (SigLIP 2)"}
WEBLI = ("en", "ru", "de", "fr", "es", "it", "pt", "nl", "pl", "uk", "tr", "ar", "zh", "ja", "ko")


@dataclass(frozen=True)
class ModelInfo:
    """One model: what it is and how labclip loads it.

    Attributes:
        id: hub id (or, for a local folder, its path).
        family: a key of :data:`FAMILIES`.
        image_tower: for paired families, the CLIP model whose image encoder the text tower was
            distilled into; ``None``: the model's own.
        context_length: longest caption in tokens, special tokens included.
        languages: ISO 639-1 codes of the caption languages it was trained for.
        licence: SPDX id or name from the model card (``None``: not recorded here).
        weights: weight files on the repository's main branch, preferred first.
        default: compared by default in the languages report (when it supports every caption language).
        aliases: other names that resolve to ``id``.
        download_gb: what labclip downloads for it (the weight file it reads plus configs and tokenizer),
            read off the repository's "Files and versions" page; ``None`` where not checked.
        text_handling: how captions are normalised before tokenising, as the model was trained
            (:data:`TEXT_HANDLING`); ``None``: the family's own (OpenAI's cleaning or the tokenizer's).
    """

    id: str
    family: str
    image_tower: str | None = None
    context_length: int = 77
    languages: tuple[str, ...] = ("en",)
    licence: str | None = None
    weights: tuple[str, ...] = ("model.safetensors",)
    default: bool = False
    aliases: tuple[str, ...] = ()
    download_gb: float | None = None
    text_handling: str | None = None

    @property
    def multilingual(self) -> bool:
        """Trained for several caption languages: from ``languages`` when known, else the family's."""
        return len(self.languages) > 1 if self.languages else FAMILIES[self.family].multilingual

    @property
    def paired(self) -> bool:
        return FAMILIES[self.family].paired

    @property
    def image_source(self) -> str:
        """Where the image encoder is loaded from."""
        return self.image_tower or self.id

    def supports(self, language: str) -> bool:
        """Whether captions in ``language`` are among those the model was trained for."""
        return language in self.languages


MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("openai/clip-vit-base-patch32", CLIP, licence="MIT", default=True, aliases=("ViT-B/32",),
              weights=("model.safetensors", "pytorch_model.bin"), download_gb=0.61),
    ModelInfo("openai/clip-vit-base-patch16", CLIP, licence="MIT", aliases=("ViT-B/16",),
              weights=("model.safetensors", "pytorch_model.bin")),
    ModelInfo("openai/clip-vit-large-patch14", CLIP, licence="MIT", aliases=("ViT-L/14",),
              weights=("model.safetensors", "pytorch_model.bin")),
    ModelInfo("openai/clip-vit-large-patch14-336", CLIP, licence="MIT", aliases=("ViT-L/14@336px",),
              weights=("model.safetensors", "pytorch_model.bin")),
    ModelInfo("sentence-transformers/clip-ViT-B-32-multilingual-v1", SENTENCE_TRANSFORMERS,
              image_tower=DEFAULT_MODEL, context_length=128, languages=ST_LANGUAGES, licence="Apache-2.0",
              weights=("model.safetensors", "pytorch_model.bin"), default=True, download_gb=0.54),
    ModelInfo("google/siglip2-base-patch16-224", SIGLIP, context_length=64, languages=WEBLI, licence="Apache-2.0",
              default=True, download_gb=1.54, text_handling=LOWERCASE),
    ModelInfo("google/siglip2-base-patch32-256", SIGLIP, context_length=64, languages=WEBLI, licence="Apache-2.0",
              download_gb=1.54, text_handling=LOWERCASE),
    ModelInfo("google/siglip2-base-patch16-naflex", SIGLIP, context_length=64, languages=WEBLI,
              licence="Apache-2.0", download_gb=1.54, text_handling=LOWERCASE),
    ModelInfo("google/siglip-base-patch16-256-multilingual", SIGLIP, context_length=64, languages=WEBLI,
              licence="Apache-2.0", download_gb=1.50, text_handling=CANONICAL),
    ModelInfo("M-CLIP/XLM-Roberta-Large-Vit-B-32", MCLIP, image_tower=DEFAULT_MODEL, context_length=512,
              languages=ST_LANGUAGES, weights=("pytorch_model.bin", "tf_model.h5"), download_gb=2.24),
    ModelInfo("BAAI/AltCLIP-m9", ALTCLIP, context_length=77, languages=ALTCLIP_M9,
              licence="creativeml-openrail-m", weights=("pytorch_model.bin",), download_gb=3.46),
    ModelInfo("BAAI/AltCLIP-m18", ALTCLIP, context_length=77, languages=ALTCLIP_M18,
              weights=("pytorch_model.bin",), download_gb=4.78),
    ModelInfo("BAAI/AltCLIP", ALTCLIP, context_length=77, languages=("en", "zh"), licence="creativeml-openrail-m",
              weights=("model.safetensors", "pytorch_model.bin"), download_gb=3.46),
)

# Download size (GB) of the translators the languages report uses by default, as for ``ModelInfo.download_gb``.
TRANSLATORS: dict[str, float] = {"Helsinki-NLP/opus-mt-ru-en": 0.31}

# Repositories a model needs besides its own (M-CLIP's config names ``modelBase: xlm-roberta-large``).
SUPPORT_REPOS: dict[str, str] = {"xlm-roberta-large": "XLM-R configuration of M-CLIP/XLM-Roberta-Large-Vit-B-32"}



@dataclass(frozen=True)
class Published:
    """One published figure: shown only in a box marked as not measured here, with its source.

    Attributes:
        model: hub id where the registry knows the model, else the name its source gives it.
        benchmark: the data set (``XTD10``, ``Crossmodal-3600``, ``ImageNet``).
        direction: ``t2i`` (text→image), ``i2t`` or ``classification``.
        language: ISO 639-1 code of the captions or class names.
        metric: ``R@1``, ``mean R@1/5/10``, ``top-1``.
        value: in percent.
        source: where it is published, so a reader can find it.
        definition: what was counted (which captions, which method); a measured row is comparable only
            where its definition is the same.
    """

    model: str
    benchmark: str
    direction: str
    language: str
    metric: str
    value: float
    source: str
    definition: str


# CLIP_benchmark's definition of retrieval recall: the first caption of each image
# (clip_benchmark/datasets/crossmodal3600.py keeps captions[0]); XTD10 has one caption per image.
FIRST_CAPTION = "first caption of each image (CLIP_benchmark's definition, as published)"
OPEN_CLIP_MULTILINGUAL = ("open_clip, docs/openclip_multilingual_retrieval_results.csv, commit 89fb801 "
                          "(https://github.com/mlfoundations/open_clip)")
IMMICH_MULTILINGUAL = "immich's multilingual table (Crossmodal-3600, mean of text→image R@1/5/10)"
_XTD10_T2I_R1 = {  # open_clip's table, dataset multilingual_mscoco_captions (XTD10), image_retrieval_recall@1
    "openai/clip-vit-base-patch32": {"de": 13.1, "en": 54.0, "es": 17.2, "fr": 20.6, "it": 9.9, "ja": 2.6,
                                     "ko": 0.3, "pl": 2.2, "ru": 0.4, "tr": 1.2, "zh": 1.1},
    "openai/clip-vit-base-patch16": {"de": 15.7, "en": 55.8, "es": 21.4, "fr": 24.9, "it": 14.6, "ja": 3.3,
                                     "ko": 0.2, "pl": 3.0, "ru": 1.2, "tr": 2.9, "zh": 0.5},
    "openai/clip-vit-large-patch14": {"de": 19.8, "en": 59.3, "es": 26.2, "fr": 28.8, "it": 19.8, "ja": 4.0,
                                      "ko": 0.3, "pl": 4.0, "ru": 1.3, "tr": 2.6, "zh": 0.7},
    "openai/clip-vit-large-patch14-336": {"de": 20.5, "en": 58.3, "es": 26.6, "fr": 30.6, "it": 20.2, "ja": 3.6,
                                          "ko": 0.3, "pl": 3.6, "ru": 1.3, "tr": 3.0, "zh": 0.6},
    "xlm-roberta-base ViT-B/32 (LAION-5B)": {"ru": 50.4},
}
PUBLISHED: tuple[Published, ...] = (
    *(Published(model, "XTD10", "t2i", lang, "R@1", value, OPEN_CLIP_MULTILINGUAL, FIRST_CAPTION)
      for model, figures in _XTD10_T2I_R1.items() for lang, value in figures.items()),
    *(Published(model, "Crossmodal-3600", "t2i", lang, "mean R@1/5/10", value, IMMICH_MULTILINGUAL,
                "as immich's table counts it (which captions it counts is not recorded here)")
      for model, lang, value in (("google/siglip2-base-patch16-224", "ru", 84.29),
                                 ("google/siglip2-base-patch16-224", "en", 75.19),
                                 ("google/siglip-base-patch16-256-multilingual", "ru", 82.86),
                                 ("google/siglip-base-patch16-256-multilingual", "en", 69.38))),
    Published("openai/clip-vit-base-patch32", "ImageNet", "classification", "en", "top-1", 75.6,
              "OpenAI CLIP README (github.com/openai/CLIP), linear-probe example and results",
              "linear probe, all training data"),
    Published("OpenAI CLIP RN50", "ImageNet", "classification", "en", "top-1", 60.3,
              "Zhang et al. 2022, Tip-Adapter (ECCV), Table 1", "zero-shot"),
    Published("OpenAI CLIP RN50", "ImageNet", "classification", "en", "top-1", 62.0,
              "Zhang et al. 2022, Tip-Adapter (ECCV), Table 1", "Tip-Adapter, 16 shots"),
)


def published(**match: str) -> list[Published]:
    """The published figures whose fields equal ``match`` (e.g. ``benchmark="XTD10", direction="t2i"``)."""
    return [p for p in PUBLISHED if all(getattr(p, k) == v for k, v in match.items())]


BY_ID: dict[str, ModelInfo] = {m.id: m for m in MODELS}
ALIASES: dict[str, str] = {alias: m.id for m in MODELS for alias in m.aliases}


def resolve_model_name(name: str) -> str:
    """Map an alias such as ``ViT-B/32`` to its hub id; other names pass through."""
    name = str(name)
    return ALIASES.get(name, name)


def available_models() -> list[str]:
    """Hub ids of every model in the registry, then the aliases."""
    return [m.id for m in MODELS] + list(ALIASES)


def default_models(languages: Sequence[str] | None = None) -> list[str]:
    """The models the languages report compares by default: the main CLIP model (raw captions and
    translate-then-CLIP), then the other default models that support every one of ``languages``."""
    return [DEFAULT_MODEL, *(m.id for m in MODELS if m.default and m.id != DEFAULT_MODEL
                             and all(m.supports(lang) for lang in languages or ()))]


def closest(name: str) -> str | None:
    """The known id or alias nearest to a mistyped name, or ``None``."""
    found = difflib.get_close_matches(name, available_models(), n=1, cutoff=0.6)
    return found[0] if found else None


def detect_family(root: Path) -> str | None:
    """The family of a local model folder from its files; ``None`` when unknown."""
    if (root / "modules.json").is_file():
        return SENTENCE_TRANSFORMERS
    config = root / "config.json"
    if not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return {"M-CLIP": MCLIP, "clip": CLIP, "altclip": ALTCLIP, "siglip": SIGLIP, "siglip2": SIGLIP}.get(model_type)


def lookup(name: str, image_model: str | None = None) -> ModelInfo:
    """The registry entry of one model (an id, alias or local folder; ``labclip.spec.ModelSpec.info`` for a
    ``TEXT+IMAGE`` pair), with ``image_model`` as a paired family's image tower.

    An unknown hub id is assumed to be a native CLIP checkpoint (the loader checks its config);
    a local folder's family is read from its files.
    """
    source = resolve_model_name(str(name))
    info = BY_ID.get(source)
    if info is None:
        family = detect_family(Path(source)) if Path(source).is_dir() else None
        info = ModelInfo(source, family or CLIP, image_tower=DEFAULT_MODEL if family and FAMILIES[family].paired
                         else None, languages=())
    if image_model is not None and info.paired:
        info = replace(info, image_tower=resolve_model_name(str(image_model)))
    return info
