"""Write notebooks/*.ipynb from the cell sources below (no outputs), so the Colab cell and the
parameters are defined once. Run it after editing; a test checks the notebooks are up to date."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from labclip.config import DEFAULT_MODEL, REPO_URL  # noqa: E402
from labclip.translate import DEFAULT_TRANSLATOR  # noqa: E402

COLAB = f'''# Colab: fetch labclip and its data when the package is missing; elsewhere this does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("labclip") is None:
    if not os.path.isdir("labclip"):
        subprocess.run(["git", "clone", "--depth=1", "{REPO_URL}", "labclip"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./labclip[report]"], check=True)
    os.environ["LABCLIP_ROOT"] = os.path.abspath("labclip")'''


COMPARE = ["sentence-transformers/clip-ViT-B-32-multilingual-v1", "M-CLIP/XLM-Roberta-Large-Vit-B-32", "BAAI/AltCLIP"]


def parameters(title: str, compare: bool = False) -> str:
    extra = (f'''
compare_models = {COMPARE!r}  # compared with the model above
translator = "{DEFAULT_TRANSLATOR}"  # translate-then-CLIP; None: skip''' if compare else "")
    return f'''model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption file (None: data/captions/default.csv)
image_dir = None  # folder the image paths are relative to (None: data/images)
languages = ["en", "ru"]  # caption columns to use (the matching notebook uses the first)
top_k = 3
batch_size = None  # None: the model's default
title = "{title}"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
check_images = True  # False: skip decoding every image (the report runner has already checked them once)
output_dir = None  # folder for metrics and provenance JSON (None: not written)''' + extra


ZEROSHOT_PARAMETERS = f'''model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
labels = None  # labelled images: a CSV (image plus one label column per language) or a folder of class folders
languages = ["en"]  # the first is the template and label language
template_sets = ["single", "imagenet7", "imagenet80"]  # compared; the last one is used for the top-k bars
top_k = 5
title = "Zero-shot classification with prompt templates"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
output_dir = None  # folder for the provenance JSON (None: not written)'''

START = ("from labclip import experiment, present\n\n"
         "exp = experiment.start(model, captions, image_dir, languages, top_k, batch_size, strict,\n"
         "                       check_images=check_images)\n"
         "present.title(exp, title)")

NOTEBOOKS = {
    "01_matching": ("CLIP image–text matching", [
        "m = exp.matching(languages[0])\npresent.heatmap(exp, m)",
        "present.topk(m)",
        "present.distributions(m)",
        "present.accuracy(m)",
        "present.distractors(m)",
        'present.provenance(exp, output_dir, "01_matching");',
    ]),
    "02_languages": ("CLIP matching across caption languages", [
        "present.languages(exp, languages)",
        "present.comparison(exp, languages, compare_models, translator, output_dir);",
        'present.provenance(exp, output_dir, "02_languages");',
    ]),
    "03_lab_report": ("Lab report: matching images and captions with CLIP", [
        "present.lab_report(exp, languages)",
        'present.provenance(exp, output_dir, "03_lab_report");',
    ]),
    "04_zeroshot": ("Zero-shot classification with prompt templates", [
        "present.zeroshot_predictions(run, template_sets[-1], top_k)",
        "present.template_comparison(run, template_sets, top_k);",
        "present.zeroshot_provenance(run, output_dir);",
    ]),
    "05_scale": ("CLIP retrieval at scale", [
        "scale.results_table(run);",
        "scale.recall_plot(run)",
        "scale.tests_section(run);",
        "scale.reference_beside(run)",
        "scale.heatmap(run)",
        "scale.save(run, output_dir);",
    ]),
}

SCALE_PARAMETERS = f'''dataset = "xtd10"  # "xtd10", "xm3600", a prepared benchmark folder or a caption file
model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
compare_models = {COMPARE[:1]!r}  # evaluated beside the model above
languages = ["en", "ru"]  # caption languages; the first is the reference for the paired tests
translator = None  # e.g. "{DEFAULT_TRANSLATOR}": adds the translate-then-CLIP strategy
reference = None  # the small caption set placed beside the benchmark (None: data/captions/short.csv)
batch_size = None  # None: the model's default
title = "CLIP retrieval at scale: models, languages and strategies with intervals"
strict = False  # True: fail when a model can't be loaded instead of using the demo model
output_dir = None  # folder for the results and provenance JSON (None: not written)'''

SCALE_START = ("from labclip.lab import scale\n\n"
               "run = scale.start(dataset, [model, *(compare_models or [])], languages, translator, batch_size, strict)\n"
               "run.evaluate(reference or scale.REFERENCE_CAPTIONS)\n"
               "scale.title(run, title)\n"
               "scale.published(run)")

ZEROSHOT_START = ("from labclip import present, zeroshot\n\n"
                  "run = zeroshot.start(model, labels, languages[0], strict)\n"
                  "present.zeroshot_title(run, title)")

INTRO = {
    "01_matching": "One model, one caption language: similarity heatmap, top-k captions, correct-vs-wrong "
                   "similarities, accuracy in both directions and frequent distractors.",
    "02_languages": "The same images captioned in several languages, compared side by side.",
    "03_lab_report": "The full lab write-up; every number in the prose is computed in this run.",
    "04_zeroshot": "Zero-shot classification: top-5 label probabilities per image and a single template vs "
                   "prompt ensembles on a small labelled set.",
    "05_scale": "Retrieval on a benchmark caption set (XTD10, Crossmodal-3600): Recall@1/5/10 in both directions "
                "with 95% intervals, paired tests between languages, strategies and models, and the small "
                "bundled set beside it.",
}
PARAMETERS = {"04_zeroshot": ZEROSHOT_PARAMETERS, "05_scale": SCALE_PARAMETERS}
STARTS = {"04_zeroshot": ZEROSHOT_START, "05_scale": SCALE_START}


def build(name: str) -> nbformat.NotebookNode:
    title, sections = NOTEBOOKS[name]
    cells = [
        new_markdown_cell(f"**labclip** · {INTRO[name]} Change the parameters below, never the code.",
                          metadata={"tags": ["remove-cell"]}),
        new_code_cell(COLAB, metadata={"tags": ["remove-cell"]}),
        new_code_cell(PARAMETERS.get(name) or parameters(title, name == "02_languages"),
                      metadata={"tags": ["parameters"]}),
        new_code_cell(STARTS.get(name, START)),
        *[new_code_cell(source) for source in sections],
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    })
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i}"
    return nb


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name in NOTEBOOKS:
        nbformat.write(build(name), out / f"{name}.ipynb")
        print(f"notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
