"""``make reproduce``: one line offline; on the XTD10 fixture set with replicas of ViT-B/32 and the default
multilingual model, measured vs a fake published table, checked against an independent recall computation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from hub_replicas import write_replica
from labclip import datasets as ds
from labclip import load_model, registry
from labclip.data import flatten_captions
from labclip.lab import reproduce, scale

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
MAKEFILE = (Path(__file__).parents[1] / "Makefile").read_text(encoding="utf-8")


def test_make_target_runs_the_module_and_skips_offline(monkeypatch, capsys):
    import huggingface_hub.constants as constants

    assert re.search(r"^reproduce: .*## .*\n\t\$\(PY\) -m labclip\.lab\.reproduce", MAKEFILE, flags=re.M)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert reproduce.main([]) == 0  # the real reachability check, answered offline at once
    out = capsys.readouterr()
    assert out.out.splitlines() == [reproduce.OFFLINE] and not out.err


def test_defaults_are_vit_b32_and_the_default_multilingual_model():
    assert registry.DEFAULT_MULTILINGUAL in registry.default_models(["en", "ru"])
    assert registry.BY_ID[registry.DEFAULT_MULTILINGUAL].supports("ru")
    assert registry.published(model=registry.DEFAULT_MODEL, benchmark="XTD10", language="ru", metric="R@1")[0].value \
        == 0.4


@pytest.fixture
def replicas(tmp_path_factory, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path_factory.mktemp("hub")
    for repo in (registry.DEFAULT_MODEL, registry.DEFAULT_MULTILINGUAL):
        write_replica(cache, repo)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _first_caption_t2i(model_id: str, table, lang: str, k: int) -> tuple[int, int]:
    """Text→image hits at k with the first caption of each image: the right image above every other (ties miss)."""
    model = load_model(model_id, cache=False, precision="fp32")
    captions, owner = flatten_captions(table, lang)
    first = [captions[list(owner).index(i)] for i in range(len(table))]
    sim = model.encode_images(table["path"]) @ model.encode_texts(first).T  # images × captions
    better = (sim > np.diag(sim)[None, :]).sum(axis=0) + ((sim == np.diag(sim)[None, :]).sum(axis=0) - 1)
    return int((better < k).sum()), len(table)


def test_reproduce_on_the_fixture_set_against_a_fake_published_table(replicas, tmp_path, capsys):
    folder = ds.prepare("xtd10", source=FIXTURES / "xtd10", images=FIXTURES / "coco", root=tmp_path).parent
    table = scale.resolve_dataset(folder, ["en", "ru"])
    hits, n = _first_caption_t2i(registry.DEFAULT_MODEL, table, "ru", 1)
    low, high = (100 * x for x in proportion_confint(hits, n, alpha=0.05, method="wilson"))
    inside = round((low + high) / 2, 1)
    outside = round(high + 5, 1) if high < 95 else round(low - 5, 1)
    hits5, _ = _first_caption_t2i(registry.DEFAULT_MULTILINGUAL, table, "en", 5)
    first = registry.FIRST_CAPTION
    fake = [
        registry.Published(registry.DEFAULT_MODEL, "XTD10", "t2i", "ru", "R@1", inside, "fake source A", first),
        registry.Published(registry.DEFAULT_MODEL, "XTD10", "t2i", "ru", "R@1", outside, "fake source B", first),
        registry.Published(registry.DEFAULT_MULTILINGUAL, "XTD10", "t2i", "en", "R@5", 50.0, "fake source C", first),
        # not the same definition, benchmark, metric or language: never compared
        registry.Published(registry.DEFAULT_MODEL, "XTD10", "t2i", "ru", "R@1", 1.0, "fake D", "all captions"),
        registry.Published(registry.DEFAULT_MODEL, "Crossmodal-3600", "t2i", "ru", "R@1", 1.0, "fake E", first),
        registry.Published(registry.DEFAULT_MODEL, "XTD10", "t2i", "ru", "mean R@1/5/10", 1.0, "fake F", first),
        registry.Published(registry.DEFAULT_MODEL, "XTD10", "t2i", "de", "R@1", 1.0, "fake G", first),
    ]
    assert reproduce.main(["--dataset", str(folder)], online=lambda: True, table=fake) == 0
    lines = capsys.readouterr().out.splitlines()
    compared = [line for line in lines if ": measured " in line]
    assert len(compared) == 3 and not any(f"fake {x}" in line for x in "DEFG" for line in lines)
    a, b, c = (next(line for line in compared if f"fake source {x}" in line) for x in "ABC")
    measured = f"measured {hits / n:.1%} [{low / 100:.1%}, {high / 100:.1%}] ({hits}/{n})"
    assert measured in a and measured in b
    assert a.endswith("inside the interval") and b.endswith("outside the interval")
    assert f"({hits5}/{n})" in c and "text→image R@5 · English" in c
    low5, high5 = (100 * x for x in proportion_confint(hits5, n, alpha=0.05, method="wilson"))
    assert c.endswith("inside the interval" if low5 <= 50.0 <= high5 else "outside the interval")
    assert lines[-1] == f"{1 + (low5 <= 50.0 <= high5)} of 3 published figures lie inside the measured 95% interval"


def test_a_model_without_a_comparable_figure_says_so(replicas, tmp_path, capsys):
    folder = ds.prepare("xtd10", source=FIXTURES / "xtd10", images=FIXTURES / "coco", root=tmp_path).parent
    assert reproduce.main(["--dataset", str(folder), "--langs", "en"], online=lambda: True, table=[]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{m} · XTD10: no published figure with the same definition in English"
                     for m in (registry.DEFAULT_MODEL, registry.DEFAULT_MULTILINGUAL)] + \
        ["0 of 0 published figures lie inside the measured 95% interval"]


def test_every_published_box_reads_the_one_table():
    from labclip.lab import adapt, narrative

    for p in registry.PUBLISHED:
        assert all(str(getattr(p, f)).strip() for f in ("model", "benchmark", "direction", "language", "metric",
                                                         "source", "definition")) and 0 <= p.value <= 100
    xtd10 = registry.published(benchmark="XTD10", direction="t2i", metric="R@1")
    assert registry.published(**narrative.XTD10_T2I_R1) == xtd10  # no lab module keeps a copy of the table
    assert not hasattr(adapt, "PUBLISHED") and len(registry.published(benchmark="ImageNet")) == 3
    immich = registry.published(source=registry.IMMICH_MULTILINGUAL)
    assert {(p.model, p.language, p.value) for p in immich} == {
        ("google/siglip2-base-patch16-224", "ru", 84.29), ("google/siglip2-base-patch16-224", "en", 75.19),
        ("google/siglip-base-patch16-256-multilingual", "ru", 82.86),
        ("google/siglip-base-patch16-256-multilingual", "en", 69.38)}
    assert all(p.model in registry.BY_ID for p in immich)
