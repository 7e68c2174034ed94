# %% [markdown] tags=["remove-cell"]
# **labclip** · Adapters that fit on a CPU in seconds: a linear text adapter (Russian captions onto English ones) and few-shot linear probe / Tip-Adapter, every number scored on held-out images. Change the parameters below.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption set with both languages (None: data/captions/default.csv)
image_dir = None  # folder the image paths are relative to (None: data/images)
labels = None  # labelled images for the few-shot section (None: data/labels.csv)
batch_size = None  # None: the model's default
title = "Adapters: Russian captions and new labels on a CPU, scored on held-out images"
precision = None  # None: this notebook's default, fp32 (exact numbers, read one by one); or "auto" (bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
source_lang = "ru"  # captions to adapt
target_lang = "en"  # captions they are mapped onto
folds = 5  # folds over images, or "loo"
alpha = None  # ridge penalty; None: chosen by cross-validation inside each training fold
seed = 0
shots = [1, 2, 4, 8, 16]
output_dir = None  # folder for the results and provenance JSON (None: not written)

# %%
from labclip.adapt import fit_text_adapter
from labclip.lab import adapt, runs
from labclip.lab import adapt_present as show

run = runs.start(adapt.TEXT_ADAPTER, model, captions=captions, image_dir=image_dir, source_lang=source_lang,
                 target_lang=target_lang, folds=folds, alpha=alpha, seed=seed, batch_size=batch_size, strict=strict,
                 precision=precision, default_for="06_adapt")
show.title(run, title, report="Adapters: Russian captions and new labels on a CPU, scored on held-out images")

# %%
# The method: a ridge-regularised linear map from one language's caption embeddings to the other's.
src, tgt = run.source_emb, run.target_emb  # the model's unit text embeddings, one caption per image
fitted = fit_text_adapter(src, tgt, alpha=alpha)  # W, b minimising |src W + b - tgt|^2 + alpha |W|^2
mapped = fitted.transform(src)  # src W + b, each row scaled to length 1
cosine = (mapped * tgt).sum(axis=1)  # cosine of each mapped caption to its counterpart
show.method(run, fitted, cosine)

# %%
scores = run.scores()  # top-1 per direction before / after (held out) / target, with 95% Wilson intervals
show.held_out(run, scores)

# %%
show.alpha_curve(run)  # the inner cross-validation over alpha

# %%
show.overfitting(run)  # the final adapter on its own training images against the held-out scores

# %%
few = adapt.run_few_shot(run.model, labels, shots, folds=folds, seed=seed, batch_size=batch_size,
                         requested_model=model)
show.few_shot(few)  # linear probe and Tip-Adapter against zero-shot, each image scored out of fold

# %%
show.published()

# %%
record = show.save(run, few, output_dir)  # results and provenance; a JSON file when output_dir is set
show.provenance(run, record, few)
