# %% [markdown] tags=["remove-cell"]
# **labclip** · Zero-shot classification: top-5 label probabilities per image and a single template vs prompt ensembles on a small labelled set. Change the parameters below.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
labels = None  # labelled images (None: data/labels.csv): a CSV (image plus one label column per language) or a folder of class folders
languages = ["en"]  # the first is the template and label language (English where the labels or templates lack it)
top_k = 5
title = "Zero-shot classification with prompt templates"
precision = None  # None: this notebook's default, fp32 (exact numbers, read one by one); or "auto" (bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
template_sets = ["single", "imagenet7", "imagenet80"]  # compared; the last one is used for the top-k bars
output_dir = None  # folder for the provenance JSON (None: not written)

# %%
from labclip import zeroshot
from labclip.lab import present, runs
from labclip.lab.experiment import ZEROSHOT

run = runs.start(ZEROSHOT, model, languages=languages, strict=strict, labels=labels, precision=precision,
                 default_for="04_zeroshot", template_sets=template_sets)  # check the labels, then load the model
present.zeroshot_title(run, title, report="Zero-shot classification with prompt templates")

# %%
prompts = zeroshot.load_templates(template_sets[-1], run.language)  # e.g. "a photo of a {}."
probs = run.probabilities(prompts)  # each class name under every prompt, averaged; images × classes probabilities
present.zeroshot_predictions(run, probs, template_sets[-1], top_k)

# %%
usable = zeroshot.available_sets(template_sets, run.language)  # the sets with a version in this language
scores = run.compare(usable, top_k)  # metrics.zeroshot_metrics per template set: one row each
present.template_comparison(run, scores, top_k, requested=template_sets)

# %% tags=["remove-cell"]
scores.round(3)  # the figures behind the table above, as data (Jupyter shows it; the report does not)

# %%
run.save(output_dir, "04_zeroshot")  # metrics and provenance as JSON, when output_dir is set
present.provenance(run)
