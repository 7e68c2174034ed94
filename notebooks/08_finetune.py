# %% [markdown] tags=["remove-cell"]
# **labclip** · Fine-tuning the text tower with CLIP's own contrastive loss, the image tower locked (LiT), on a
# CPU: the loss going down, and what it buys on images it never saw, against zero-shot and the ridge text
# adapter. Change the parameters below. Tables and figures come from `labclip.lab`.

# %% tags=["parameters"]
model = "openai/clip-vit-base-patch32"  # hub id, OpenAI alias (ViT-B/32), local directory, or "demo"
captions = None  # caption set (None: data/captions/default.csv)
image_dir = None  # folder the relative image paths are resolved against (None: the caption file's folder)
languages = None  # the first is the caption language fine-tuned on (None: ru)
title = "Fine-tuning the text tower on a CPU, scored on held-out images"
precision = None  # None: this notebook's default, fp32 (exact numbers, read one by one); or "auto" (bf16 where the hardware runs it faster, else fp32), "fp32", "bf16", "fp16"
strict = False  # True: fail when the model can't be loaded instead of using the demo model
folds = "auto"  # "auto": 5 folds below 200 images, else one 80/20 hold-out; or a number
seed = 0
method = "lora"  # "lora" (peft) or "layers" (the last N blocks in full)
epochs = 10
pairs_per_batch = 32  # pairs per contrastive batch (their negatives)
learning_rate = 0.0005
output_dir = None  # folder for the results and provenance JSON (None: not written)

# %%
from labclip.finetune import FinetuneConfig  # noqa: E402 - papermill injects parameters above
from labclip.lab import finetune_report as report  # noqa: E402

config = FinetuneConfig(method=method, epochs=epochs, batch_size=pairs_per_batch, lr=learning_rate, seed=seed)
run = report.start(model, captions, (languages or ["ru"])[0], image_dir=image_dir, config=config, folds=folds,
                   strict=strict, precision=precision, default_for="08_finetune")
report.title(run, title, report="Fine-tuning the text tower on a CPU, scored on held-out images")

# %%
report.summary(run)

# %%
report.held_out(run)

# %%
report.curve(run)

# %%
report.heatmaps(run)

# %%
report.comparison(run)

# %%
report.show_provenance(run, output_dir)
