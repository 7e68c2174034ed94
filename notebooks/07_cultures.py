# %% [markdown] tags=["remove-cell"]
# **labclip** · Retrieval per image region and caption language (Crossmodal-3600's locales, or a set's region column), in the whole set and within each region, with intervals, the regions ranked, a test of the own-culture advantage and model comparisons per region. Change the parameters below.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
languages = None  # caption languages (None: all of the set's)
batch_size = None  # None: the model's default
title = "Cross-cultural retrieval: every region's images in every language, with intervals"
precision = None  # None: this notebook's default, auto (bulk work: bf16 where the hardware runs it faster, else fp32); or "fp32", "bf16", "fp16"
strict = False  # True: fail when a model can't be loaded instead of using the demo model
compare_models = None  # evaluated beside the model above, region by region (None: none)
dataset = "xm3600"  # "xm3600", a prepared folder, or a caption file with a region column
output_dir = None  # folder for the results and provenance JSON (None: not written)

# %%
from labclip.lab import cultures, runs

run = runs.start(cultures.CULTURES, [model, *(compare_models or [])], dataset=dataset, languages=languages,
                 batch_size=batch_size, strict=strict, precision=precision,
                 default_for="07_cultures")
results = run.evaluate()  # recall per model, language and region, whole set and within region, a DataFrame
cultures.title(run, title, report="Cross-cultural retrieval: every region's images in every language, with intervals")

# %%
cultures.heatmap(run)  # every caption against every image of the set

# %%
cultures.heatmap(run, scope="region")  # every caption against its own region's images

# %%
cultures.ranked(run)  # regions from worst to best, and whether they differ more than chance

# %%
tests = {label: run.own_culture(label) for label in run.results}  # the own-culture permutation test per model
cultures.own_culture_section(run, tests)

# %%
model_tests = run.model_tests()  # per-region McNemar against the first model, Holm-adjusted, a DataFrame
cultures.model_tests_section(model_tests)

# %%
cultures.culture_specific_section(run)

# %%
record = cultures.save(run, output_dir, tests)  # results, tests and provenance; a JSON file when output_dir is set
cultures.provenance(run, record)
