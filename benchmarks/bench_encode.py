"""CPU encoding benchmark: machine ceiling, seed-style baseline, labclip's default path, speed options.

Builds a random-init model with OpenAI ViT-B/32's exact configuration (same compute as the real
model, no download) and prints one table. Timings are printed, never asserted.

    python benchmarks/bench_encode.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import CLIPConfig, CLIPModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from labclip.config import CAPTIONS_DIR  # noqa: E402
from labclip.data import load_captions  # noqa: E402
from labclip.demo import OPENAI_MEAN, OPENAI_STD, clip_tokenizer, torch_seed  # noqa: E402
from labclip.images import Preprocess, load_image  # noqa: E402
from labclip.metrics import similarity  # noqa: E402
from labclip.model import ClipModel, quantize_int8  # noqa: E402
from labclip.text import tokenize  # noqa: E402

GFLOP_PER_IMAGE = 8.8  # ViT-B/32 image tower: 4.41 GMACs

def matmul_gflops(m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 FLOP/s of an (m×k)·(k×n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9

def vit_b32(quantize: bool = False) -> ClipModel:
    with torch_seed(0):
        model = CLIPModel(CLIPConfig()).eval()
    if quantize:
        model = quantize_int8(model)
    return ClipModel.from_transformers(model, clip_tokenizer(), Preprocess(224, 224, OPENAI_MEAN, OPENAI_STD),
                                       "random-init ViT-B/32", quantize="int8" if quantize else None)

REPEATS = 3

def timed(fn, *args, **kwargs):
    """Result and best-of-``REPEATS`` seconds: the same estimator as the matmul ceiling, so the
    percentages compare like with like on a noisy machine."""
    best, out = float("inf"), None
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return out, best

def image_baseline(model: ClipModel, paths: list[str]) -> np.ndarray:
    """The seed's way: read, preprocess and encode one image at a time, nothing overlapped."""
    rows = []
    with torch.no_grad():
        for path in paths:
            pixels = model.preprocess(load_image(path)).unsqueeze(0)
            out = model.model.get_image_features(pixel_values=pixels)
            rows.append(torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)[0].numpy())
    return np.stack(rows)

def text_baseline(model: ClipModel, texts: list[str]) -> np.ndarray:
    """The seed's way: all captions padded to 77 tokens."""
    batch = tokenize(model.tokenizer, texts)
    pad = 77 - batch["input_ids"].shape[1]
    ids = torch.nn.functional.pad(batch["input_ids"], (0, pad), value=model.tokenizer.pad_token_id)
    mask = torch.nn.functional.pad(batch["attention_mask"], (0, pad), value=0)
    with torch.inference_mode():
        out = model.model.get_text_features(input_ids=ids, attention_mask=mask)
    out = getattr(out, "pooler_output", out)
    return torch.nn.functional.normalize(out, dim=-1).numpy()

def vm_hwm_kb() -> int:
    """This process's peak resident memory in KiB (VmHWM, which, unlike ru_maxrss, restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def end_to_end_rss() -> float:
    """Peak RSS (GB) of a fresh process that builds fp32 ViT-B/32 and encodes the default set."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); sys.argv = ['x']\n"
        "import bench_encode as b\n"
        "t = b.load_captions(b.CAPTIONS_DIR / 'default.csv'); m = b.vit_b32()\n"
        "b.similarity(m.encode_images(t['path']), m.encode_texts(t['en'] + t['ru']))\n"
        "print(b.vm_hwm_kb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 2**20

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for CI (under 2 minutes)")
    args = parser.parse_args()
    global REPEATS
    REPEATS = 2 if args.quick else 3

    table = load_captions(CAPTIONS_DIR / "default.csv")
    paths = table["path"]
    repeat = 2 if args.quick else 4
    images = paths * repeat
    texts = (table["en"] + table["ru"]) * (2 if args.quick else 8)

    gflops = matmul_gflops()
    mlp_gflops = matmul_gflops(16 * 50, 768, 3072)
    ceiling = gflops / GFLOP_PER_IMAGE
    fp32 = vit_b32()
    int8 = vit_b32(quantize=True)

    pixels, pre_s = timed(fp32.pixel_values, images)
    rows = []
    reference_img = fp32.encode_images(paths, batch_size=1)
    reference_txt = fp32.encode_texts(table["en"])
    reference_sim = similarity(reference_img, reference_txt)

    def image_row(label, model, batch_size):
        if batch_size is None:
            _, seconds = timed(image_baseline, model, images)
            emb = image_baseline(model, paths)
        else:
            _, seconds = timed(model.encode_images, images, batch_size=batch_size)
            emb = model.encode_images(paths, batch_size=batch_size)
        sim = similarity(emb, model.encode_texts(table["en"]))
        rows.append({"what": label, "kind": "images", "per_s": len(images) / seconds,
                     "max_abs_diff": float(np.abs(sim - reference_sim).max()),
                     "same_top1": bool((sim.argmax(1) == reference_sim.argmax(1)).all())})

    image_row("baseline: one image at a time, seed-style loop (fp32)", fp32, None)
    for bs in ([8, 32] if args.quick else [4, 8, 16, 32, 48]):
        image_row(f"batch {bs}{' (default)' if bs == fp32.image_batch_size else ''} (fp32)", fp32, bs)
    image_row("int8 dynamic, batch 32", int8, 32)

    _, base_t = timed(text_baseline, fp32, texts)
    rows.append({"what": "baseline: one batch padded to 77 (fp32)", "kind": "captions", "per_s": len(texts) / base_t,
                 "max_abs_diff": float(np.abs(text_baseline(fp32, table["en"]) - reference_txt).max()),
                 "same_top1": True})
    _, t = timed(fp32.encode_texts, texts)
    rows.append({"what": f"default: sorted by length, batches of {fp32.text_batch_size} (fp32)", "kind": "captions",
                 "per_s": len(texts) / t, "max_abs_diff": 0.0, "same_top1": True})
    _, t = timed(int8.encode_texts, texts)
    sim = similarity(int8.encode_images(paths), int8.encode_texts(table["en"]))
    rows.append({"what": "int8 dynamic, padded to longest", "kind": "captions", "per_s": len(texts) / t,
                 "max_abs_diff": float(np.abs(sim - reference_sim).max()),
                 "same_top1": bool((sim.argmax(1) == reference_sim.argmax(1)).all())})

    frame = pd.DataFrame(rows)
    base = {kind: frame[frame.kind == kind].per_s.iloc[0] for kind in ("images", "captions")}
    frame["x_baseline"] = [r.per_s / base[r.kind] for r in frame.itertuples()]
    frame["pct_ceiling"] = [100 * r.per_s / ceiling if r.kind == "images" else float("nan") for r in frame.itertuples()]
    batch_default = frame[frame.what.str.contains("(default)", regex=False)].per_s.iloc[0]
    encode_s = len(images) / batch_default
    peak_gb = vm_hwm_kb() / 2**20
    e2e_gb = end_to_end_rss()

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, {platform.platform()}")
    print(f"fp32 matmul: {gflops:.0f} GFLOP/s (2048³) -> ViT-B/32 image ceiling {ceiling:.1f} images/s "
          f"({GFLOP_PER_IMAGE} GFLOP per image); at the model's own MLP shape (800×768·768×3072): "
          f"{mlp_gflops:.0f} GFLOP/s -> {mlp_gflops / GFLOP_PER_IMAGE:.1f} images/s")
    print(f"{len(images)} images, {len(texts)} captions; preprocessing {pre_s / len(images) * 1000:.1f} ms/image = "
          f"{100 * pre_s / encode_s:.0f}% of the default image path's time ({pixels.shape[0]} images)")
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}" if v < 1 else f"{v:.1f}"))
    print(f"peak RSS: {e2e_gb:.2f} GB end to end (fp32 ViT-B/32, default set, one process); "
          f"{peak_gb:.2f} GB for this benchmark process (fp32 and int8 models both loaded)")

if __name__ == "__main__":
    main()
