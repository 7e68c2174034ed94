"""labclip's untrained demo model: a tiny, seeded, random-weight CLIP built offline.

The demo model lets every command and report run without a download; anything it produces says
that it is untrained. Tests build their tiny models with the same functions (see ``labclip.testing``).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from .config import CLIP_BPE_PATH, CONTEXT_LENGTH, cache_dir

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
UNTRAINED_MARKER = "labclip_untrained.json"
CLIP_VOCAB_SIZE = 49408
DEMO_VERSION = 1

T = TypeVar("T")


@contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Seed torch's global generator for the block, then restore its previous state."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        yield
    finally:
        torch.random.set_rng_state(state)


def seeded(seed: int, build: Callable[[], T]) -> T:
    """``build()`` under :func:`torch_seed`: the same seed gives the same weights."""
    with torch_seed(seed):
        return build()


def write_untrained_marker(path: str | Path, seed: int) -> None:
    """Write the marker file that makes labclip report a model folder as untrained."""
    (Path(path) / UNTRAINED_MARKER).write_text(json.dumps({"seed": seed, "untrained": True}) + "\n")


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


def clip_tokenizer():
    """CLIP's real BPE tokenizer, built offline from the vocabulary labclip ships."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(clip_bpe_files(tmp), model_max_length=CONTEXT_LENGTH)


def clip_image_processor(image_size: int):
    """A ``CLIPImageProcessor`` with OpenAI's resize, crop, mean and std at ``image_size``."""
    import transformers

    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return processor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD), resample=3,
    )


def tiny_config(image_size: int = 32, hidden: int = 32, layers: int = 2):
    """A CLIP configuration small enough to run in milliseconds, with CLIP's real vocabulary."""
    from transformers import CLIPConfig

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
    from transformers import CLIPModel, CLIPProcessor

    path = Path(path)
    model = seeded(seed, lambda: CLIPModel(tiny_config(image_size=image_size)).eval())
    model.save_pretrained(path, safe_serialization=True)
    CLIPProcessor(image_processor=clip_image_processor(image_size), tokenizer=clip_tokenizer()).save_pretrained(path)
    if mark_untrained:
        write_untrained_marker(path, seed)
    return path


def demo_model_path() -> Path:
    """Build the untrained demo model in labclip's cache on first use and return its directory."""
    target = cache_dir() / f"demo-model-v{DEMO_VERSION}"
    if (target / UNTRAINED_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        make_tiny_model(staging / "model", seed=0, image_size=64)
        try:
            os.replace(staging / "model", target)
        except OSError:
            if not (target / UNTRAINED_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
