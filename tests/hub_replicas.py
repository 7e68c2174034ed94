"""Hugging Face cache replicas of every hub repository labclip names, with tiny random weights.

Each replica is laid out as ``huggingface_hub`` lays out a download (:func:`write_replica`): contents in
``models--org--name/blobs/<sha1 or sha256>``, ``snapshots/<commit>/`` of relative symlinks into them and
``refs/main``; or as plain copies (Windows without symlinks), or as a ``local_dir`` download
(:func:`write_local_dir`). File names, config keys, tokenizer files and weight formats follow the real main
branch as its "Files and versions" page shows it (looked up with the docs search; the commit each
listing comes from is named beside it). Dimensions are shrunk; ``model_type`` and ``architectures``
are the real ones. Files labclip never reads (TF/Flax/Rust/ONNX weights, pictures, README) are present
as short placeholders so that the listing matches. ``.bin``-only repositories have only
``pytorch_model.bin`` here (written with ``torch.save(state_dict)``); where a repository has both
formats the ``.bin`` holds *different* weights, so a test that matches the safetensors weights also
proves the safetensors file was the one read. Checkpoints uploaded before transformers 4.31 (July 2023:
M-CLIP, whose config names 4.8.1; xlm-roberta-large; OpenAI's CLIP, 2021; AltCLIP, 2022) carry the
``position_ids`` buffers those versions saved (:func:`legacy_keys`); OpenAI's ``model.safetensors`` was
converted from that ``.bin``, so it carries them too. SigLIP (added in 4.37) and Marian (sinusoidal
positions) have none; the sentence-transformers DistilBERT is left without (not checked whether its 4.7
checkpoint has one).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from labclip.testing import (
    TINY_CORPUS,
    clip_bpe_files,
    clip_image_processor,
    clip_tokenizer,
    tiny_config,
)
from labclip.testing import seeded as _seeded

DIM = 32  # every tiny model projects into 32 dimensions, so towers pair with the tiny CLIP ViT-B/32
PLACEHOLDER = b"labclip test replica: placeholder for a file labclip does not read\n"
UNREAD = {".gitattributes", ".gitignore", "README.md", "flax_model.msgpack", "tf_model.h5", "rust_model.ot", "m9.png",
          "xtd.png", "onnx/model.onnx", "onnx/model_O1.onnx"}

# The LFS patterns of the .gitattributes the hub gives a new model repository.
LFS_PATTERNS = ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
                "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
                "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tflite", "*.tgz",
                "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*")

# Real main-branch listings (from the hub's "Files and versions" pages).
FILES: dict[str, set[str]] = {
    # openai/clip-vit-base-patch32, tree at b527df4 (and refs/pr/32 fb06627, same files)
    "openai/clip-vit-base-patch32": {
        ".gitattributes", "README.md", "config.json", "flax_model.msgpack", "merges.txt", "model.safetensors",
        "preprocessor_config.json", "pytorch_model.bin", "special_tokens_map.json", "tf_model.h5",
        "tokenizer.json", "tokenizer_config.json", "vocab.json"},
    # sentence-transformers/clip-ViT-B-32-multilingual-v1, tree at 2437c7b (onnx/ as at 1fc3e92; an
    # openvino/ folder implied by the page's OpenVINO tag was not in any listing found, so it is left out)
    "sentence-transformers/clip-ViT-B-32-multilingual-v1": {
        ".gitattributes", "README.md", "config.json", "config_sentence_transformers.json", "model.safetensors",
        "modules.json", "pytorch_model.bin", "sentence_bert_config.json", "special_tokens_map.json",
        "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "1_Pooling/config.json",
        "2_Dense/config.json", "2_Dense/model.safetensors", "2_Dense/pytorch_model.bin", "onnx/model.onnx",
        "onnx/model_O1.onnx"},
    # M-CLIP/XLM-Roberta-Large-Vit-B-32, tree at cfb9f55 / refs/pr/1: weights only as pytorch_model.bin
    "M-CLIP/XLM-Roberta-Large-Vit-B-32": {
        ".gitattributes", "README.md", "config.json", "pytorch_model.bin", "sentencepiece.bpe.model",
        "special_tokens_map.json", "tf_model.h5", "tokenizer.json", "tokenizer_config.json"},
    # xlm-roberta-large (M-CLIP's modelBase; now FacebookAI/xlm-roberta-large), tree at cd0dc35. The page's
    # Safetensors/ONNX tags suggest later files that no listing found shows; labclip reads config.json only.
    "xlm-roberta-large": {
        ".gitattributes", "README.md", "config.json", "flax_model.msgpack", "pytorch_model.bin",
        "sentencepiece.bpe.model", "tokenizer.json"},
    # BAAI/AltCLIP-m18, tree at 4e7c13d (main's head): pytorch_model.bin only (safetensors only in refs/pr/1)
    "BAAI/AltCLIP-m18": {
        ".gitattributes", "README.md", "config.json", "preprocessor_config.json", "pytorch_model.bin",
        "sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"},
    # BAAI/AltCLIP-m9, tree at main (41d03cb): no tokenizer.json, the tokenizer comes from the sentencepiece model
    "BAAI/AltCLIP-m9": {
        ".gitattributes", "README.md", "config.json", "m9.png", "preprocessor_config.json", "pytorch_model.bin",
        "sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer_config.json", "xtd.png"},
    # BAAI/AltCLIP, tree at b989a7b ("Upload 6 files", the latest listing found)
    "BAAI/AltCLIP": {
        ".gitattributes", ".gitignore", "README.md", "config.json", "preprocessor_config.json", "pytorch_model.bin",
        "sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"},
    # google/siglip-base-patch16-256-multilingual, tree at main (8952a4e)
    "google/siglip-base-patch16-256-multilingual": {
        ".gitattributes", "README.md", "config.json", "model.safetensors", "preprocessor_config.json",
        "special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"},
    # google/siglip2-base-patch16-naflex, tree at b53b807 ("Upload README.md with huggingface_hub"): the Gemma
    # tokenizer as tokenizer.json and tokenizer.model, no spiece.model, no .bin
    "google/siglip2-base-patch16-naflex": {
        ".gitattributes", "README.md", "config.json", "model.safetensors", "preprocessor_config.json",
        "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"},
    # Helsinki-NLP/opus-mt-ru-en, tree at 39fdcea ("Adding generation config file(s)"): .bin only
    "Helsinki-NLP/opus-mt-ru-en": {
        ".gitattributes", "README.md", "config.json", "generation_config.json", "pytorch_model.bin",
        "rust_model.ot", "source.spm", "target.spm", "tf_model.h5", "tokenizer_config.json", "vocab.json"},
}
# No "Files and versions" page of these was found by the docs search; their listing is taken to be that
# of openai/clip-vit-base-patch32 (the same uploader and conversion script). Unverified.
for _alias in ("openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14-336"):
    FILES[_alias] = FILES["openai/clip-vit-base-patch32"]
# No tree page of the fixed-resolution SigLIP 2 checkpoints was found; refs/pr/15 of siglip2-base-patch16-224 shows
# its tokenizer.model ("Upload processor", 997aaec) and a mirror of it (eugenehp/siglip2-base-224) lists the same
# config, weight and tokenizer files as the NaFlex tree above, so their listing is taken to be that one's.
for _alias in ("google/siglip2-base-patch16-224", "google/siglip2-base-patch32-256"):
    FILES[_alias] = FILES["google/siglip2-base-patch16-naflex"]


def commit_of(repo_id: str) -> str:
    """The (made-up, fixed) 40-hex commit of a replica."""
    return hashlib.sha1(f"labclip-replica:{repo_id}".encode()).hexdigest()


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    return Path(cache) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit_of(repo_id)


def _spm(path: Path, **ids) -> Path:
    import sentencepiece as spm

    words = (TINY_CORPUS + " the of and a an in on with").split()
    sentences = [" ".join(words[i : i + 8]) for i in range(0, len(words), 3)] * 5
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=150,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2, **ids)
    path.write_bytes(buffer.getvalue())
    return path


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def legacy_keys(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``position_ids`` buffers transformers saved before 4.31 (persistent then, ``persistent=False``
    now): every such buffer of ``model`` that its ``state_dict`` no longer holds."""
    kept = model.state_dict()
    return {prefix + name: buffer.clone().contiguous() for name, buffer in model.named_buffers()
            if name.rsplit(".", 1)[-1] == "position_ids" and name not in kept}


def _other_weights(state: dict, seed: int) -> dict:
    """Same names and shapes, other values: the decoy ``.bin`` beside a safetensors file."""
    return _seeded(seed, lambda: {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
                                  for k, v in state.items()})


def _xlmr_tokenizer(root: Path, with_json: bool):
    """XLM-R's tokenizer from a tiny ``sentencepiece.bpe.model`` (unk 0, bos 1, eos 2, like the real one)."""
    from transformers import AutoTokenizer

    _spm(root / "sentencepiece.bpe.model", unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    _json(root / "tokenizer_config.json", {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512,
                                           "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                           "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>",
                                           "mask_token": "<mask>"})
    tokenizer = AutoTokenizer.from_pretrained(root)
    if with_json:
        tokenizer.backend_tokenizer.save(str(root / "tokenizer.json"))
    _json(root / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                             "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>",
                                             "mask_token": "<mask>"})
    return tokenizer


def _clip(root: Path, seed: int) -> None:
    from safetensors.torch import save_file
    from transformers import CLIPModel

    model = _seeded(seed, lambda: CLIPModel(tiny_config(image_size=32)).eval())
    model.save_pretrained(root, safe_serialization=True)
    legacy = legacy_keys(model)
    assert legacy, "CLIP has position_ids buffers"
    save_file({**model.state_dict(), **legacy}, str(root / "model.safetensors"), metadata={"format": "pt"})
    torch.save({**_other_weights(model.state_dict(), seed + 1000), **legacy}, root / "pytorch_model.bin")
    clip_image_processor(32).save_pretrained(root)
    clip_bpe_files(root)
    tokenizer = clip_tokenizer()
    tokenizer.save_pretrained(root)
    _json(root / "special_tokens_map.json", {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                             "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})


def _sentence_transformer(root: Path, seed: int) -> None:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(set(TINY_CORPUS.split()))
    (root / "vocab.txt").write_text("\n".join(specials + words + list("abcdefghijklmnopqrstuvwxyz")) + "\n",
                                    encoding="utf-8")
    _json(root / "tokenizer_config.json", {"tokenizer_class": "DistilBertTokenizer", "do_lower_case": False,
                                           "model_max_length": 512, "strip_accents": None})
    tokenizer = AutoTokenizer.from_pretrained(root)
    tokenizer.backend_tokenizer.save(str(root / "tokenizer.json"))
    _json(root / "special_tokens_map.json", {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                             "cls_token": "[CLS]", "mask_token": "[MASK]"})
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=DIM, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=128, pad_token_id=0)
    model = _seeded(seed, lambda: DistilBertModel(config).eval())
    model.save_pretrained(root, safe_serialization=True)
    torch.save(_other_weights(model.state_dict(), seed + 1000), root / "pytorch_model.bin")
    _json(root / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    _json(root / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    _json(root / "config_sentence_transformers.json",
          {"__version__": {"sentence_transformers": "1.2.0", "transformers": "4.7.0", "pytorch": "1.9.0"}})
    _json(root / "1_Pooling" / "config.json", {
        "word_embedding_dimension": DIM, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    _json(root / "2_Dense" / "config.json", {"in_features": DIM, "out_features": DIM, "bias": False,
                                             "activation_function": "torch.nn.modules.linear.Identity"})
    weight = _seeded(seed + 1, lambda: torch.randn(DIM, DIM) / DIM**0.5)
    save_file({"linear.weight": weight.contiguous()}, str(root / "2_Dense" / "model.safetensors"))
    torch.save({"linear.weight": -weight}, root / "2_Dense" / "pytorch_model.bin")


def _xlm_roberta_config(vocab_size: int):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(vocab_size=vocab_size, hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                            eos_token_id=2, architectures=["XLMRobertaForMaskedLM"])


def _xlm_roberta_large(root: Path, seed: int) -> None:
    from transformers import XLMRobertaForMaskedLM

    tokenizer = _xlmr_tokenizer(root, with_json=True)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # not in the real listing
        (root / name).unlink()
    config = _xlm_roberta_config(len(tokenizer))
    config.save_pretrained(root)
    model = _seeded(seed, lambda: XLMRobertaForMaskedLM(config).eval())
    torch.save({**model.state_dict(), **legacy_keys(model)}, root / "pytorch_model.bin")


def _mclip(root: Path, seed: int) -> None:
    from transformers import XLMRobertaModel

    tokenizer = _xlmr_tokenizer(root, with_json=True)
    # The real config.json, dimensions shrunk (transformerDimensions 1024 -> 32, numDims 512 -> 32).
    _json(root / "config.json", {"architectures": ["SentenceModelWithLinearTransformation"],
                                 "modelBase": "xlm-roberta-large", "model_type": "M-CLIP", "numDims": DIM,
                                 "transformerDimensions": DIM, "transformers_version": "4.8.1"})
    transformer = _seeded(seed, lambda: XLMRobertaModel(_xlm_roberta_config(len(tokenizer)),
                                                        add_pooling_layer=True).eval())
    linear = _seeded(seed + 1, lambda: torch.nn.Linear(DIM, DIM))
    state = {f"transformer.{k}": v for k, v in transformer.state_dict().items()}
    state.update(legacy_keys(transformer, "transformer."))  # 'transformer.embeddings.position_ids'
    state.update({"LinearTransformation.weight": linear.weight.detach(), "LinearTransformation.bias":
                  linear.bias.detach()})
    torch.save(state, root / "pytorch_model.bin")


def _altclip(root: Path, seed: int, with_tokenizer_json: bool) -> None:
    from transformers import AltCLIPConfig, AltCLIPModel

    tokenizer = _xlmr_tokenizer(root, with_json=with_tokenizer_json)
    config = AltCLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, project_dim=DIM),
        vision_config=dict(hidden_size=DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=DIM, logit_scale_init_value=math.log(100.0), architectures=["AltCLIPModel"],
    )
    model = _seeded(seed, lambda: AltCLIPModel(config).eval())
    config.save_pretrained(root)
    torch.save({**model.state_dict(), **legacy_keys(model)}, root / "pytorch_model.bin")
    clip_image_processor(32).save_pretrained(root)


def _siglip(root: Path, seed: int) -> None:
    from transformers import SiglipConfig, SiglipModel, SiglipTokenizer
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    _spm(root / "spiece.model", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    tokenizer = SiglipTokenizer(vocab_file=str(root / "spiece.model"))
    tokenizer.save_pretrained(root)
    _json(root / "special_tokens_map.json", {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"})
    from transformers.convert_slow_tokenizer import T5Converter  # SigLIP's tokenizer is T5's sentencepiece

    tokenizer._extra_ids = 0
    T5Converter(tokenizer).converted().save(str(root / "tokenizer.json"))
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=DIM, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, pad_token_id=1, eos_token_id=1,
                         bos_token_id=None),
        vision_config=dict(hidden_size=DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        architectures=["SiglipModel"],
    )
    model = _seeded(seed, lambda: SiglipModel(config).eval())
    with torch.no_grad():  # the real model's learned values (log 10 scale, -10 bias) are as far from 0 as these
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(root, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5],
                            image_std=[0.5, 0.5, 0.5]).save_pretrained(root)


def _gemma_tokenizer(root: Path):
    """SigLIP 2's Gemma tokenizer: a byte-fallback sentencepiece BPE (``tokenizer.model``; pad 0, eos 1, bos 2,
    unk 3, like Gemma's) and its ``tokenizer.json``, written by transformers' ``GemmaTokenizer``."""
    import sentencepiece as spm
    from tokenizers.models import BPE
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    words = (TINY_CORPUS + " the of and a an in on with").split()
    sentences = [" ".join(words[i : i + 8]) for i in range(0, len(words), 3)] * 5
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=400, model_type="bpe", character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
        eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", byte_fallback=True, user_defined_symbols=["<mask>"],
        add_dummy_prefix=False, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False)
    (root / "tokenizer.model").write_bytes(buffer.getvalue())
    pieces = SentencePieceExtractor(str(root / "tokenizer.model")).extract(BPE)
    tokenizer = GemmaTokenizer(vocab=pieces["vocab"], merges=pieces["merges"], add_bos_token=False,
                               add_eos_token=True, model_max_length=64)  # padding side: Gemma's default (left)
    tokenizer.save_pretrained(root)
    _json(root / "special_tokens_map.json", {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
                                             "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                                             "unk_token": "<unk>"})
    return tokenizer


def _siglip2(root: Path, seed: int, naflex: bool = False) -> None:
    """SigLIP 2: fixed-resolution checkpoints are ``SiglipModel`` (model_type "siglip") with a Gemma vocabulary;
    NaFlex ones are ``Siglip2Model`` with a patch-counting image processor."""
    from transformers import Siglip2Config, Siglip2Model, SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    tokenizer = _gemma_tokenizer(root)
    text = dict(vocab_size=len(tokenizer), hidden_size=DIM, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = dict(hidden_size=DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8)
    if naflex:
        config = Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16},
                               architectures=["Siglip2Model"])
        model = _seeded(seed, lambda: Siglip2Model(config).eval())
        Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16).save_pretrained(root)
    else:
        config = SiglipConfig(text_config=text, vision_config={**vision, "image_size": 32},
                              architectures=["SiglipModel"])
        model = _seeded(seed, lambda: SiglipModel(config).eval())
        SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
                                resample=2).save_pretrained(root)  # SigLIP 2's configs say bilinear (2), not 3
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(root, safe_serialization=True)


def _marian(root: Path, seed: int) -> None:
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    _spm(root / "source.spm", unk_id=1, eos_id=0, pad_id=-1, bos_id=-1)
    _spm(root / "target.spm", unk_id=1, eos_id=0, pad_id=-1, bos_id=-1)
    words = sorted(set((TINY_CORPUS + " the of and a an in on with").split()))
    import sentencepiece as spm

    pieces = [spm.SentencePieceProcessor(model_file=str(root / "source.spm")).id_to_piece(i) for i in range(150)
              if i < spm.SentencePieceProcessor(model_file=str(root / "source.spm")).get_piece_size()]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(["</s>", "<unk>", *pieces, *words, "<pad>"]))}
    _json(root / "vocab.json", vocab)
    _json(root / "tokenizer_config.json", {"target_lang": "en", "source_lang": "ru"})
    tokenizer = MarianTokenizer.from_pretrained(root)
    pad = vocab["<pad>"]
    config = MarianConfig(vocab_size=len(vocab), d_model=DIM, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=512, pad_token_id=pad, eos_token_id=0,
                          decoder_start_token_id=pad, forced_eos_token_id=0, scale_embedding=True,
                          architectures=["MarianMTModel"])
    config.save_pretrained(root)
    GenerationConfig(decoder_start_token_id=pad, eos_token_id=0, pad_token_id=pad, forced_eos_token_id=0,
                     max_length=16, num_beams=1, bad_words_ids=[[pad]]).save_pretrained(root)
    model = _seeded(seed, lambda: MarianMTModel(config).eval())
    torch.save(model.state_dict(), root / "pytorch_model.bin")
    assert len(tokenizer) == len(vocab)


BUILDERS = {
    "openai/clip-vit-base-patch32": lambda r: _clip(r, 0),
    "openai/clip-vit-base-patch16": lambda r: _clip(r, 1),
    "openai/clip-vit-large-patch14": lambda r: _clip(r, 2),
    "openai/clip-vit-large-patch14-336": lambda r: _clip(r, 3),
    "sentence-transformers/clip-ViT-B-32-multilingual-v1": lambda r: _sentence_transformer(r, 10),
    "M-CLIP/XLM-Roberta-Large-Vit-B-32": lambda r: _mclip(r, 20),
    "xlm-roberta-large": lambda r: _xlm_roberta_large(r, 21),
    "BAAI/AltCLIP-m18": lambda r: _altclip(r, 30, with_tokenizer_json=True),
    "BAAI/AltCLIP-m9": lambda r: _altclip(r, 31, with_tokenizer_json=False),
    "BAAI/AltCLIP": lambda r: _altclip(r, 32, with_tokenizer_json=True),
    "google/siglip-base-patch16-256-multilingual": lambda r: _siglip(r, 40),
    "google/siglip2-base-patch16-224": lambda r: _siglip2(r, 41),
    "google/siglip2-base-patch32-256": lambda r: _siglip2(r, 42),
    "google/siglip2-base-patch16-naflex": lambda r: _siglip2(r, 43, naflex=True),
    "Helsinki-NLP/opus-mt-ru-en": lambda r: _marian(r, 50),
}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's contents: the name of a small (non-LFS) file's blob in the hub cache."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name: str, data: bytes) -> bool:
    """Whether the hub stores ``name`` with git LFS: the patterns of a new repository's ``.gitattributes``,
    and every file over 10 MB (the hub refuses larger plain git files)."""
    return any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in LFS_PATTERNS) or len(data) > 10 * 2**20


def etag_of(name: str, data: bytes) -> str:
    """A file's ETag, which ``huggingface_hub`` names its blob by: the sha256 of an LFS file, else the git sha1
    (``hf_hub_download``'s docstring: "its git-sha1 if stored in git, or its sha256 if stored in git-lfs")."""
    return hashlib.sha256(data).hexdigest() if is_lfs(name, data) else git_blob_sha1(data)


def _build(folder: Path, repo_id: str) -> list[str]:
    """Write one repository's files into ``folder`` and check them against its listing; returns their names."""
    BUILDERS[repo_id](folder)
    expected = FILES[repo_id]
    for name in expected & UNREAD:
        if not (folder / name).exists():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(PLACEHOLDER)
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert written == expected, f"{repo_id}: extra {sorted(written - expected)}, missing {sorted(expected - written)}"
    return sorted(written)


def write_replica(cache: Path, repo_id: str, layout: str = "symlinks") -> Path:
    """Write one repository's replica into the hub cache folder ``cache`` as ``hf_hub_download`` writes a
    download; returns its snapshot folder.

    ``layout="symlinks"`` (Linux, macOS): each file's contents in ``blobs/<etag>`` (:func:`etag_of`), the
    snapshot's files relative symlinks into ``../../blobs`` (``../../../blobs`` one folder down), and
    ``refs/main`` holding the commit. ``layout="copies"`` (Windows without symlinks, ``HF_HUB_DISABLE_SYMLINKS``):
    the files themselves in the snapshot folder, ``refs/main`` as before.

    Raises:
        AssertionError: the files written differ from the real listing in ``FILES``.
    """
    if layout not in ("symlinks", "copies"):
        raise ValueError(f"unknown layout {layout!r}")
    root = snapshot_dir(cache, repo_id)
    repo = root.parents[1]
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as staging:
        names = _build(Path(staging), repo_id)
        for name in names:
            source, target = Path(staging) / name, root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if layout == "copies":
                shutil.move(source, target)
                continue
            blob = repo / "blobs" / etag_of(name, source.read_bytes())
            if not blob.exists():
                shutil.move(source, blob)
            target.symlink_to(os.path.relpath(blob, target.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit_of(repo_id))
    return root


def write_local_dir(folder: Path, repo_id: str) -> Path:
    """Write one repository as ``hf_hub_download(local_dir=folder)`` / ``hf download --local-dir`` leave it:
    plain files, and each file's commit and ETag in ``.cache/huggingface/download/<file>.metadata``
    (written with ``huggingface_hub``'s own writer)."""
    from huggingface_hub._local_folder import write_download_metadata

    folder.mkdir(parents=True, exist_ok=True)
    for name in _build(folder, repo_id):
        write_download_metadata(folder, name, commit_of(repo_id), etag_of(name, (folder / name).read_bytes()))
    return folder


def write_all(cache: Path, layout: str = "symlinks") -> dict[str, Path]:
    """Every replica, keyed by hub id."""
    return {repo_id: write_replica(cache, repo_id, layout) for repo_id in BUILDERS}
