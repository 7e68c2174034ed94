"""Write notebooks/*.ipynb from the cell sources below (no outputs), so the Colab cell and the
parameters are defined once. Run it after editing; a test checks the notebooks are up to date."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from labclip.config import DEFAULT_MODEL, REPO_URL  # noqa: E402
from labclip.precision import DEFAULTS  # noqa: E402
from labclip.translate import DEFAULT_TRANSLATOR  # noqa: E402

COLAB = f'''# Colab: install labclip (and fetch its data) unless `import labclip` gives the installed package; elsewhere
# this does nothing. Safe to run again, after a restart or an interrupted install.
import importlib, os, subprocess, sys
try:
    import labclip  # a clone folder named labclip/ imports as an empty namespace package: no file, no API
    installed = getattr(labclip, "__file__", None) is not None and hasattr(labclip, "match_metrics")
except Exception:  # not installed, or an install that broke half-way
    installed = False
if not installed:
    if not os.path.isfile("labclip/pyproject.toml"):
        subprocess.run(["git", "clone", "--depth=1", "{REPO_URL}", "labclip"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./labclip[report]"], check=True)
    for name in [m for m in sys.modules if m == "labclip" or m.startswith("labclip.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    import labclip
if os.path.isfile("labclip/pyproject.toml"):
    os.environ["LABCLIP_ROOT"] = os.path.abspath("labclip")'''


def precision_line(notebook: str) -> str:
    """The notebook's ``precision`` parameter: ``None``, this notebook's default from the one table
    (``labclip.precision.DEFAULTS``), recorded as the default rather than as requested."""
    if DEFAULTS[notebook] == "fp32":
        return 'precision = None  # None: this notebook\'s default, fp32 (exact numbers, read one by one); or "auto" ' \
               '(bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"'
    return 'precision = None  # None: this notebook\'s default, auto (bulk work: bf16 where the hardware runs it ' \
           'faster, else fp32); or "fp32", "bf16", "fp16"'


def parameters(name: str, title: str, compare: bool = False) -> str:
    extra = (f'''
compare_models = None  # compared with the model above (None: the default models that support every language)
translator = "{DEFAULT_TRANSLATOR}"  # translate-then-CLIP; None: skip''' if compare else "")
    return f'''model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption file (None: data/captions/default.csv)
image_dir = None  # folder the relative image paths are resolved against (None: the caption file's folder)
languages = ["en", "ru"]  # caption columns to use (the matching notebook uses the first)
top_k = 3
batch_size = None  # None: the model's default
{precision_line(name)}
title = "{title}"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
check_images = True  # False: skip decoding every image (the report runner has already checked them once)
output_dir = None  # folder for metrics and provenance JSON (None: not written)''' + extra


ZEROSHOT_PARAMETERS = f'''model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
labels = None  # labelled images (None: data/labels.csv): a CSV (image plus one label column per language) or a folder of class folders
languages = ["en"]  # the first is the template and label language (English where the labels or templates lack it)
template_sets = ["single", "imagenet7", "imagenet80"]  # compared; the last one is used for the top-k bars
top_k = 5
{precision_line("04_zeroshot")}
title = "Zero-shot classification with prompt templates"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
output_dir = None  # folder for the provenance JSON (None: not written)'''

START = ("from labclip.lab import experiment, present\n\n"
         "exp = experiment.start(model, captions, image_dir, languages, top_k, batch_size, strict,  "
         "# check the captions, load the model\n"
         "                       check_images=check_images, precision=precision, default_for=\"{name}\")\n"
         "present.title(exp, title)")

ADAPT_METHOD = '''# The method: a ridge-regularised linear map from one language's caption embeddings to the other's.
src, tgt = run.source_emb, run.target_emb  # the model's unit text embeddings, one caption per image
fitted = fit_text_adapter(src, tgt, alpha=alpha)  # W, b minimising |src W + b - tgt|^2 + alpha |W|^2
mapped = fitted.transform(src)  # src W + b, each row scaled to length 1
cosine = (mapped * tgt).sum(axis=1)  # cosine of each mapped caption to its counterpart
show.method(run, fitted, cosine)'''

MATCHING_START = ("from labclip import match_metrics, similarity\n"
                  "from labclip.lab import experiment, present\n\n"
                  "exp = experiment.start(model, captions, image_dir, languages, top_k, batch_size, strict,\n"
                  "                       check_images=check_images, precision=precision, default_for=\"01_matching\")\n"
                  "present.title(exp, title)")

METHOD_TEXT = """### The method, in code you can change

`exp.model` is what `labclip.load_model(model)` returned (or the untrained demo model when that model could not be \
loaded); `exp.captions` is `labclip.load_captions(captions)`: caption *i* describes image *i*. CLIP embeds both into \
one space; the cosine similarity of image *i* and caption *j* says how well they match; `match_metrics` asks, for \
every image, whether its own caption scores highest (image → text) and, for every caption, whether its own image \
does (text → image). Change a line (another language, another `k`, your own captions) and run the cells again."""

METHOD = """clip, pairs, language = exp.model, exp.captions, languages[0]
with exp.timings.stage("encode, compare, score"):
    image_emb = clip.encode_images(pairs["path"])       # one unit vector per image
    text_emb = clip.encode_texts(pairs[language])       # one unit vector per caption
    sim = similarity(image_emb, text_emb)               # sim[i, j]: cosine of image i and caption j
    metrics = match_metrics(sim, k=top_k, logit_scale=clip.logit_scale)
m = exp.record(language, sim, metrics)                  # the tables and figures below show it"""

SAVE = 'exp.save(output_dir, "{name}")  # metrics and provenance as JSON, when output_dir is set\npresent.provenance(exp)'

NOTEBOOKS = {
    "01_matching": ("CLIP image–text matching", [
        "present.heatmap(exp, m)       # plots.similarity_heatmap(sim, images, captions)",
        "present.topk(m)               # tables.topk_table: the k best captions per image",
        "present.distributions(m)      # correct vs wrong cosine, narrative.results",
        "present.accuracy(m)           # metrics.i2t and metrics.t2i",
        "present.distractors(m)        # tables.frequent_distractors",
        SAVE.format(name="01_matching"),
    ]),
    "02_languages": ("CLIP matching across caption languages", [
        "present.languages(exp, languages)  # exp.matching(lang) per language, token statistics",
        "from labclip.lab import compare\n\n"
        "others = compare_models if compare_models is not None else compare.default_models(languages)[1:]\n"
        "table = compare.compare(exp.captions, languages, [exp.model, *others], translator, top_k, precision=precision,\n"
        "                        default_for=\"02_languages\")\n"
        "compare.save(table, output_dir)  # comparison.csv, when output_dir is set\n"
        "present.comparison(exp, table, translator)",
        SAVE.format(name="02_languages"),
    ]),
    "03_lab_report": ("Lab report: matching images and captions with CLIP", [
        "present.lab_report(exp, languages)  # narrative.abstract, method, results, discussion, limitations",
        SAVE.format(name="03_lab_report"),
    ]),
    "04_zeroshot": ("Zero-shot classification with prompt templates", [
        "present.zeroshot_predictions(run, template_sets[-1], top_k)  # zeroshot.class_embeddings + probabilities",
        "present.template_comparison(run, template_sets, top_k);  # run.compare: metrics.zeroshot_metrics per set",
        SAVE.format(name="04_zeroshot").replace("exp.", "run.").replace("(exp)", "(run)"),
    ]),
    "06_adapt": ("Adapters: Russian captions and new labels on a CPU, scored on held-out images", [
        ADAPT_METHOD,
        "show.held_out(run)",
        "show.alpha_curve(run)",
        "show.overfitting(run)",
        "few = adapt.run_few_shot(run.model, labels, shots, folds=folds, seed=seed, batch_size=batch_size,\n"
        "                         requested_model=model)\nshow.few_shot(few)",
        "show.published()",
        'show.provenance(run, few, output_dir, "06_adapt");',
    ]),
    "05_scale": ("CLIP retrieval at scale", [
        "scale.results_table(run);",
        "scale.recall_plot(run)",
        "scale.tests_section(run);",
        "scale.reference_beside(run)",
        "scale.heatmap(run)",
        "scale.save(run, output_dir);",
    ]),
    "07_cultures": ("Cross-cultural retrieval", [
        "cultures.heatmap(run)",
        "cultures.heatmap(run, scope=\"region\")",
        "cultures.ranked(run)",
        "tests = cultures.own_culture_section(run)",
        "cultures.model_tests_section(run);",
        "cultures.culture_specific_section(run)",
        "cultures.save(run, output_dir, tests);",
    ]),
}

SCALE_PARAMETERS = f'''dataset = "xtd10"  # "xtd10", "xm3600", a prepared benchmark folder or a caption file
model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
compare_models = None  # evaluated beside the model above (None: the default models that support every language)
languages = ["en", "ru"]  # caption languages; the first is the reference for the paired tests
translator = None  # e.g. "{DEFAULT_TRANSLATOR}": adds the translate-then-CLIP strategy
reference = None  # the small caption set placed beside the benchmark (None: data/captions/short.csv)
batch_size = None  # None: the model's default
{precision_line("05_scale")}
title = "CLIP retrieval at scale: models, languages and strategies with intervals"
strict = False  # True: fail when a model can't be loaded instead of using the demo model
output_dir = None  # folder for the results and provenance JSON (None: not written)'''

SCALE_START = ("from labclip.lab import compare, scale\n\n"
               "others = compare_models if compare_models is not None else compare.default_models(languages)[1:]\n"
               "run = scale.start(dataset, [model, *others], languages, translator, batch_size, strict, precision,\n"
               "                  default_for=\"05_scale\")\n"
               "run.evaluate(reference or scale.REFERENCE_CAPTIONS)\n"
               "scale.title(run, title)\n"
               "scale.published(run)")

CULTURES_PARAMETERS = f'''dataset = "xm3600"  # "xm3600", a prepared folder, or a caption file with a region column
model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
compare_models = None  # evaluated beside the model above, region by region (None: none)
languages = None  # caption languages (None: all of the set's)
batch_size = None  # None: the model's default
{precision_line("07_cultures")}
title = "Cross-cultural retrieval: every region's images in every language, with intervals"
strict = False  # True: fail when a model can't be loaded instead of using the demo model
output_dir = None  # folder for the results and provenance JSON (None: not written)'''

CULTURES_START = ("from labclip.lab import cultures\n\n"
                  "run = cultures.start(dataset, [model, *(compare_models or [])], languages, batch_size, strict,\n"
                  "                     precision, default_for=\"07_cultures\")\n"
                  "run.evaluate()\n"
                  "cultures.title(run, title)")

ZEROSHOT_START = ("from labclip.lab import experiment, present\n\n"
                  "run = experiment.start(model, languages=languages, strict=strict, labels=labels, task=\"zeroshot\",\n"
                  "                       precision=precision, default_for=\"04_zeroshot\", template_sets=template_sets)\n"
                  "present.zeroshot_title(run, title)")

ADAPT_PARAMETERS = f'''model = "{DEFAULT_MODEL}"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption set with both languages (None: data/captions/default.csv)
image_dir = None  # folder the image paths are relative to (None: data/images)
source_lang = "ru"  # captions to adapt
target_lang = "en"  # captions they are mapped onto
folds = 5  # folds over images, or "loo"
alpha = None  # ridge penalty; None: chosen by cross-validation inside each training fold
seed = 0
labels = None  # labelled images for the few-shot section (None: data/labels.csv)
shots = [1, 2, 4, 8, 16]
batch_size = None  # None: the model's default
{precision_line("06_adapt")}
title = "Adapters: Russian captions and new labels on a CPU, scored on held-out images"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
output_dir = None  # folder for the results and provenance JSON (None: not written)'''

ADAPT_START = ("from labclip.adapt import fit_text_adapter\n"
               "from labclip.lab import adapt, adapt_present as show\n\n"
               "run = adapt.start(model, captions, source_lang, target_lang, strict=strict, image_dir=image_dir,\n"
               "                  folds=folds, alpha=alpha, seed=seed, batch_size=batch_size,\n"
               "                  precision=precision, default_for=\"06_adapt\")\n"
               "show.title(run, title)")

PARAMETER_CELLS = {"04_zeroshot": ZEROSHOT_PARAMETERS, "05_scale": SCALE_PARAMETERS, "06_adapt": ADAPT_PARAMETERS,
                   "07_cultures": CULTURES_PARAMETERS}
START_CELLS = {"04_zeroshot": ZEROSHOT_START, "05_scale": SCALE_START, "06_adapt": ADAPT_START,
               "07_cultures": CULTURES_START}

INTRO = {
    "01_matching": "One model, one caption language: the method in a few lines of code, then the similarity "
                   "heatmap, top-k captions, correct-vs-wrong similarities, accuracy in both directions and "
                   "frequent distractors.",
    "02_languages": "The same images captioned in several languages, compared side by side.",
    "03_lab_report": "The full lab write-up; every number in the prose is computed in this run.",
    "04_zeroshot": "Zero-shot classification: top-5 label probabilities per image and a single template vs "
                   "prompt ensembles on a small labelled set.",
    "06_adapt": "Adapters that fit on a CPU in seconds: a linear text adapter (Russian captions onto English "
                "ones) and few-shot linear probe / Tip-Adapter, every number scored on held-out images.",
    "05_scale": "Retrieval on a benchmark caption set (XTD10, Crossmodal-3600): Recall@1/5/10 in both directions "
                "with 95% intervals, paired tests between languages, strategies and models, and the small "
                "bundled set beside it.",
    "07_cultures": "Retrieval per image region and caption language (Crossmodal-3600's locales, or a set's region "
                   "column), in the whole set and within each region, with intervals, the regions ranked, a test "
                   "of the own-culture advantage and model comparisons per region.",
}


def build(name: str) -> nbformat.NotebookNode:
    title, sections = NOTEBOOKS[name]
    teaching = name == "01_matching"
    advice = "Change the parameters below, and the method cell." if teaching else "Change the parameters below."
    params = PARAMETER_CELLS.get(name) or parameters(name, title, name == "02_languages")
    # The report's own name stays under a title the user gives (report text is English whatever the title).
    own = re.search(r'^title = "(.*)"', params, flags=re.M).group(1)
    start = re.sub(r"title\((\w+), title\)", lambda m: f"title({m.group(1)}, title, report={own!r})",
                   START_CELLS.get(name) or (MATCHING_START if teaching else START.format(name=name)))
    method = [new_markdown_cell(METHOD_TEXT, metadata={"tags": ["remove-cell"]}), new_code_cell(METHOD)] \
        if teaching else []
    cells = [
        new_markdown_cell(f"**labclip** · {INTRO[name]} {advice} Tables and figures come from `labclip.lab`.",
                          metadata={"tags": ["remove-cell"]}),
        new_code_cell(COLAB, metadata={"tags": ["remove-cell"]}),
        new_code_cell(params, metadata={"tags": ["parameters"]}),
        new_code_cell(start),
        *method,
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
