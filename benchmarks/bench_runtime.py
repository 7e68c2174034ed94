"""Second CPU runtime benchmark: OpenVINO and ONNX Runtime against torch, both towers of ViT-B/32, side by side.

Builds a random-init model with OpenAI ViT-B/32's exact configuration (seed 0, no download), wraps each tower
(pixels → unit image embedding; 77 token ids and mask → unit text embedding), converts it for OpenVINO
(``openvino.convert_model`` from the torch module, f32 inference precision, or bf16 where the CPU has bf16
instructions) and for ONNX Runtime (``torch.onnx.export``, CPU execution provider, all graph optimisations),
and times every runtime in interleaved rounds (best of N) on the same inputs: one batch of prepared pixels and
one batch of captions padded to 77 tokens. torch bf16 runs only where the CPU has bf16 instructions (AVX-512-BF16
or AMX-BF16); otherwise the output says it was skipped and why. The similarity matrix of the default image and
caption set is computed by each runtime, and its largest absolute difference to torch fp32 printed. The rule
(issue 28): a runtime is adopted only if its image tower is at least ``ADOPT_SPEEDUP`` times torch in the precision
``auto`` picks on this CPU (what the runtime would replace: torch bf16 where auto is bf16, else torch fp32) at a
similarity difference of at most ``MAX_DIFF``; the verdict is computed from the measured figures.

    python benchmarks/bench_runtime.py [--quick] [--tiny] [--doc FILE]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchdoc, also when a test loads this file by path

from benchdoc import recording  # noqa: E402

from labclip.config import CAPTIONS_DIR  # noqa: E402
from labclip.data import load_captions  # noqa: E402
from labclip.demo import OPENAI_MEAN, OPENAI_STD, clip_tokenizer, tiny_config  # noqa: E402
from labclip.images import Preprocess, load_image  # noqa: E402
from labclip.precision import choose, cpu_capabilities  # noqa: E402
from labclip.text import tokenize  # noqa: E402

ADOPT_SPEEDUP, MAX_DIFF = 1.3, 0.005
CONTEXT = 77
BF16_FEATURES = ("avx512_bf16", "amx_bf16")


class ImageTower(torch.nn.Module):
    """Pixels → unit image embeddings."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.vision, self.projection = clip.vision_model, clip.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled), dim=-1)


class TextTower(torch.nn.Module):
    """Token ids and attention mask → unit text embeddings."""

    def __init__(self, clip: CLIPModel):
        super().__init__()
        self.text, self.projection = clip.text_model, clip.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled), dim=-1)


def default_set(model: CLIPModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The default images as prepared pixels and their en + ru captions padded to 77 tokens."""
    captions = load_captions(CAPTIONS_DIR / "default.csv", None, ["en", "ru"])
    size = model.config.vision_config.image_size
    prep = Preprocess(size, size, OPENAI_MEAN, OPENAI_STD)
    pixels = torch.stack([prep(load_image(p)) for p in captions.paths])
    batch = tokenize(clip_tokenizer(), list(captions["en"]) + list(captions["ru"]))
    pad = CONTEXT - batch["input_ids"].shape[1]
    ids = torch.nn.functional.pad(batch["input_ids"], (0, pad), value=clip_tokenizer().pad_token_id)
    mask = torch.nn.functional.pad(batch["attention_mask"], (0, pad), value=0)
    return pixels, {"input_ids": ids.long(), "attention_mask": mask.long()}


def torch_runtime(towers: dict[str, torch.nn.Module], dtype: torch.dtype) -> dict[str, Callable]:
    """Each tower as a function of numpy inputs, in ``dtype``."""
    cast = {k: copy.deepcopy(t).to(dtype) for k, t in towers.items()} if dtype != torch.float32 else towers

    def image(px: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return cast["image"](torch.from_numpy(px).to(dtype)).float().numpy()

    def text(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return cast["text"](torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()

    return {"image": image, "text": text}


def onnx_runtime(towers: dict[str, torch.nn.Module], examples: dict[str, tuple], folder: Path) -> dict[str, Callable]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    names = {"image": (["pixel_values"], ["embeds"]), "text": (["input_ids", "attention_mask"], ["embeds"])}
    sessions = {}
    for kind, tower in towers.items():
        path = folder / f"{kind}.onnx"
        inputs, outputs = names[kind]
        torch.onnx.export(tower, examples[kind], str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in inputs + outputs}, opset_version=17, dynamo=False)
        sessions[kind] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {"image": lambda px: sessions["image"].run(None, {"pixel_values": px})[0],
            "text": lambda ids, mask: sessions["text"].run(None, {"input_ids": ids, "attention_mask": mask})[0]}


def openvino_runtime(towers: dict[str, torch.nn.Module], examples: dict[str, tuple], precision: str
                     ) -> dict[str, Callable]:
    import openvino as ov

    core = ov.Core()
    compiled = {}
    for kind, tower in towers.items():
        with torch.no_grad():
            converted = ov.convert_model(tower, example_input=examples[kind])
        compiled[kind] = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                               "PERFORMANCE_HINT": "LATENCY"})
    return {"image": lambda px: compiled["image"](px)[0],
            "text": lambda ids, mask: compiled["text"]([ids, mask])[0]}


def best_of(calls: dict[tuple[str, str], Callable[[], object]], rounds: int) -> dict[tuple[str, str], float]:
    """Best-of seconds per call over ``rounds`` interleaved rounds after one warm-up round."""
    for call in calls.values():
        call()
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
    return best


def runtimes(towers: dict[str, torch.nn.Module], examples: dict[str, tuple], bf16: bool, folder: Path
             ) -> dict[str, dict[str, Callable]]:
    found = {"torch fp32": torch_runtime(towers, torch.float32)}
    if bf16:
        found["torch bf16"] = torch_runtime(towers, torch.bfloat16)
    found["onnxruntime fp32"] = onnx_runtime(towers, examples, folder)
    found["openvino f32"] = openvino_runtime(towers, examples, "f32")
    if bf16:
        found["openvino bf16"] = openvino_runtime(towers, examples, "bf16")
    return found


def verdict(table: list[dict], baseline: str) -> list[str]:
    """The adoption rule applied to the measured rows: each runtime against ``baseline`` (torch in auto's precision)."""
    lines = []
    for name in dict.fromkeys(r["runtime"] for r in table if not r["runtime"].startswith("torch")):
        rows = {r["tower"]: r for r in table if r["runtime"] == name}
        speed, diff = rows["image"]["x_torch_auto"], rows["image"]["max_abs_diff"]
        adopt = speed >= ADOPT_SPEEDUP and diff <= MAX_DIFF
        lines.append(f"{name}: images {speed:.2f}× {baseline}, captions {rows['text']['x_torch_auto']:.2f}×, max |Δ "
                     f"similarity| {diff:.4f} → {'adopt' if adopt else 'leave out'} (rule: ≥ {ADOPT_SPEEDUP}× torch "
                     f"in auto's precision at ≤ {MAX_DIFF})")
    return lines


def measure(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    clip = CLIPModel(tiny_config() if args.tiny else CLIPConfig()).eval()
    towers: dict[str, torch.nn.Module] = {"image": ImageTower(clip).eval(), "text": TextTower(clip).eval()}
    pixels, tokens = default_set(clip)
    batch = 4 if args.quick else 16
    timed_px = pixels.repeat((batch + len(pixels) - 1) // len(pixels), 1, 1, 1)[:batch].numpy()
    ids, mask = tokens["input_ids"].numpy(), tokens["attention_mask"].numpy()
    caps = cpu_capabilities()
    bf16 = any(caps.get(f, False) for f in BF16_FEATURES)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {os.cpu_count()} logical CPUs; "
          f"{'tiny test model' if args.tiny else 'random-init ViT-B/32 (OpenAI configuration)'}; images: a batch of "
          f"{batch} prepared pixels; captions: {len(ids)} padded to {CONTEXT} tokens; best of {args.rounds} "
          "interleaved rounds")
    have = [f for f in BF16_FEATURES if caps.get(f, False)]
    print(f"bf16 instructions torch reports on this CPU: {', '.join(have) if have else 'none'}"
          + ("" if bf16 else "; torch bf16 and OpenVINO bf16 skipped"))
    examples = {"image": (pixels[:2],), "text": (tokens["input_ids"][:2], tokens["attention_mask"][:2])}
    with tempfile.TemporaryDirectory() as folder:
        found = runtimes(towers, examples, bf16, Path(folder))
        calls = {}
        for name, run in found.items():
            calls[(name, "image")] = lambda run=run: run["image"](timed_px)
            calls[(name, "text")] = lambda run=run: run["text"](ids, mask)
        seconds = best_of(calls, args.rounds)
        sims = {name: run["image"](pixels.numpy()) @ run["text"](ids, mask).T for name, run in found.items()}
    reference = sims["torch fp32"]
    auto = choose("auto", "cpu", caps)
    baseline = f"torch {auto.name}" if f"torch {auto.name}" in found else "torch fp32"
    print(f"auto picks {auto.name} on this CPU ({auto.reason}): runtimes are judged against {baseline}")
    table = [{"runtime": name, "tower": tower, "per_s": (batch if tower == "image" else len(ids)) / s,
              "x_torch_fp32": seconds[("torch fp32", tower)] / s, "x_torch_auto": seconds[(baseline, tower)] / s,
              "max_abs_diff": float(np.abs(sims[name] - reference).max())}
             for (name, tower), s in seconds.items()]
    print(f"{'runtime':<18} {'tower':<6} {'per s':>8} {'x torch fp32':>13} {'x ' + baseline:>13} {'max |Δ sim|':>12}")
    for row in table:
        print(f"{row['runtime']:<18} {row['tower']:<6} {row['per_s']:>8.1f} {row['x_torch_fp32']:>13.2f} "
              f"{row['x_torch_auto']:>13.2f} {row['max_abs_diff']:>12.4f}")
    print("\n".join(verdict(table, baseline)))
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller image batch and fewer rounds (CI)")
    p.add_argument("--tiny", action="store_true", help="a tiny model instead of ViT-B/32 (tests)")
    p.add_argument("--rounds", type=int, help="timed rounds (default: 3, --quick 2)")
    p.add_argument("--doc", type=Path, help="also write the printed figures into this Markdown file")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 3)
    with recording(args.doc, "bench_runtime", "Second CPU runtime: OpenVINO and ONNX Runtime against torch",
                   sys.argv[1:] if argv is None else argv):
        measure(args)


if __name__ == "__main__":
    main()
