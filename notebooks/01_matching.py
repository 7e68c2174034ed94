# %% [markdown] tags=["remove-cell"]
# **labclip** · One model, one caption language: the method in a few lines of code, then the similarity heatmap, top-k captions, correct-vs-wrong similarities, accuracy in both directions and frequent distractors. Change the parameters below, and the method cell.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption file (None: data/captions/default.csv)
image_dir = None  # folder the relative image paths are resolved against (None: the caption file's folder)
languages = ["en", "ru"]  # caption columns to use (the matching notebook uses the first)
top_k = 3
batch_size = None  # None: the model's default
title = "CLIP image–text matching"
precision = None  # None: this notebook's default, fp32 (exact numbers, read one by one); or "auto" (bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
check_images = True  # False: skip decoding every image (the report runner has already checked them once)
output_dir = None  # folder for metrics and provenance JSON (None: not written)

# %%
from labclip import match_metrics, similarity
from labclip.lab import present, runs
from labclip.lab.experiment import MATCHING

exp = runs.start(MATCHING, model, captions=captions, image_dir=image_dir, languages=languages, top_k=top_k,
                 batch_size=batch_size, strict=strict, check_images=check_images, precision=precision,
                 default_for="01_matching")  # check the captions, then load the model
present.title(exp, title, report="CLIP image–text matching")

# %% [markdown] tags=["remove-cell"]
# ### The method, in code you can change
#
# `exp.model` is what `labclip.load_model(model)` returned (or the untrained demo model when that model could not be loaded); `exp.captions` is `labclip.load_captions(captions)`: caption *i* describes image *i*. CLIP embeds both into one space; the cosine similarity of image *i* and caption *j* says how well they match; `match_metrics` asks, for every image, whether its own caption scores highest (image → text) and, for every caption, whether its own image does (text → image). Change a line (another language, another `k`, your own captions) and run the cells again.

# %%
clip, pairs, language = exp.model, exp.captions, languages[0]
with exp.timings.stage("encode, compare, score"):
    image_emb = clip.encode_images(pairs["path"])       # one unit vector per image
    text_emb = clip.encode_texts(pairs[language])       # one unit vector per caption
    sim = similarity(image_emb, text_emb)               # sim[i, j]: cosine of image i and caption j
    metrics = match_metrics(sim, k=top_k, logit_scale=clip.logit_scale)
m = exp.record(language, sim, metrics)                  # the tables and figures below show it

# %% tags=["remove-cell"]
# What the sections below are drawn from, as data (Jupyter shows it; the report does not).
m.topk.head(2 * top_k)                                  # the k best captions per image: cosine, probability, correct?

# %%
present.heatmap(exp, m)       # plots.similarity_heatmap(m.sim, images, captions), with its caption

# %%
present.topk(m)               # m.topk: the k best captions per image

# %%
present.distributions(m)      # correct vs wrong cosine, with narrative.results(m)

# %%
present.accuracy(m)           # m.metrics.i2t and m.metrics.t2i, with their intervals

# %%
present.distractors(m)        # m.distractors: wrong captions that enter many top-k lists

# %%
exp.save(output_dir, "01_matching")  # metrics and provenance as JSON, when output_dir is set
present.provenance(exp)
