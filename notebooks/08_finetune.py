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
from labclip.lab import runs  # noqa: E402

config = FinetuneConfig(method=method, epochs=epochs, batch_size=pairs_per_batch, lr=learning_rate, seed=seed)
run = runs.start(report.FINETUNE, model, captions=captions, language=(languages or ["ru"])[0], image_dir=image_dir,
                 config=config, folds=folds, strict=strict, precision=precision,
                 default_for="08_finetune")
report.title(run, title, report="Fine-tuning the text tower on a CPU, scored on held-out images")

# %%
report.summary(run)  # the findings: recall@1 against zero-shot and the ridge adapter, the validation curves

# %%
recall = report.recall_table(run.evaluation)  # held-out recall@1/5 with 95% Wilson intervals, a DataFrame
paired = report.paired_table(run.evaluation)  # exact McNemar tests, a DataFrame
report.held_out(run, recall, paired)

# %%
fig = report.loss_figure(run.evaluation)  # train and validation loss per epoch, a Figure
report.curve(run, fig)

# %%
report.heatmaps(run)

# %%
report.comparison(run)

# %%
record = report.save(run, output_dir)  # results, findings and provenance; a JSON file when output_dir is set
report.provenance(run, record)
