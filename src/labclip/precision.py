"""Which floating-point precision to encode in: detected from the hardware, recorded with its reason."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LabclipError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The one rule for defaults: numbers a person reads one by one are exact fp32; bulk work, where throughput
# matters and a flipped near-tie is noise inside the interval, is "auto". --precision / PRECISION= overrides.
EXACT, BULK = "fp32", "auto"
DEFAULTS: dict[str, str] = {
    **dict.fromkeys(("01_matching", "02_languages", "03_lab_report", "04_zeroshot", "06_adapt",
                     "match", "classify", "eval", "compare", "adapt", "calibrate", "08_finetune", "finetune"), EXACT),
    **dict.fromkeys(("05_scale", "07_cultures", "tag", "search", "embed"), BULK),
}
DEFAULT_RULE = ("numbers read one by one (reports 01–04, 06 and 08; match, classify, eval, compare, adapt, calibrate, "
                "finetune) default to "
                "exact fp32, bulk work (05_scale, 07_cultures, tag, search, embed) to auto")
# What "auto" resolves to without looking at the hardware (fp32, bf16 or fp16): pins the notebooks' kernels and
# the tests to one precision on every machine.
AUTO_ENV = "LABCLIP_AUTO_PRECISION"
CPUINFO = Path("/proc/cpuinfo")
AUTO_RULE = ("auto picks bf16 on CUDA devices that support it (else fp16), on CPUs with AMX-BF16 tiles and on AMD "
             "CPUs with AVX-512-BF16, else fp32")


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``fp32``, ``bf16`` or ``fp16``, what was asked for, and why."""

    name: str
    requested: str
    reason: str
    default: bool = False  # ``requested`` is the default table's value, not the user's

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]


FP32 = Precision("fp32", "fp32", "requested")


def default_precision(task: str) -> str:
    """The precision ``task`` (a command such as ``"match"`` or a notebook such as ``"05_scale"``) uses when none
    is given: see ``DEFAULTS``.

    Raises:
        KeyError: a task the table does not name.
    """
    return DEFAULTS[task]


def cpu_capabilities() -> Mapping[str, bool]:
    """The CPU's instruction-set features as torch detects them (``torch.cpu.get_capabilities``,
    torch ≥ 2.10), else the flags of ``/proc/cpuinfo``; ``amd`` is true on an AMD processor."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        text = ""
    first = text.split("\n\n", 1)[0].splitlines()  # the first processor's entry
    info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first if ":" in line)}
    get = getattr(torch.cpu, "get_capabilities", None)
    found = get() if get is not None else dict.fromkeys(info.get("flags", "").split(), True)
    caps = {k: v for k, v in found.items() if isinstance(v, bool)}
    vendor = info.get("vendor_id")
    caps["amd"] = vendor == "AuthenticAMD" if vendor else str(found.get("cpu_name", "")).startswith("AMD")
    return caps


def choose(requested: str | None = "auto", device: str = "cpu", capabilities: Mapping[str, bool] | None = None, *,
           default_for: str | None = None) -> Precision:
    """Resolve ``requested`` for ``device``; ``None`` is the default for the task ``default_for`` (``DEFAULTS``).

    ``auto`` follows ``AUTO_RULE``: bf16 on CUDA cards that support it (fp16 on older ones), on CPUs with
    AMX-BF16 tiles and on AMD CPUs with AVX-512-BF16; fp32 on other CPUs, Intel's AVX-512-BF16 without AMX
    included. ``make bench`` (bench_encode) measured bf16 slower than fp32 on an Intel Xeon with AVX-512-BF16
    and no AMX, and about twice as fast on an AMD EPYC with AVX-512-BF16; it says whether the rule agrees with
    the machine it runs on. Where the environment
    variable ``LABCLIP_AUTO_PRECISION`` is set, ``auto`` is that precision instead, whatever the hardware.
    The reason states the rule and what it found on this machine; it quotes no speed-up this run did not measure.

    Args:
        requested: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``; ``None``: nothing was asked for, the
            default for ``default_for`` applies and the reason says so and states ``DEFAULT_RULE``.
        device: the torch device the model runs on.
        capabilities: CPU features (default: ``LABCLIP_AUTO_PRECISION`` if set, else :func:`cpu_capabilities`);
            tests pass their own.
        default_for: the command or notebook whose default applies when ``requested`` is ``None``.

    Raises:
        LabclipError: an unknown precision, or an unknown ``LABCLIP_AUTO_PRECISION``.
        ValueError: ``requested`` is ``None`` and ``default_for`` names no task of ``DEFAULTS``.
    """
    if requested is None:
        if default_for not in DEFAULTS:
            raise ValueError(f"no precision requested and no default for {default_for!r}")
        table = DEFAULTS[default_for]
        found = choose(table, device, capabilities)
        reason = f"default for {default_for}: {DEFAULT_RULE}"
        if table == "auto":
            reason += f"; {found.reason}"
        return Precision(found.name, table, reason, default=True)
    if requested not in PRECISIONS:
        raise LabclipError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return Precision(requested, requested, "requested")
    pinned = os.environ.get(AUTO_ENV, "").strip() if capabilities is None else ""
    if pinned:
        if pinned not in DTYPES:
            raise LabclipError(f"{AUTO_ENV}={pinned!r} is not a precision; use one of {', '.join(DTYPES)}")
        return Precision(pinned, requested, f"auto pinned to {pinned} by {AUTO_ENV}")
    kind = torch.device(device).type
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", requested, f"{AUTO_RULE}: this CUDA device supports bf16")
        return Precision("fp16", requested, f"{AUTO_RULE}: this CUDA device has no bf16 support")
    if kind != "cpu":
        return Precision("fp32", requested, f"{AUTO_RULE}: no reduced-precision rule for device type {kind!r}")
    caps = cpu_capabilities() if capabilities is None else capabilities
    if caps.get("amx_bf16"):
        return Precision("bf16", requested, f"{AUTO_RULE}: this CPU has AMX-BF16")
    if caps.get("avx512_bf16") and caps.get("amd"):
        return Precision("bf16", requested, f"{AUTO_RULE}: this AMD CPU has AVX-512-BF16")
    if caps.get("avx512_bf16"):
        return Precision("fp32", requested, f"{AUTO_RULE}: this CPU has AVX-512-BF16 but no AMX-BF16 and is not AMD")
    return Precision("fp32", requested, f"{AUTO_RULE}: this CPU has no AMX-BF16")


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
