"""Fine-tuning time on the CPU: one epoch of LiT-style training of ViT-B/32's text tower (random weights, the real
configuration sizes) on synthetic caption pairs.

The captions are 8 to 16 words drawn from a fixed vocabulary (about as long as COCO's), the image embeddings
random unit vectors (the locked image tower's output, read from the cache in a real run). Prints the measured
seconds per epoch and the process's peak resident memory, never asserts them.

    python benchmarks/bench_finetune.py [--pairs 1000] [--batch-size 32] [--method lora|layers] [--threads N]
        [--quick] [--doc FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import recording, unit_vectors  # noqa: E402

from labclip.demo import OPENAI_MEAN, OPENAI_STD, clip_tokenizer  # noqa: E402
from labclip.finetune import FinetuneConfig, Pairs, Trainer  # noqa: E402
from labclip.images import Preprocess  # noqa: E402
from labclip.model import ClipModel  # noqa: E402

VOCABULARY = ("a photo of the small large red blue green dog cat man woman child street city beach park table "
              "plate food pizza cake car bus train bike sitting standing next to on in with near front riding "
              "holding walking white black old young two three group people field grass water snow sky").split()


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCABULARY, size=int(rng.integers(8, 17)))) for _ in range(n)]


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", choices=("lora", "layers"), default="lora")
    parser.add_argument("--quick", action="store_true", help="32 pairs (for CI)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own; on a shared machine one "
                        "thread can beat two that wait for each other)")
    parser.add_argument("--doc", type=Path, metavar="FILE",
                        help="also write the printed figures as this script's section of FILE (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    with recording(args.doc, "bench_finetune", "Fine-tuning the text tower", sys.argv[1:] if argv is None else argv):
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.quick:
        args.pairs = 32
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CLIPConfig()  # ViT-B/32's sizes: text width 512, 12 layers, 8 heads, projection 512
    module = CLIPModel(config).eval()
    model = ClipModel.from_transformers(module, clip_tokenizer(), Preprocess(224, 224, OPENAI_MEAN, OPENAI_STD),
                                        "random-init ViT-B/32", progress=False)
    texts = captions(args.pairs)
    pairs = Pairs(texts, np.arange(args.pairs), unit_vectors(np.random.default_rng(1), args.pairs, model.dim))
    trainer = Trainer(model, FinetuneConfig(method=args.method, epochs=1, batch_size=args.batch_size), pairs)
    before = peak_rss_mib()
    start = time.perf_counter()
    loss = trainer.run_epoch()
    seconds = time.perf_counter() - start
    text_params = sum(p.numel() for n, p in module.named_parameters() if n.startswith(("text_model.", "text_proj")))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f} at start")
    print(f"text tower: {text_params / 1e6:.1f}M parameters ({config.text_config.num_hidden_layers} layers, width "
          f"{config.text_config.hidden_size}); {args.method}: {sum(p.numel() for p in trainer.params.values())} "
          f"trained")
    print(f"one epoch: {args.pairs} pairs in batches of {args.batch_size}, {seconds:.1f} s "
          f"({args.pairs / seconds:.1f} pairs/s), mean loss {loss:.3f}")
    print(f"peak resident memory: {peak_rss_mib():.0f} MiB for the process (model included; "
          f"{before:.0f} MiB before the epoch)")


if __name__ == "__main__":
    main()
