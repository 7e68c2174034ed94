"""Tiny, deterministic models built offline, for tests only (production code never imports this).

The tiny CLIP and the demo model's builders live in :mod:`labclip.demo`; this module adds the
multilingual text towers and a translation model in the folder layouts labclip reads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .demo import (  # noqa: F401 - re-exported for tests
    CLIP_VOCAB_SIZE,
    OPENAI_MEAN,
    OPENAI_STD,
    UNTRAINED_MARKER,
    clip_bpe_files,
    clip_image_processor,
    clip_tokenizer,
    make_tiny_model,
    seeded,
    tiny_config,
    write_untrained_marker,
)

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




def make_tiny_sentence_transformer(path: str | Path, seed: int = 0, out_features: int = 32) -> Path:
    """A tiny multilingual DistilBERT + mean pooling + Dense, in sentence-transformers' folder layout."""
    from safetensors.torch import save_file
    from transformers import DistilBertConfig, DistilBertModel

    path = Path(path)
    tokenizer = tiny_wordpiece_tokenizer(path)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=64, pad_token_id=1)
    model = seeded(seed, lambda: DistilBertModel(config).eval())
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
    weight = seeded(seed + 1, lambda: torch.randn(out_features, 32) / 32**0.5)
    save_file({"linear.weight": weight.contiguous()}, str(path / "2_Dense" / "model.safetensors"))
    write_untrained_marker(path, seed)
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
    transformer = seeded(seed, lambda: XLMRobertaModel(base).eval())
    linear = seeded(seed + 1, lambda: torch.nn.Linear(32, out_features))
    state = {f"transformer.{k}": v.contiguous() for k, v in transformer.state_dict().items()}
    state.update({"LinearTransformation.weight": linear.weight.detach().contiguous(),
                  "LinearTransformation.bias": linear.bias.detach().contiguous()})
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(
        {"model_type": "M-CLIP", "modelBase": str((path / "base").resolve()), "transformerDimensions": 32,
         "numDims": out_features}))
    write_untrained_marker(path, seed)
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
    model = seeded(seed, lambda: AltCLIPModel(config).eval())
    model.save_pretrained(path, safe_serialization=True)
    clip_image_processor(image_size).save_pretrained(path)
    write_untrained_marker(path, seed)
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
    model = seeded(seed, lambda: MarianMTModel(config).eval())
    model.generation_config = GenerationConfig(decoder_start_token_id=1, eos_token_id=2, pad_token_id=1,
                                               max_new_tokens=8)
    model.save_pretrained(path, safe_serialization=True)
    return path
