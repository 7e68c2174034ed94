"""``make report``: run the notebooks with papermill, render HTML with nbconvert and PDF with Chromium.

Everything is written to a staging folder first and moved into the output folder only when every
notebook succeeded, so a failed run leaves earlier reports as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import DEFAULT_CAPTIONS, DEFAULT_MODEL, NOTEBOOKS_DIR, PROJ_ROOT, REPORTS_DIR
from ..data import load_captions
from ..errors import LabclipError
from .experiment import load_model_or_demo
from .provenance import Timings, now, package_versions

NOTEBOOKS = ("01_matching", "02_languages", "03_lab_report", "04_zeroshot")
SCALE_NOTEBOOK = "05_scale"  # run by `make report-scale DATASET=...`, not by default
KERNEL = "labclip"
PARAMETERS = ("model", "captions", "image_dir", "languages", "top_k", "batch_size", "title", "strict",
              "compare_models", "translator", "labels", "template_sets", "dataset", "reference")
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PRINT_CSS = """
<style>
@page { size: A4; margin: 12mm 11mm; }
@media print {
  body { font-size: 10.5pt; }
  .jp-OutputArea-output img { max-width: 100% !important; height: auto !important; page-break-inside: avoid; }
  table { page-break-inside: auto; font-size: 8pt; }
  .jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow: visible !important; }
  tr { page-break-inside: avoid; }
  h1, h2, h3 { page-break-after: avoid; }
}
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; }
.jp-OutputArea-output table { border-collapse: collapse; margin: 6px 0 12px 0; }
.jp-OutputArea-output th, .jp-OutputArea-output td { border: 1px solid #ccc; padding: 2px 5px; text-align: left !important; }
.jp-OutputArea-output img { max-width: 100%; height: auto; }
</style>
"""


def ensure_kernel() -> str:
    """Register this Python as the ``labclip`` Jupyter kernel (once) and return its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return KERNEL
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL, display_name="labclip", prefix=sys.prefix)
    return KERNEL


def chromium() -> str:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise LabclipError("PDF output needs Chromium: run `make sysdeps` (apt-get install chromium) or pass --no-pdf")


def to_html(executed: Path, target: Path) -> Path:
    """Render an executed notebook as a self-contained HTML page with the code hidden."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.output_type == "stream" and o.name == "stderr")]
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags={"remove-cell", "parameters", "injected-parameters"}), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"<script\b.*?</script\s*>", "", body, flags=re.S | re.I)
    body = body.replace("</head>", PRINT_CSS + "</head>", 1)
    target.write_text(body, encoding="utf-8")
    return target


def to_pdf(html: Path, target: Path, timeout: int = 180) -> Path:
    """Print an HTML page to an A4 PDF with headless Chromium."""
    with tempfile.TemporaryDirectory(prefix="labclip-chromium-") as profile:
        cmd = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
            f"--user-data-dir={profile}", "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
            f"--print-to-pdf={target}", html.resolve().as_uri(),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabclipError(f"Chromium could not print {html.name} to PDF: {last}")
    return target


def build_reports(
    params: dict,
    out_dir: str | os.PathLike = REPORTS_DIR,
    notebooks: Sequence[str] = NOTEBOOKS,
    pdf: bool = True,
) -> list[Path]:
    """Validate inputs, run each notebook, render it, then publish everything into ``out_dir`` at once.

    Args:
        params: notebook parameters (see ``PARAMETERS``); missing ones keep the notebook's default.
        out_dir: where finished reports go.
        notebooks: names of notebooks in ``notebooks/`` to run.
        pdf: also print each HTML page to PDF.

    Returns:
        The published files.

    Raises:
        LabclipError: bad input, an unloadable model in strict mode, or a failed notebook (the
            message points at the executed notebook, kept for inspection).
    """
    import papermill

    out_dir = Path(out_dir)
    timings = Timings()
    params = {k: v for k, v in params.items() if v is not None}
    if any(name in NOTEBOOKS for name in notebooks):
        with timings.stage("validate captions"):
            load_captions(params.get("captions") or DEFAULT_CAPTIONS, params.get("image_dir"), params.get("languages"))
        params["check_images"] = False  # every image was decoded once above; the notebooks skip it
    if SCALE_NOTEBOOK in notebooks:
        from .scale import resolve_dataset

        if not params.get("dataset"):
            raise LabclipError("the scale report needs a dataset: xtd10, xm3600, a prepared folder or a caption file")
        with timings.stage("prepare dataset"):
            resolve_dataset(params["dataset"], params.get("languages"))
    with timings.stage("check model"):
        # The notebooks apply the same policy themselves, so each JSON records the requested model and the reason.
        _, fallback = load_model_or_demo(params.get("model", DEFAULT_MODEL), bool(params.get("strict")))
    if pdf:
        chromium()
    kernel = ensure_kernel()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".labclip-run-", dir=out_dir.parent))
    produced: list[Path] = []
    for name in notebooks:
        source = NOTEBOOKS_DIR / f"{name}.ipynb"
        if not source.is_file():
            raise LabclipError(f"notebook {source} not found; reinstall labclip or run from a checkout (LABCLIP_ROOT)")
        executed = staging / f"{name}.ipynb"
        declared = papermill.inspect_notebook(str(source))
        nb_params = {k: v for k, v in params.items()
                     if k in declared and (k != "title" or name in ("03_lab_report", SCALE_NOTEBOOK))}
        nb_params["output_dir"] = str(staging)
        print(f"labclip: running {name} ...", file=sys.stderr)
        with timings.stage(f"run {name}"):
            try:
                papermill.execute_notebook(str(source), str(executed), parameters=nb_params, kernel_name=kernel,
                                           cwd=str(PROJ_ROOT), progress_bar=False, log_output=False)
            except papermill.PapermillExecutionError as err:
                raise LabclipError(
                    f"notebook {name} failed ({err.ename}: {' '.join(str(err.evalue).split())}); "
                    f"the executed notebook is kept at {executed}; earlier reports in {out_dir} are unchanged"
                ) from None
        stats = staging / f"{name}.json"
        if stats.is_file():
            cache = json.loads(stats.read_text(encoding="utf-8"))["provenance"]["model"]["cache"]
            print(f"labclip: {name}: {cache}", file=sys.stderr)
        with timings.stage(f"html {name}"):
            produced.append(to_html(executed, staging / f"{name}.html"))
        if pdf:
            with timings.stage(f"pdf {name}"):
                produced.append(to_pdf(produced[-1], staging / f"{name}.pdf"))
        produced.append(executed)
    run = {"finished": now(), "parameters": params, "fallback_reason": fallback, "versions": package_versions(),
           "timings_s": {k: round(v, 2) for k, v in timings.items()}}
    (staging / "run.json").write_text(json.dumps(run, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    produced += [staging / "run.json", *sorted(staging.glob("0*.json")), *sorted(staging.glob("*.csv"))]
    published = []
    for path in produced:
        target = out_dir / path.name
        os.replace(path, target)
        published.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    return published


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``labclip report`` (the one parser of the report runner). Unset options keep the
    parameter file's value, then the notebook's default."""
    nb = "default: the notebook's"
    p.add_argument("--params", type=Path, metavar="FILE.yaml",
                   help="YAML file of notebook parameters; the command line overrides it (default: none)")
    p.add_argument("--model", help=f"model id, alias, directory or 'demo' (default: {DEFAULT_MODEL})")
    p.add_argument("--captions", help="caption file (default: data/captions/default.csv)")
    p.add_argument("--image-dir", help="folder the caption file's image paths are relative to (default: data/images)")
    p.add_argument("--langs", nargs="+", help=f"caption languages, e.g. en ru ({nb}: en ru)")
    p.add_argument("--top-k", type=int, help=f"captions listed per image, the k of top-k accuracy ({nb}: 3)")
    p.add_argument("--batch-size", type=int, help="items per forward pass (default: the model's)")
    p.add_argument("--title", help=f"title of the lab report ({nb})")
    p.add_argument("--strict", action="store_true", default=None,
                   help="fail if the model can't be loaded (default: fall back to the demo model)")
    p.add_argument("--compare-models", nargs="+", metavar="MODEL",
                   help=f"models compared with --model in the languages report ({nb})")
    p.add_argument("--translator", help="translation model, e.g. Helsinki-NLP/opus-mt-{lang}-en; 'none' skips "
                   f"translate-then-CLIP ({nb})")
    p.add_argument("--templates", nargs="+", dest="template_sets", metavar="SET",
                   help=f"template sets compared in the zero-shot report ({nb})")
    p.add_argument("--dataset", help="benchmark for the scale report: xtd10, xm3600, a prepared folder or a "
                   "caption file; runs notebook 05_scale only, unless --notebooks says otherwise (default: none)")
    p.add_argument("--reference", help="small caption set placed beside the benchmark in the scale report "
                   "(default: data/captions/short.csv)")
    p.add_argument("--out", type=Path, help="output folder (default: reports/ of the checkout, else ./reports)")
    p.add_argument("--notebooks", nargs="+", choices=(*NOTEBOOKS, SCALE_NOTEBOOK), metavar="NAME",
                   help=f"notebooks to run: {', '.join((*NOTEBOOKS, SCALE_NOTEBOOK))} (default: {', '.join(NOTEBOOKS)}; "
                   f"with --dataset: {SCALE_NOTEBOOK})")
    p.add_argument("--no-pdf", action="store_true", help="HTML only (default: HTML and PDF)")


def read_params(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise LabclipError(f"{path}: unreadable parameter file ({' '.join(str(err).split())})") from None
    unknown = sorted(set(loaded) - set(PARAMETERS))
    if not isinstance(loaded, dict) or unknown:
        raise LabclipError(f"{path}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}")
    return loaded


def run(args: argparse.Namespace) -> int:
    """``labclip report``: build the reports from parsed options; a user error is one line and exit 2."""
    try:
        params = read_params(args.params)
        cli = {"model": args.model, "captions": args.captions, "image_dir": args.image_dir, "languages": args.langs,
               "top_k": args.top_k, "batch_size": args.batch_size, "title": args.title, "strict": args.strict,
               "compare_models": args.compare_models, "template_sets": args.template_sets,
               "translator": "" if args.translator == "none" else args.translator, "dataset": args.dataset,
               "reference": args.reference}
        params.update({k: v for k, v in cli.items() if v is not None})
        dataset = params.get("dataset")
        if dataset and Path(dataset).exists():
            params["dataset"] = str(Path(dataset).resolve())
        for key in ("captions", "image_dir", "reference"):
            if params.get(key):
                params[key] = str(Path(params[key]).resolve())
        start = time.perf_counter()
        out = args.out or REPORTS_DIR
        notebooks = args.notebooks or ([SCALE_NOTEBOOK] if params.get("dataset") else list(NOTEBOOKS))
        published = build_reports(params, out, notebooks, pdf=not args.no_pdf)
    except LabclipError as err:
        print(f"labclip: error: {err}", file=sys.stderr)
        return 2
    for path in published:
        if path.suffix in (".html", ".pdf"):
            print(path)
    print(f"labclip: {len(published)} files written to {out} in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return 0
