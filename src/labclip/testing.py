"""Tiny, deterministic CLIP models built offline, for tests and the demo model."""

from __future__ import annotations

import gzip
import json
import math
import tempfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

try:
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor

from .config import CLIP_BPE_PATH, CONTEXT_LENGTH

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
UNTRAINED_MARKER = "labclip_untrained.json"
CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_bpe_files(directory: str | Path, bpe_path: str | Path = CLIP_BPE_PATH) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of CLIP's 49,408-token BPE into ``directory``.

    The vocabulary is built from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` the way
    ``clip.simple_tokenizer.SimpleTokenizer`` builds it, so ids match ``clip.tokenize``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's real BPE tokenizer, built offline from the vocabulary labclip ships."""
    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(clip_bpe_files(tmp), model_max_length=CONTEXT_LENGTH)


def tiny_config(image_size: int = 32, hidden: int = 32, layers: int = 2) -> CLIPConfig:
    """A CLIP configuration small enough to run in milliseconds, with CLIP's real vocabulary."""
    text = dict(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    vision = dict(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, image_size=image_size, patch_size=image_size // 4,
    )
    return CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=hidden,
        logit_scale_init_value=math.log(100.0),
    )


def make_tiny_model(path: str | Path, seed: int = 0, image_size: int = 32, mark_untrained: bool = True) -> Path:
    """Save a tiny random-weight CLIP with tokenizer and processor, loadable by ``load_model(path)``.

    Args:
        path: directory to create (or overwrite).
        seed: torch seed; the same seed gives the same weights.
        image_size: the vision tower's input size (resize and crop use it too).
        mark_untrained: write the marker that makes reports say the model is untrained.

    Returns:
        The directory.
    """
    path = Path(path)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = CLIPModel(tiny_config(image_size=image_size)).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(path, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD), resample=3,
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(path)
    if mark_untrained:
        (path / UNTRAINED_MARKER).write_text(json.dumps({"seed": seed, "untrained": True}) + "\n")
    return path
