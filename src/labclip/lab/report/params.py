"""Every report parameter, declared once (:data:`REPORT_PARAMS`).

From these declarations come the options of ``labclip report``, the checks of a YAML parameter set
(``--params``), the parameters papermill injects into each notebook, the notebooks' parameters cells
(``scripts/build_notebooks.py``) and the Makefile's variable list (checked by a test). Adding a parameter
is one :class:`Param` here, plus the notebook that reads it and its test. Adding a notebook is its jupytext
source ``notebooks/NN_name.py``, its name in :data:`NOTEBOOKS` or :data:`OPTIONAL_NOTEBOOKS` (which gives it
the parameters every notebook reads: model, title, precision, strict, output_dir) and in the ``defaults`` of
each other parameter it reads; ``make notebooks`` then writes its parameters cell and its ``.ipynb``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...config import DEFAULT_MODEL, exists, shown_path
from ...errors import LabclipError, at_least
from ...precision import DEFAULTS, PRECISIONS
from ...spec import shown_model
from ...translate import DEFAULT_TRANSLATOR

# The notebooks `labclip report` runs by default, and those run on request (make report-scale, ...).
# A new notebook: notebooks/NN_name.py, its name here, and its name in the `notebooks` of each parameter it reads.
NOTEBOOKS = ("01_matching", "02_languages", "03_lab_report", "04_zeroshot")
OPTIONAL_NOTEBOOKS = ("05_scale", "06_adapt", "07_cultures", "08_finetune")
SCALE_NOTEBOOK, CULTURES_NOTEBOOK = "05_scale", "07_cultures"
DATASET_NOTEBOOKS = (SCALE_NOTEBOOK, CULTURES_NOTEBOOK)  # the notebooks that read --dataset
MATCHING = ("01_matching", "02_languages", "03_lab_report")
ALL = (*NOTEBOOKS, *OPTIONAL_NOTEBOOKS)

Kind = Literal["text", "list", "count", "flag", "choice", "value"]
# How a value names something on this machine: resolved to an absolute path before the run (the kernels
# run in the checkout), shown without the machine part in run.json and the published notebooks.
Role = Literal["path", "dataset", "model", "models", "plain"]
Default = Any


@dataclass(frozen=True)
class Param:
    """One report parameter: its notebook variable, type, defaults per notebook, help, option and make variable.

    ``defaults`` maps each notebook that reads the parameter to its default there (what its parameters cell
    declares); ``comments`` overrides ``comment`` in one notebook's cell. A parameter without ``flag`` is set
    only in the notebook (or by the runner).
    """

    name: str
    kind: Kind
    defaults: Mapping[str, Default]
    comment: str = ""
    help: str = ""
    flag: str | None = None
    make: str | None = None
    role: Role = "plain"
    metavar: str | None = None
    comments: Mapping[str, str] = field(default_factory=dict)
    empty_ok: bool = False  # an empty text is a value ("translator: ''" skips translation)

    def line(self, notebook: str) -> str:
        """This parameter's line in ``notebook``'s parameters cell."""
        text = literal(self.defaults[notebook])
        comment = self.comments.get(notebook, self.comment)
        return f"{self.name} = {text}" + (f"  # {comment}" if comment else "")

    def check(self, value: object, where: str) -> object:
        """``value`` with its type checked (one text becomes a list of one).

        Raises:
            LabclipError: naming ``where`` and the value.
        """
        if self.kind == "count":
            return at_least(value, 1, where)
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise LabclipError(f"{where}: expected true or false, got {str(value)[:40]!r}")
            return value
        if self.kind == "list":
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise LabclipError(f"{where}: expected a list of names, got {str(value)[:60]!r}")
            return values
        if self.name == "title" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (not self.empty_ok and not value.strip()):
            raise LabclipError(f"{where}: expected a text, got {str(value)[:60]!r}")
        return value

    def resolved(self, value: Any) -> Any:
        """A path or folder made absolute (a model or benchmark only when it names a file or folder)."""
        if self.role == "path" or (self.role in ("dataset", "model") and exists(value)):
            return str(Path(value).resolve())
        return value

    def shown(self, value: Any) -> Any:
        """The value as reports record it: no machine paths."""
        if self.role == "path" or (self.role == "dataset" and exists(value)):
            return shown_path(value)
        if self.role == "model":
            return shown_model(value)
        if self.role == "models":
            return [shown_model(v) for v in value]
        return value


def literal(value: object) -> str:
    """``value`` as Python source, texts in double quotes (as ruff formats them)."""
    if isinstance(value, str) and '"' not in value and "\\" not in value:
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    return repr(value)


def _precision_comment(notebook: str) -> str:
    if DEFAULTS.get(notebook, "fp32") == "fp32":
        return ("None: this notebook's default, fp32 (exact numbers, read one by one); or \"auto\" "
                "(bf16 where the hardware runs it faster, else fp32), \"fp32\", \"bf16\", \"fp16\"")
    return ("None: this notebook's default, auto (bulk work: bf16 where the hardware runs it faster, else fp32); "
            "or \"fp32\", \"bf16\", \"fp16\"")


def _each(notebooks: Sequence[str], value: Default) -> dict[str, Default]:
    return dict.fromkeys(notebooks, value)


NB = "default: the notebook's"
FALLBACK = "True: fail when the model can't be loaded instead of using the demo model"
_REPORT_PARAMS = (
    Param("model", "text", _each(ALL, DEFAULT_MODEL), flag="--model", make="MODEL", role="model",
          comment='hub id, OpenAI alias (ViT-B/32), local directory, or "demo"',
          help=f"model id, alias, directory or 'demo' (default: {DEFAULT_MODEL})"),
    Param("captions", "text", _each((*MATCHING, "06_adapt", "08_finetune"), None), flag="--captions", make="CAPTIONS",
          role="path", comment="caption file (None: data/captions/default.csv)",
          comments={"06_adapt": "caption set with both languages (None: data/captions/default.csv)",
                    "08_finetune": "caption set (None: data/captions/default.csv)"},
          help="caption file (default: data/captions/default.csv)"),
    Param("image_dir", "text", _each((*MATCHING, "06_adapt", "08_finetune"), None), flag="--image-dir", make="IMAGE_DIR",
          role="path", comment="folder the relative image paths are resolved against (None: the caption file's folder)",
          comments={"06_adapt": "folder the image paths are relative to (None: data/images)"},
          help="folder the caption file's relative image paths are resolved against (default: the caption file's "
               "folder)"),
    Param("labels", "text", _each(("04_zeroshot", "06_adapt"), None), flag="--labels", make="LABELS", role="path",
          comment="labelled images (None: data/labels.csv): a CSV (image plus one label column per language) or a "
                  "folder of class folders",
          comments={"06_adapt": "labelled images for the few-shot section (None: data/labels.csv)"},
          help="labelled images of the zero-shot report: a CSV (image plus a label or one column per language) or a "
               "folder of class folders (default: data/labels.csv)"),
    Param("languages", "list", {**_each((*MATCHING, SCALE_NOTEBOOK), ["en", "ru"]), "04_zeroshot": ["en"],
                                CULTURES_NOTEBOOK: None, "08_finetune": None},
          flag="--langs", make="LANGS", comment="caption columns to use (the matching notebook uses the first)",
          comments={"04_zeroshot": "the first is the template and label language (English where the labels or "
                                   "templates lack it)",
                    SCALE_NOTEBOOK: "caption languages; the first is the reference for the paired tests",
                    CULTURES_NOTEBOOK: "caption languages (None: all of the set's)",
                    "08_finetune": "the first is the caption language fine-tuned on (None: ru)"},
          help=f"caption languages, e.g. en ru ({NB}: en ru)"),
    Param("top_k", "count", {**_each(MATCHING, 3), "04_zeroshot": 5}, flag="--top-k", make="TOPK",
          help=f"captions listed per image, the k of top-k accuracy ({NB}: 3)"),
    Param("batch_size", "count", _each((*MATCHING, SCALE_NOTEBOOK, "06_adapt", CULTURES_NOTEBOOK), None), flag="--batch-size", make="BATCH",
          comment="None: the model's default", help="items per forward pass (default: the model's)"),
    Param("title", "text", _each(ALL, ""), flag="--title", make="TITLE",  # "": the notebook's own (report="...")
          help="title of every report, each report's own (English) name under it (default: each report's own name)"),
    Param("precision", "choice", _each(ALL, None), flag="--precision", make="PRECISION",
          comments={name: _precision_comment(name) for name in ALL},
          help="encoding precision: fp32, bf16, fp16, or auto (bf16 where the hardware runs it faster: CUDA, AMX "
               "CPUs, AMD CPUs with AVX-512-BF16; else fp32) (default: fp32, exact numbers read one by one; auto for the bulk "
               f"{SCALE_NOTEBOOK} and {CULTURES_NOTEBOOK})"),
    Param("strict", "flag", _each(ALL, False), flag="--strict", make="STRICT", comment=FALLBACK,
          comments=_each(DATASET_NOTEBOOKS, FALLBACK.replace("the model", "a model")),
          help="fail if the model can't be loaded (default: fall back to the demo model)"),
    Param("compare_models", "list", _each(("02_languages", SCALE_NOTEBOOK, CULTURES_NOTEBOOK), None),
          flag="--compare-models", make="MODELS", role="models", metavar="MODEL",
          comment="compared with the model above (None: the default models that support every language)",
          comments={SCALE_NOTEBOOK: "evaluated beside the model above (None: the default models that support every "
                                    "language)",
                    CULTURES_NOTEBOOK: "evaluated beside the model above, region by region (None: none)"},
          help=f"models compared with --model in the languages report ({NB})"),
    Param("translator", "text", {"02_languages": DEFAULT_TRANSLATOR, SCALE_NOTEBOOK: None}, flag="--translator",
          make="TRANSLATOR", empty_ok=True, role="model", comment="translate-then-CLIP; None: skip",
          comments={SCALE_NOTEBOOK: f'e.g. "{DEFAULT_TRANSLATOR}": adds the translate-then-CLIP strategy'},
          help=f"translation model, e.g. Helsinki-NLP/opus-mt-{{lang}}-en; 'none' skips translate-then-CLIP ({NB})"),
    Param("template_sets", "list", {"04_zeroshot": ["single", "imagenet7", "imagenet80"]}, flag="--templates",
          make="TEMPLATES", metavar="SET", comment="compared; the last one is used for the top-k bars",
          help=f"template sets compared in the zero-shot report ({NB})"),
    Param("dataset", "text", {SCALE_NOTEBOOK: "xtd10", CULTURES_NOTEBOOK: "xm3600"}, flag="--dataset", make="DATASET",
          role="dataset", comment='"xtd10", "xm3600", a prepared benchmark folder or a caption file',
          comments={CULTURES_NOTEBOOK: '"xm3600", a prepared folder, or a caption file with a region column'},
          help="benchmark for the scale and cultures reports: xtd10, xm3600, a prepared folder or a caption file; runs "
               f"notebook {SCALE_NOTEBOOK} only, unless --notebooks says otherwise, e.g. {CULTURES_NOTEBOOK} (which "
               "needs a region per image) (default: none)"),
    Param("reference", "text", {SCALE_NOTEBOOK: None}, flag="--reference", make="REFERENCE", role="path",
          comment="the small caption set placed beside the benchmark (None: data/captions/short.csv)",
          help="small caption set placed beside the benchmark in the scale report (default: data/captions/short.csv)"),
    Param("source_lang", "value", {"06_adapt": "ru"}, comment="captions to adapt"),
    Param("target_lang", "value", {"06_adapt": "en"}, comment="captions they are mapped onto"),
    Param("folds", "value", {"06_adapt": 5, "08_finetune": "auto"}, comment='folds over images, or "loo"',
          comments={"08_finetune": '"auto": 5 folds below 200 images, else one 80/20 hold-out; or a number'}),
    Param("alpha", "value", {"06_adapt": None},
          comment="ridge penalty; None: chosen by cross-validation inside each training fold"),
    Param("seed", "value", {"06_adapt": 0, "08_finetune": 0}),
    Param("method", "value", {"08_finetune": "lora"}, comment='"lora" (peft) or "layers" (the last N blocks in full)'),
    Param("epochs", "value", {"08_finetune": 10}),
    Param("pairs_per_batch", "value", {"08_finetune": 32}, comment="pairs per contrastive batch (their negatives)"),
    Param("learning_rate", "value", {"08_finetune": 5e-4}),
    Param("shots", "value", {"06_adapt": [1, 2, 4, 8, 16]}),
    Param("check_images", "value", _each(MATCHING, True),
          comment="False: skip decoding every image (the report runner has already checked them once)"),
    Param("output_dir", "value", _each(ALL, None), comment="folder for the results and provenance JSON "
          "(None: not written)", comments={**_each(MATCHING, "folder for metrics and provenance JSON (None: not "
                                                              "written)"),
                                           "04_zeroshot": "folder for the provenance JSON (None: not written)"}),
)


def _count_option(text: str) -> int:
    """An argparse type: a count of 1 or more, checked as the parameter file's counts are."""
    try:
        return at_least(text, 1, "")
    except LabclipError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(": ")) from None


@dataclass(frozen=True)
class ReportParams:
    """The report parameters (:data:`REPORT_PARAMS`) and everything generated from them."""

    params: tuple[Param, ...]

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __getitem__(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters a user sets (by option, make variable or parameter file)."""
        return tuple(p.name for p in self.params if p.flag)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One option per user-set parameter; unset options are ``None`` (the parameter file's value, then the
        notebook's default, stand)."""
        for p in self.params:
            if not p.flag:
                continue
            kw: dict[str, Any] = {"dest": p.name, "help": p.help}
            if p.kind == "flag":
                kw.update(action="store_true", default=None)
            else:
                kw.update(metavar=p.metavar, nargs="+" if p.kind == "list" else None,
                          type=_count_option if p.kind == "count" else None,
                          choices=PRECISIONS if p.kind == "choice" else None)
            parser.add_argument(p.flag, **{k: v for k, v in kw.items() if v is not None or k == "default"})

    def from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        """The parameters the command line set (``--translator none`` is the empty text: no translator)."""
        given = {p.name: getattr(args, p.name, None) for p in self.params if p.flag}
        if given.get("translator") == "none":
            given["translator"] = ""
        return {k: v for k, v in given.items() if v is not None}

    def check(self, params: Mapping[str, Any], source: str = "parameter") -> dict[str, Any]:
        """The parameters with their types checked (:meth:`Param.check`); ``None`` and unknown names pass as they
        are. The notebooks only ever get parameters that passed here.

        Raises:
            LabclipError: naming ``source`` (the parameter file), the parameter and the value.
        """
        known = set(self.names)
        checked = {}
        for key, value in params.items():
            where = f"{source}: {key!r}" if source != "parameter" else f"parameter {key!r}"
            checked[key] = value if value is None or key not in known else self[key].check(value, where)
        return checked

    def resolved(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Paths made absolute (the notebooks run in the checkout, not in the user's folder)."""
        return {k: self[k].resolved(v) if k in self.names and v else v for k, v in params.items()}

    def shown(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters as reports record them (``run.json``, the published notebooks): without machine paths."""
        return {k: self[k].shown(v) if k in self.names and v else v for k, v in params.items()}

    def for_notebook(self, notebook: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """What papermill injects into ``notebook``: the parameters it reads; ``precision`` only when one was
        asked for (otherwise the notebook resolves its own default from the one table)."""
        reads = {p.name for p in self.params if notebook in p.defaults}
        return {k: v for k, v in params.items() if k in reads and not (k == "precision" and v is None)}

    def default(self, notebook: str, name: str) -> Any:
        """The default of ``name`` in ``notebook``'s parameters cell."""
        return self[name].defaults[notebook]

    def cell(self, notebook: str, title: str) -> str:
        """The source of ``notebook``'s parameters cell; ``title`` is the report's own name."""
        lines = [p.line(notebook) for p in self.params if notebook in p.defaults]
        return "\n".join(f"title = {literal(title)}" if line.startswith("title = ") else line for line in lines)

    def make_variables(self) -> dict[str, str]:
        """Make variable → option, for every parameter the Makefile forwards."""
        return {p.make: p.flag for p in self.params if p.make and p.flag}

    def report_args(self) -> dict[str, str]:
        """The make variables ``REPORT_ARGS`` forwards: those of parameters a default notebook reads."""
        return {p.make: p.flag for p in self.params
                if p.make and p.flag and any(name in p.defaults for name in NOTEBOOKS)}


REPORT_PARAMS = ReportParams(_REPORT_PARAMS)
PARAMETERS = REPORT_PARAMS.names

PARAMS_MAX_BYTES = 1 << 20


def _yaml_loader() -> type:
    """PyYAML's safe loader without aliases: ``*name`` (the billion-laughs bomb) is refused when it is read."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a parameter file",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)

    return NoAliases


def read_params(path: Path | None) -> dict[str, Any]:
    """The parameters of a YAML file (a mapping of known names), checked as :func:`check_params` does.

    Raises:
        LabclipError: an unreadable, too large or malformed file (aliases included), or a bad parameter.
    """
    if path is None:
        return {}
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read(PARAMS_MAX_BYTES + 1)
        if len(raw) > PARAMS_MAX_BYTES:
            raise LabclipError(f"{path}: a parameter file of more than {PARAMS_MAX_BYTES >> 20} MiB is not a "
                               "parameter file")
        loaded = yaml.load(raw.decode("utf-8-sig"), Loader=_yaml_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
        if problem and mark is not None:
            detail = f"{problem}, line {mark.line + 1} column {mark.column + 1}"
        raise LabclipError(f"{path}: unreadable parameter file ({detail})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise LabclipError(f"{path}: a parameter file holds 'name: value' lines, not a {type(loaded).__name__}")
    unknown = sorted(str(k) for k in set(loaded) - set(PARAMETERS))
    if unknown:
        raise LabclipError(f"{path}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}")
    return check_params(loaded, str(path))


def check_params(params: Mapping[str, Any], source: str = "parameter") -> dict[str, Any]:
    """The report parameters with their types checked (:meth:`ReportParams.check`).

    Raises:
        LabclipError: naming ``source`` (the parameter file), the parameter and the value.
    """
    return REPORT_PARAMS.check(params, source)
