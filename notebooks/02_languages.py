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
from labclip.lab import compare, present, runs
from labclip.lab.experiment import MATCHING

exp = runs.start(MATCHING, model, captions=captions, image_dir=image_dir, languages=languages, top_k=top_k,
                 batch_size=batch_size, strict=strict, check_images=check_images, precision=precision,
                 default_for="02_languages")  # check the captions, then load the model
present.title(exp, title, report="CLIP matching across caption languages")

# %%
present.captions(exp, languages)  # the same images, one caption column per language

# %% tags=["remove-cell"]
# The method, as data: the same images matched with each language's captions (exp.matching(lang): encode, cosine,
# labclip.match_metrics); one column of metrics per language. Jupyter shows the DataFrame; the report does not.
metrics = exp.compare(languages)
metrics.round(3)

# %%
present.language_metrics(exp, metrics)  # the table with 95% intervals, bars, McNemar test of the first two languages

# %%
present.published_results(exp, languages)  # published figures for this model and these languages, if any

# %%
present.token_statistics(exp, languages)  # tables.token_stats: how the tokenizer splits each language's captions

# %%
present.heatmaps(exp, languages)  # exp.matching(lang).sim per language, on one colour scale

# %%
others = compare_models if compare_models is not None else compare.default_models(languages)[1:]
table = compare.compare(exp.captions, languages, [exp.model, *others], translator, top_k, precision=precision,
                        default_for="02_languages")
compare.save(table, output_dir)  # comparison.csv, when output_dir is set
present.comparison(exp, table, translator)  # table.table: one row per model, language and strategy

# %%
exp.save(output_dir, "02_languages")  # metrics and provenance as JSON, when output_dir is set
present.provenance(exp)
