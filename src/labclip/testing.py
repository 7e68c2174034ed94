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


TINY_CORPUS = (
    "a photo of a cup of coffee on a red saucer cat car pizza mountain island rocket horse astronaut galaxy "
    "фотография чашки кофе на красном блюдце кошка машина пицца гора остров ракета лошадь астронавт галактика "
    "рисунок маленькой красной заснеженные горы чёрно белая"
)


def tiny_wordpiece_tokenizer(path: str | Path, max_length: int = 64):
    """A small multilingual WordPiece tokenizer with XLM-R's special-token layout (<s>=0, <pad>=1, </s>=2)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([TINY_CORPUS] * 3, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", model_max_length=max_length)
    fast.save_pretrained(path)
    return fast


def _seeded(seed: int, build):
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build()
    finally:
        torch.random.set_rng_state(state)


def make_tiny_sentence_transformer(path: str | Path, seed: int = 0, out_features: int = 32) -> Path:
    """A tiny multilingual DistilBERT + mean pooling + Dense, in sentence-transformers' folder layout."""
    from safetensors.torch import save_file
    from transformers import DistilBertConfig, DistilBertModel

    path = Path(path)
    tokenizer = tiny_wordpiece_tokenizer(path)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=64, pad_token_id=1)
    model = _seeded(seed, lambda: DistilBertModel(config).eval())
    model.save_pretrained(path, safe_serialization=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (path / "modules.json").write_text(json.dumps(modules, indent=1))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False}))
    (path / "2_Dense").mkdir(exist_ok=True)
    (path / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": out_features, "bias": False,
         "activation_function": "torch.nn.modules.linear.Identity"}))
    weight = _seeded(seed + 1, lambda: torch.randn(out_features, 32) / 32**0.5)
    save_file({"linear.weight": weight.contiguous()}, str(path / "2_Dense" / "model.safetensors"))
    (path / UNTRAINED_MARKER).write_text(json.dumps({"seed": seed, "untrained": True}) + "\n")
    return path


def make_tiny_mclip(path: str | Path, seed: int = 0, out_features: int = 32) -> Path:
    """A tiny XLM-R + mean pooling + LinearTransformation in M-CLIP's layout; its ``modelBase`` is a
    tiny XLM-R config saved in ``path/base``."""
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig, XLMRobertaModel

    path = Path(path)
    tokenizer = tiny_wordpiece_tokenizer(path)
    base = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                            eos_token_id=2)
    base.save_pretrained(path / "base")
    transformer = _seeded(seed, lambda: XLMRobertaModel(base).eval())
    linear = _seeded(seed + 1, lambda: torch.nn.Linear(32, out_features))
    state = {f"transformer.{k}": v.contiguous() for k, v in transformer.state_dict().items()}
    state.update({"LinearTransformation.weight": linear.weight.detach().contiguous(),
                  "LinearTransformation.bias": linear.bias.detach().contiguous()})
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(
        {"model_type": "M-CLIP", "modelBase": str((path / "base").resolve()), "transformerDimensions": 32,
         "numDims": out_features}))
    (path / UNTRAINED_MARKER).write_text(json.dumps({"seed": seed, "untrained": True}) + "\n")
    return path


def make_tiny_altclip(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny ``AltCLIPModel`` (XLM-R text tower, CLIP vision tower) with tokenizer and image processor."""
    from transformers import AltCLIPConfig, AltCLIPModel

    path = Path(path)
    tokenizer = tiny_wordpiece_tokenizer(path)
    config = AltCLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, project_dim=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=image_size // 4),
        projection_dim=32, logit_scale_init_value=math.log(100.0),
    )
    model = _seeded(seed, lambda: AltCLIPModel(config).eval())
    model.save_pretrained(path, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                       image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD), resample=3).save_pretrained(path)
    (path / UNTRAINED_MARKER).write_text(json.dumps({"seed": seed, "untrained": True}) + "\n")
    return path


def make_tiny_marian(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ``MarianMTModel`` with a small tokenizer: the translate-then-CLIP code path, offline."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    path = Path(path)
    tokenizer = tiny_wordpiece_tokenizer(path)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1, eos_token_id=2,
                          decoder_start_token_id=1, forced_eos_token_id=2, scale_embedding=True)
    model = _seeded(seed, lambda: MarianMTModel(config).eval())
    model.generation_config = GenerationConfig(decoder_start_token_id=1, eos_token_id=2, pad_token_id=1,
                                               max_new_tokens=8)
    model.save_pretrained(path, safe_serialization=True)
    return path
