# %% [markdown] tags=["remove-cell"]
# **labclip** · The full lab write-up; every number in the prose is computed in this run. Change the parameters below.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption file (None: data/captions/default.csv)
image_dir = None  # folder the relative image paths are resolved against (None: the caption file's folder)
languages = ["en", "ru"]  # caption columns to use (the matching notebook uses the first)
top_k = 3
batch_size = None  # None: the model's default
title = "Lab report: matching images and captions with CLIP"
precision = None  # None: this notebook's default, fp32 (exact numbers, read one by one); or "auto" (bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
check_images = True  # False: skip decoding every image (the report runner has already checked them once)
output_dir = None  # folder for metrics and provenance JSON (None: not written)

# %%
from labclip.lab import narrative, present, runs
from labclip.lab.experiment import MATCHING

exp = runs.start(MATCHING, model, captions=captions, image_dir=image_dir, languages=languages, top_k=top_k,
                 batch_size=batch_size, strict=strict, check_images=check_images, precision=precision,
                 default_for="03_lab_report")  # check the captions, then load the model
present.title(exp, title, report="Lab report: matching images and captions with CLIP")

# %%
metrics = exp.compare(languages)  # exp.matching(lang) per language: encode, cosine, labclip.match_metrics
present.Section("Abstract", narrative.abstract(exp, languages))  # every number in the prose is from this run

# %%
present.Section("Method", narrative.method(exp))

# %%
present.results(exp, languages)  # narrative.results(exp.matching(lang)) per language

# %%
first = exp.matching(languages[0])
present.heatmap(exp, first, present.similarity_range(exp, languages))  # on the colour scale of all languages

# %%
present.topk(first)  # first.topk: the k best captions per image

# %%
compared = len(languages) > 1  # the lab report sets the languages side by side when there are several
present.language_metrics(exp, metrics, heading="Languages compared", level=3, paired=False) if compared else None

# %%
present.Section("Discussion", narrative.discussion(exp, languages))

# %%
present.published_results(exp, languages)  # published figures for this model and these languages, if any

# %%
present.Section("Limitations", narrative.limitations(exp))

# %%
exp.save(output_dir, "03_lab_report")  # metrics and provenance as JSON, when output_dir is set
present.provenance(exp)
