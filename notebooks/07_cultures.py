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
from labclip.lab import cultures

run = cultures.start(dataset, [model, *(compare_models or [])], languages, batch_size, strict,
                     precision, default_for="07_cultures")
run.evaluate()
cultures.title(run, title, report="Cross-cultural retrieval: every region's images in every language, with intervals")

# %%
cultures.heatmap(run)

# %%
cultures.heatmap(run, scope="region")

# %%
cultures.ranked(run)

# %%
tests = cultures.own_culture_section(run)

# %%
model_tests = cultures.model_tests_section(run)  # per-region McNemar, Holm-adjusted

# %%
cultures.culture_specific_section(run)

# %%
saved = cultures.save(run, output_dir, tests)  # results and provenance JSON
