"""Which floating-point precision to encode in: detected from the hardware, recorded with its reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LabclipError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``fp32``, ``bf16`` or ``fp16``, what was asked for, and why."""

    name: str
    requested: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]


FP32 = Precision("fp32", "fp32", "requested")


def cpu_capabilities() -> Mapping[str, bool]:
    """The CPU's instruction-set features as torch detects them (``torch.cpu.get_capabilities``,
    torch ≥ 2.10), else the flags of ``/proc/cpuinfo``."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return {k: v for k, v in get().items() if isinstance(v, bool)}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return dict.fromkeys(flags, True)


def choose(requested: str = "auto", device: str = "cpu", capabilities: Mapping[str, bool] | None = None) -> Precision:
    """Resolve ``requested`` for ``device``.

    ``auto`` picks bf16 on CUDA cards that support it (fp16 on older ones) and on CPUs with AMX-BF16
    tiles; fp32 on other CPUs, AVX-512-BF16 alone included: there oneDNN runs bf16 matmuls with its
    ``avx512_core_bf16`` kernels, and ``make bench`` measured them, and the encoders, slower than fp32.
    The reason says which rule applied and what it rests on; ``make bench`` checks it on the machine
    it runs on.

    Args:
        requested: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: the torch device the model runs on.
        capabilities: CPU features (default :func:`cpu_capabilities`); tests pass their own.

    Raises:
        LabclipError: an unknown precision.
    """
    if requested not in PRECISIONS:
        raise LabclipError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return Precision(requested, requested, "requested")
    if torch.device(device).type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", requested, "CUDA device supports bf16")
        return Precision("fp16", requested, "CUDA device without bf16 support")
    if torch.device(device).type != "cpu":
        return Precision("fp32", requested, f"no reduced-precision rule for device type {torch.device(device).type!r}")
    caps = cpu_capabilities() if capabilities is None else capabilities
    if caps.get("amx_bf16"):
        return Precision("bf16", requested, "CPU has AMX-BF16 tiles: bf16 matmul measured 6.6× fp32 on such a CPU")
    if caps.get("avx512_bf16"):
        return Precision("fp32", requested, "CPU has AVX-512-BF16 but no AMX-BF16 tiles: bf16 measured slower than "
                                            "fp32 on such a CPU (matmul about 0.5×, ViT-B/32 0.6–0.7×)")
    return Precision("fp32", requested, "CPU without bf16 matrix units (no AMX-BF16)")


def cast(module: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """Cast a model's floating-point weights to ``precision``, keeping a ``logit_scale`` in fp32 (bf16 would
    round OpenAI's 100 to 98.9)."""
    if precision.name == "fp32":
        return module
    scale = getattr(module, "logit_scale", None)
    kept = scale.detach().clone() if isinstance(scale, torch.nn.Parameter) else None
    module = module.to(precision.dtype)
    if kept is not None:
        module.logit_scale.data = kept
    return module


def to_dtype(inputs: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating-point inputs (pixel values) in the model's dtype; token ids and masks as they are."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
