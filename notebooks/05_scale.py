# %% [markdown] tags=["remove-cell"]
# **labclip** · Retrieval on a benchmark caption set (XTD10, Crossmodal-3600): Recall@1/5/10 in both directions with 95% intervals, paired tests between languages, strategies and models, and the small bundled set beside it. Change the parameters below.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
languages = ["en", "ru"]  # caption languages; the first is the reference for the paired tests
batch_size = None  # None: the model's default
title = "CLIP retrieval at scale: models, languages and strategies with intervals"
precision = None  # None: this notebook's default, auto (bulk work: bf16 where the hardware runs it faster, else fp32); or "fp32", "bf16", "fp16"
strict = False  # True: fail when a model can't be loaded instead of using the demo model
compare_models = None  # evaluated beside the model above (None: the default models that support every language)
translator = None  # e.g. "Helsinki-NLP/opus-mt-{lang}-en": adds the translate-then-CLIP strategy
dataset = "xtd10"  # "xtd10", "xm3600", a prepared benchmark folder or a caption file
reference = None  # the small caption set placed beside the benchmark (None: data/captions/short.csv)
output_dir = None  # folder for the results and provenance JSON (None: not written)

# %%
from labclip.lab import compare, runs, scale

others = compare_models if compare_models is not None else compare.default_models(languages)[1:]
run = runs.start(scale.SCALE, [model, *others], dataset=dataset, languages=languages, translator=translator,
                 batch_size=batch_size, strict=strict, precision=precision,
                 default_for="05_scale")
results = run.evaluate(reference or scale.REFERENCE_CAPTIONS)  # recall@1/5/10 with 95% intervals, a DataFrame
scale.title(run, title, report="CLIP retrieval at scale: models, languages and strategies with intervals")

# %%
scale.published(run)  # published figures for the same question, marked as not measured here

# %%
scale.results_section(run)  # one table per direction: model · language · strategy

# %%
fig = scale.recall_figure(run)  # each recall with its 95% error bar, a Figure
scale.recall_section(fig)

# %%
tests = run.paired_tests()  # exact McNemar tests between languages, strategies and models, a DataFrame
scale.tests_section(run, tests)

# %%
scale.tests_summary(run, tests)

# %%
scale.reference_beside(run)  # the small bundled set beside the benchmark

# %%
scale.heatmap(run)  # the first model and language

# %%
record = scale.save(run, output_dir)  # results, paired tests and provenance; a JSON file when output_dir is set
scale.provenance(run, record)
