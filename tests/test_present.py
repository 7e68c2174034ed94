"""Report sections: human labels, one number format, shared colour scales, tables that fit a page."""

import re
from html import unescape

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import AxesImage
from PIL import Image

from labclip.config import DEFAULT_CAPTIONS
from labclip.data import load_captions
from labclip.lab import narrative, plots, present
from labclip.lab.compare import compare
from labclip.lab.experiment import Experiment

RAW_KEYS = re.compile(r"\b(i2t_\w+|t2i_\w+|margin_\w+|correct_\w+|wrong_\w+|gap_pp|gap_ratio|contrastive_loss|"
                      r"mean_per_class_recall|None|False|True|nan)\b")


@pytest.fixture(scope="module")
def shown(tiny_model):
    """Everything the languages, comparison and lab-report sections display, as HTML strings."""
    exp = Experiment(model=tiny_model, captions=load_captions(DEFAULT_CAPTIONS))
    outputs, heatmaps = [], []
    real_heatmap = plots.similarity_heatmap

    def record(sim, *args, **kwargs):
        heatmaps.append((sim, kwargs.get("vmin"), kwargs.get("vmax")))
        return real_heatmap(sim, *args, **kwargs)

    langs = ["en", "ru"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "similarity_heatmap", record)
        metrics, first = exp.compare(langs), exp.matching("en")
        sections = [  # what the cells of 02_languages, then 03_lab_report, then 01_matching return
            present.captions(exp, langs), present.language_metrics(exp, metrics),
            present.published_results(exp, langs), present.token_statistics(exp, langs), present.heatmaps(exp, langs),
            present.comparison(exp, compare(exp.captions, langs, [exp.model], None, exp.top_k), None),
            present.Section("Abstract", narrative.abstract(exp, langs)), present.Section("Method", narrative.method(exp)),
            present.results(exp, langs), present.heatmap(exp, first, present.similarity_range(exp, langs)),
            present.topk(first),
            present.language_metrics(exp, metrics, heading="Languages compared", level=3, paired=False),
            present.Section("Discussion", narrative.discussion(exp, langs)), present.published_results(exp, langs),
            present.Section("Limitations", narrative.limitations(exp)),
            present.topk(first), present.accuracy(first), present.distractors(first)]
    outputs = [part for section in sections for part in section.parts]
    return exp, outputs, heatmaps


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>|data:image/png;base64,[^\"]+", "", html, flags=re.S))


def test_no_raw_keys_or_python_values_in_any_section(shown):
    _, outputs, _ = shown
    for html in outputs:
        found = RAW_KEYS.findall(_text(html))
        assert not found, found
        assert not re.search(r"-0\.0+(?!\d)", _text(html)), "negative zero"


def test_accuracies_read_as_k_of_n(shown):
    exp, outputs, _ = shown
    m = exp.matching("en").metrics
    everything = " ".join(outputs)
    hits, n = m.i2t.hits1, m.n
    assert f"{hits}/{n} ({100 * hits / n:.1f}% [" in everything
    assert "Image→text top-1" in everything and "Mean reciprocal rank" in everything
    assert "Smallest margin" in everything and "Contrastive loss" in everything and "Separable" in everything


def test_heatmaps_of_languages_share_one_colour_scale_with_a_colour_bar(shown):
    exp, _, heatmaps = shown
    sims = [exp.matching(lang).sim for lang in ("en", "ru")]
    expected = (min(s.min() for s in sims), max(s.max() for s in sims))
    assert len(heatmaps) >= 3  # two in the languages section, one in the lab report
    for _, vmin, vmax in heatmaps:
        assert (vmin, vmax) == pytest.approx(expected)
    fig = plots.similarity_heatmap(sims[1], exp.image_paths, exp.captions["ru"], vmin=expected[0],
                                   vmax=expected[1])
    main, bar = fig.axes[0], fig.axes[1]
    image = next(a for a in main.get_images() if isinstance(a, AxesImage) and a.get_array().ndim == 2)
    assert image.norm.vmin == pytest.approx(expected[0]) and image.norm.vmax == pytest.approx(expected[1])
    assert bar.get_xlabel() == "cosine similarity"


def test_heatmap_cells_never_show_negative_zero(tiny_model):
    sim = np.array([[0.5, -0.001], [-0.004, 0.5]])
    fig = plots.similarity_heatmap(sim, [Image.new("RGB", (8, 8))] * 2, ["a", "b"])
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert "0.00" in cells and not any(c.startswith("-0.00") for c in cells)


def test_comparison_tables_are_narrow_enough_for_a4(shown):
    _, outputs, _ = shown
    section = next(h for h in outputs if "Gap to English and similarity" in h)
    assert "<h2>The language gap with raw captions</h2>" in section  # only raw captions ran: nothing was "fixed"
    tables = re.findall(r"<table.*?</table>", section, flags=re.S)
    assert len(tables) == 2
    for table in tables:
        headers = re.findall(r'<th[^>]*class="col_heading[^"]*"[^>]*>(.*?)</th>', table)
        assert len(headers) <= 7 and all(len(h) <= 20 for h in headers), headers
    assert "Gap to English" in section and "English ÷ this" in section


@pytest.mark.parametrize("strategies,heading", [
    ([], "Comparing caption languages"),
    (["raw", "raw"], "The language gap with raw captions"),
    (["raw", "translated"], "Fixing the language gap: raw captions, translation to English"),
    (["multilingual", "raw"], "Fixing the language gap: raw captions, multilingual encoders"),
    (["translated", "multilingual", "raw"],
     "Fixing the language gap: raw captions, translation to English, multilingual encoders"),
])
def test_comparison_heading_names_only_the_strategies_that_ran(strategies, heading):
    assert present.comparison_heading(pd.DataFrame({"strategy": strategies}, dtype=object)) == heading


def test_each_heading_is_in_the_same_output_as_its_content(shown):
    _, outputs, _ = shown
    for html in outputs:
        if re.search(r"<h[23]>(Similarity matrix|Top-3 captions|Metrics by language|Tokens per caption)", html):
            assert "<table" in html or "<img" in html, html[:200]


def test_label_bars_say_what_the_bars_are_and_charts_share_one_width():
    table = pd.DataFrame({"image": ["a.png"] * 2 + ["b.png"] * 2, "rank": [1, 2] * 2,
                          "label": ["cat", "dog", "car", "cat"], "probability": [0.7, 0.3, 0.9, 0.1]})
    fig = plots.label_bars(table, [Image.new("RGB", (8, 8))] * 2)
    assert "probability" in fig.get_supxlabel()
    bars = [ax for ax in fig.axes if ax.axison and ax.patches]
    assert len(bars) == 2 and all(ax.get_xlim() == (0, 1) for ax in bars)
    # One page width for the bar charts, so their labels print at the same size.
    rows = pd.DataFrame({"model": ["demo"], "strategy": ["raw"], "language": ["es"], "i2t_acc1": [0.5]})
    accuracy = pd.DataFrame({"en": [0.5, 0.6, 0.4, 0.7]}, index=["i2t_acc1", "i2t_acc3", "t2i_acc1", "t2i_acc3"])
    widths = {plots.comparison_bars(rows, n=6).get_figwidth(), plots.accuracy_bars(accuracy, k=3, n=6).get_figwidth()}
    assert widths == {plots.PAGE_WIDTH_PT / 72}


def test_provenance_items_read_as_words(tiny_model, monkeypatch):
    exp = Experiment(model=tiny_model, captions=load_captions(DEFAULT_CAPTIONS))
    exp.matching("en")
    outputs = present.provenance(exp).parts
    items = re.findall(r"<td[^>]*>(model|machine|top)[^<]*</td>", outputs[-1])
    shown = set(re.findall(r"<td[^>]*>((?:model: |machine: )?[a-z][^<]*)</td>", outputs[-1]))
    assert items and {"top-k", "machine: memory (GiB)", "machine: CPUs", "model: embedding dimensions"} <= shown
    assert not {"top k", "machine: memory gib", "machine: cpus"} & shown


def test_metrics_by_language_gives_mrr_and_margin_with_their_intervals(shown):
    """02's and 03's "Metrics by language" rows for the mean reciprocal ranks and the mean margin carry the same
    seeded bootstrap interval as 01's accuracy table and results, computed independently here."""
    from labclip import stats
    from labclip.labels import num

    exp, _, _ = shown
    rows = [[unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", present.metrics_by_language(exp, ["en", "ru"]), re.S)]
    frame = pd.DataFrame([r[1:] for r in rows[1:]], index=[r[0] for r in rows[1:]], columns=rows[0][1:])
    for lang, column in (("en", "English"), ("ru", "Russian")):
        sim = exp.matching(lang).sim.astype(np.float64)
        n = len(sim)
        own = np.diag(sim)
        i2t = 1 / (1 + (sim > own[:, None]).sum(axis=1) + ((sim == own[:, None]) & ~np.eye(n, dtype=bool)).sum(axis=1))
        t2i = 1 / (1 + (sim > own[None, :]).sum(axis=0) + ((sim == own[None, :]) & ~np.eye(n, dtype=bool)).sum(axis=0))
        margin = own - np.where(np.eye(n, dtype=bool), -np.inf, sim).max(axis=1)
        for label, values in (("Image→text mean reciprocal rank", i2t), ("Text→image mean reciprocal rank", t2i),
                              ("Mean margin", margin)):
            e = stats.mean(values)
            assert frame.loc[label, column] == f"{num(e.value)} [{num(e.low)}, {num(e.high)}]"
    assert "seeded bootstrap over images for the mean reciprocal ranks and the mean margin" in " ".join(shown[1])


def test_fallback_to_the_demo_model_gives_one_banner_with_both_notes(monkeypatch):
    """Demo mode after a failed load used to print two red banners before any content; now one says both."""
    from types import SimpleNamespace

    from labclip import load_model

    shown = []
    monkeypatch.setattr(present, "display", lambda obj: shown.append(obj.data))
    run = SimpleNamespace(model=load_model("demo"), requested_model="openai/clip-vit-base-patch32",
                          fallback_reason="could not load model 'openai/clip-vit-base-patch32': the hub cannot be reached")
    present.header(run, "Mi práctica", "12 images", report="CLIP image–text matching")
    page = shown[0]
    assert page.count("labclip-banner") == 1
    banner = re.search(r'class="labclip-banner"[^>]*>(.*?)</div>', page, re.S)[1]
    assert "could not be loaded: the hub cannot be reached." in banner and "untrained demo model" in banner
    assert re.search(r"<h1[^>]*>Mi práctica — UNTRAINED", page) and ">CLIP image–text matching</p>" in page
    present.header(SimpleNamespace(model=run.model, requested_model="demo", fallback_reason=None), "CLIP image–text "
                   "matching", "12 images", report="CLIP image–text matching")
    assert shown[1].count("labclip-banner") == 1 and "could not be loaded" not in shown[1]
    assert shown[1].count("CLIP image–text matching") == 1  # the report's own name is not repeated under itself


def test_label_bars_mark_the_true_label_and_keep_long_labels_readable():
    """The true label's bar is red and ticked; a true label outside the top k is named with its rank; a long
    one-word label is cut, not reduced to an ellipsis."""
    from matplotlib.colors import to_hex

    table = pd.DataFrame({"image": ["a.png"] * 2 + ["b.png"] * 2, "rank": [1, 2] * 2,
                          "label": ["cat", "Schmetterlingsflügel", "car", "cat"], "probability": [0.7, 0.3, 0.9, 0.1]})
    fig = plots.label_bars(table, [Image.new("RGB", (8, 8))] * 2, truth=["Schmetterlingsflügel", "dog"],
                           truth_rank=[2, 4])
    first, second = [ax for ax in fig.axes if ax.axison and ax.patches]
    ticks = [t.get_text() for t in first.get_yticklabels()]
    assert ticks == ["cat", "Schmetterlingsf… ✓"]
    colours = [to_hex(p.get_facecolor()) for p in first.patches]
    assert colours[1] == plots.CORRECT_COLOUR and colours[0] != plots.CORRECT_COLOUR
    assert second.get_title(loc="left") == "true: dog (rank 4)"
    assert all(to_hex(p.get_facecolor()) != plots.CORRECT_COLOUR for p in second.patches)
    assert "true label" in fig.get_supxlabel()
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    assert min(sizes) >= plots.MIN_TEXT_PT and fig.get_figwidth() * 72 <= plots.PAGE_WIDTH_PT + 0.5
