# %% [markdown] tags=["remove-cell"]
# **labclip** · The same images captioned in several languages, compared side by side. Change the parameters below.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption file (None: data/captions/default.csv)
image_dir = None  # folder the relative image paths are resolved against (None: the caption file's folder)
languages = ["en", "ru"]  # caption columns to use (the matching notebook uses the first)
top_k = 3
batch_size = None  # None: the model's default
title = "CLIP matching across caption languages"
precision = None  # None: this notebook's default, fp32 (exact numbers, read one by one); or "auto" (bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
compare_models = None  # compared with the model above (None: the default models that support every language)
translator = "Helsinki-NLP/opus-mt-{lang}-en"  # translate-then-CLIP; None: skip
check_images = True  # False: skip decoding every image (the report runner has already checked them once)
output_dir = None  # folder for metrics and provenance JSON (None: not written)

# %%
from labclip.lab import experiment, present

exp = experiment.start(model, captions, image_dir, languages, top_k, batch_size, strict,  # check the captions, load the model
                       check_images=check_images, precision=precision, default_for="02_languages")
present.title(exp, title, report="CLIP matching across caption languages")

# %% tags=["remove-cell"]
# The method, as data: the same images matched with each language's captions (exp.matching(lang): encode, cosine,
# labclip.match_metrics); one column of metrics per language. Jupyter shows the DataFrame; the report does not.
exp.compare(languages)

# %%
present.languages(exp, languages)  # exp.matching(lang) per language, token statistics

# %%
from labclip.lab import compare

others = compare_models if compare_models is not None else compare.default_models(languages)[1:]
table = compare.compare(exp.captions, languages, [exp.model, *others], translator, top_k, precision=precision,
                        default_for="02_languages")
compare.save(table, output_dir)  # comparison.csv, when output_dir is set
present.comparison(exp, table, translator)

# %%
exp.save(output_dir, "02_languages")  # metrics and provenance as JSON, when output_dir is set
present.provenance(exp)
