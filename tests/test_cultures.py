"""Cross-cultural evaluation: region × language ranks, the own-culture test against brute force, the report."""

from __future__ import annotations

import itertools
import json
import math
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from labclip import cultures
from labclip import datasets as ds
from labclip.cli import main as cli_main
from labclip.errors import LabclipError
from labclip.metrics import retrieval_ranks, similarity

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


@pytest.fixture(scope="module")
def regions_set(tmp_path_factory) -> Path:
    return ds.prepare("xm3600", source=FIXTURES / "xm3600_regions", root=tmp_path_factory.mktemp("cult")).parent


def _embeddings(n: int, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, dim))
    return images, images + 1.5 * rng.normal(size=(n, dim))


def test_ranks_in_the_set_and_within_each_region_match_retrieval_ranks_on_each_subset():
    images, texts = _embeddings(60)
    regions = [f"r{i % 4}" for i in range(60)]
    r = cultures.region_ranks(images, texts, regions, "en", block_elements=7 * 60)  # several blocks
    whole = retrieval_ranks(similarity(images, texts))
    assert (r.ranks[("set", "i2t")] == whole.i2t).all() and (r.ranks[("set", "t2i")] == whole.t2i).all()
    for name in set(regions):
        member = np.array(regions) == name
        sub = retrieval_ranks(similarity(images[member], texts[member]))
        assert (r.ranks[("region", "i2t")][member] == sub.i2t).all()
        assert (r.ranks[("region", "t2i")][member] == sub.t2i).all()
    assert r.names == ("r0", "r1", "r2", "r3")


def test_a_caption_repeated_for_another_image_is_a_tie_and_counts_against_as_in_retrieval_ranks():
    images, texts = _embeddings(30, seed=8)
    texts[7] = texts[3]  # two images with the very same caption, as short captions in a benchmark can be
    texts[20] = texts[3]
    r = cultures.region_ranks(images, texts, ["a"] * 30, "en", block_elements=4 * 30)
    whole = retrieval_ranks(similarity(images.astype(np.float32), texts.astype(np.float32), dtype=np.float32))
    assert (r.ranks[("set", "i2t")] == whole.i2t).all() and (r.ranks[("set", "t2i")] == whole.t2i).all()
    assert r.ranks[("set", "i2t")][[3, 7, 20]].min() >= 3


def test_every_cell_has_its_wilson_interval_from_its_own_hits():
    images, texts = _embeddings(40, seed=1)
    regions = ["a"] * 10 + ["b"] * 30
    r = cultures.region_ranks(images, texts, regions, "de")
    rows = cultures.recall_rows([r])
    assert {(row["region"], row["scope"]) for row in rows} >= {("a", "set"), ("b", "region"), ("all", "set")}
    for row in rows:
        member = np.ones(40, bool) if row["region"] == "all" else np.array(regions) == row["region"]
        hits = int(np.sum(r.ranks[(row["scope"], row["direction"])][member] <= row["k"]))
        assert (row["hits"], row["n"]) == (hits, member.sum())
        low, high = proportion_confint(hits, member.sum(), alpha=0.05, method="wilson")
        assert (row["low"], row["high"]) == pytest.approx((low, high))


def test_peak_memory_stays_under_twice_one_similarity_matrix():
    n = 1500
    images, texts = _embeddings(n, dim=32, seed=2)
    images, texts = images.astype(np.float32), texts.astype(np.float32)
    tracemalloc.start()
    cultures.region_ranks(images, texts, [str(i % 12) for i in range(n)], "en")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * n * n * 4


def _brute_effect(hits: np.ndarray, labels, home: dict[int, set[int]]) -> float:
    """The own-culture effect written out with loops, apart from labclip.cultures."""
    n, langs = hits.shape
    effects = []
    for lang in range(langs):
        home_d, away_d = [], []
        for i in range(n):
            others = [hits[i, m] for m in range(langs) if m != lang]
            d = hits[i, lang] - sum(others) / len(others)
            (home_d if lang in home[labels[i]] else away_d).append(d)
        if home_d and away_d:
            effects.append(sum(home_d) / len(home_d) - sum(away_d) / len(away_d))
    return 100 * sum(effects) / len(effects)


def test_own_culture_test_equals_brute_force_enumeration_of_every_permutation():
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    hits = rng.random((7, 3)) < 0.5
    home = {0: {0}, 1: {1}, 2: set()}
    result = cultures.own_culture(hits, labels, [sorted(home[r]) for r in range(3)], n_resamples=9999)
    observed = _brute_effect(hits.astype(float), labels, home)
    null = [_brute_effect(hits.astype(float), [labels[j] for j in perm], home)
            for perm in itertools.permutations(range(7))]
    null = np.array(null)
    tol = 1e-9
    p = min(1.0, 2 * min(np.mean(null <= observed + tol), np.mean(null >= observed - tol)))
    assert result.exact and result.n_permutations == math.factorial(7)
    assert result.effect == pytest.approx(observed)
    assert result.p_value == pytest.approx(p)
    assert result.low <= result.effect <= result.high
    for lang, e in result.per_language.items():  # each language's contrast, written out apart
        h = hits.astype(float)
        d = h[:, lang] - (h.sum(1) - h[:, lang]) / 2
        at_home = np.isin(labels, [r for r in home if lang in home[r]])
        assert e.value == pytest.approx(100 * (d[at_home].mean() - d[~at_home].mean()))
        assert e.low <= e.value <= e.high
    assert set(result.per_language) == {0, 1}


def test_own_culture_test_finds_a_planted_advantage_and_not_a_language_that_is_simply_better():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 25)
    home = [[0], [1], [2], [3]]
    planted = rng.random((100, 4)) < 0.3
    planted[np.arange(100), labels] |= rng.random(100) < 0.6
    found = cultures.own_culture(planted, labels, home, n_resamples=999)
    assert found.effect > 20 and found.p_value < 0.01 and found.low > 0
    better = rng.random((100, 4)) < np.array([0.8, 0.3, 0.3, 0.3])  # language 0 better on every image
    harder = better & (rng.random((100, 1)) < np.where(labels == 0, 0.5, 1.0)[:, None])  # region 0 harder
    none = cultures.own_culture(harder, labels, home, n_resamples=999)
    assert none.low < 0 < none.high or none.p_value > 0.01


def test_heterogeneity_is_pearsons_chi_square_on_the_region_table():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 20)
    hits = rng.random(60) < np.array([0.2, 0.5, 0.8])[labels]
    test = cultures.heterogeneity(hits, labels)
    observed = np.array([[np.sum(hits[labels == r]), np.sum(~hits[labels == r])] for r in range(3)])
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert test.statistic == pytest.approx(chi2) and test.dof == 2
    assert test.p_value == pytest.approx(sps.chi2.sf(chi2, 2))
    assert cultures.heterogeneity(np.ones(60, bool), labels) is None


def test_xm3600_locale_table_covers_its_36_languages():
    assert sorted(cultures.XM3600_REGION_LANGUAGES) == sorted(ds.XM3600.languages)
    assert cultures.home_languages(("ru", "Kenya"), ["en", "ru"]) == {"ru": ("ru",), "Kenya": ()}


def test_prepared_xm3600_keeps_each_images_locale_as_its_region(regions_set):
    rows = [json.loads(line) for line in (FIXTURES / "xm3600_regions" / "captions.jsonl").read_text("utf-8").splitlines()]
    table = ds.read_prepared(regions_set, ["en", "ru"])
    assert table["region"] == [row["image/locale"] for row in rows]
    assert len(set(table["region"])) == 5


def test_cultures_report_renders_offline_from_the_fixture(regions_set, tmp_path):
    out = tmp_path / "reports"
    assert cli_main(["report", "--notebooks", "07_cultures", "--dataset", str(regions_set), "--model", "demo",
                     "--langs", "en", "de", "ru", "ja", "sw", "--no-pdf", "--out", str(out)]) == 0
    page = (out / "07_cultures.html").read_text(encoding="utf-8")
    record = json.loads((out / "07_cultures.json").read_text(encoding="utf-8"))
    assert "UNTRAINED DEMO MODEL" in page and "/work/" not in page and str(Path.home()) not in page
    assert "Own-culture advantage" in page and "Regions ranked by recall" in page and "Holm" in page
    for row in record["results"]:
        if row["region"] != "all" and row["scope"] == "set" and row["direction"] == "t2i" and row["k"] == 1 \
                and row["language"] == "en":
            assert f"{100 * row['recall']:.0f} [{100 * row['low']:.0f}, {100 * row['high']:.0f}]" in page
    test = record["own_culture"]["demo"]
    assert set(test["per_language"]) == {"en", "de", "ru", "ja", "sw"}
    assert f"{test['effect']:+.1f} points [{test['low']:+.1f}, {test['high']:+.1f}]" in page
    assert record["region_languages"] == {r: [r] for r in ("de", "en", "ja", "ru", "sw")}


def test_default_report_leaves_the_cultures_notebook_out():
    from labclip.lab.report import CULTURES_NOTEBOOK, NOTEBOOKS, OPTIONAL_NOTEBOOKS

    assert CULTURES_NOTEBOOK not in NOTEBOOKS and CULTURES_NOTEBOOK in OPTIONAL_NOTEBOOKS


def _instructor_set(tmp_path: Path, specific: list[str]) -> Path:
    from PIL import Image

    lines = ["image,en,ru,region,culture_specific"]
    for i, flag in enumerate(specific):
        Image.new("RGB", (32, 32), (40 * i % 256, 90, 160)).save(tmp_path / f"p{i}.png")
        lines.append(f"p{i}.png,photo number {i},фото номер {i},{['Kenya', 'Peru', 'ru'][i % 3]},{flag}")
    (tmp_path / "set.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "set.csv"


def test_an_instructors_set_with_region_and_culture_specific_gets_the_same_breakdown(tmp_path):
    from labclip.lab import cultures as lab
    from labclip.lab import runs

    path = _instructor_set(tmp_path, ["yes", "no", "Yes", "no", "no", "yes"])
    run = runs.start(lab.CULTURES, ["demo"], dataset=path, languages=["en", "ru"])
    table = run.evaluate()
    assert set(table["region"]) == {"all", "Kenya", "Peru", "ru"}
    assert run.culture_specific.tolist() == [True, False, True, False, False, True]
    assert run.home() == {"Kenya": (), "Peru": (), "ru": ("ru",)}
    assert run.own_culture("demo", n_resamples=99) is not None


def test_a_region_language_column_says_which_languages_are_spoken_where(tmp_path):
    from labclip.lab import cultures as lab
    from labclip.lab import runs

    path = _instructor_set(tmp_path, ["yes", "no", "no", "no", "yes", "no"])
    lines = path.read_text(encoding="utf-8").splitlines()
    spoken = {"Kenya": "en", "Peru": "", "ru": "ru"}
    lines = [lines[0] + ",region_language"] + [f"{line},{spoken[line.split(',')[3]]}" for line in lines[1:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = runs.start(lab.CULTURES, ["demo"], dataset=path, languages=["en", "ru"])
    assert run.home() == {"Kenya": ("en",), "Peru": (), "ru": ("ru",)}
    lines[5] = lines[5].rsplit(",", 1)[0] + ",ru"  # Peru's second image says otherwise
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LabclipError, match="image 'p4.png': region_language 'ru' differs"):
        runs.start(lab.CULTURES, ["demo"], dataset=path, languages=["en", "ru"])


def test_bad_region_or_culture_specific_is_a_one_line_error_before_any_model_loads(tmp_path, capsys):
    path = _instructor_set(tmp_path, ["yes", "maybe", "no"])
    out = tmp_path / "out"
    assert cli_main(["report", "--notebooks", "07_cultures", "--dataset", str(path), "--model", "demo",
                     "--no-pdf", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labclip: error:") and "p1.png" in err and "culture_specific" in err and "\n" not in err
    assert not out.exists()
    plain = tmp_path / "plain.csv"
    plain.write_text("image,en\np0.png,a photo\n", encoding="utf-8")
    assert cli_main(["report", "--notebooks", "07_cultures", "--dataset", str(plain), "--model", "demo",
                     "--no-pdf", "--out", str(out)]) == 2
    assert "no 'region' column" in capsys.readouterr().err and not out.exists()


def test_model_tests_are_exact_mcnemar_per_region_and_language_with_holm():
    from labclip.lab.cultures import CultureRun

    regions = [f"r{i % 3}" for i in range(45)]
    images, texts = _embeddings(45, seed=6)
    other_images, other_texts = _embeddings(45, seed=7)
    a = cultures.region_ranks(images, texts, regions, "en")
    b = cultures.region_ranks(other_images, other_texts, regions, "en")
    run = CultureRun(None, regions, None, {"m1": [a], "m2": [b]})
    tests = run.model_tests()
    assert list(tests["region"]) == ["r0", "r1", "r2"]
    p = []
    for row in tests.itertuples():
        member = np.array(regions) == row.region
        ha, hb = a.hits("set", "t2i", 1)[member], b.hits("set", "t2i", 1)[member]
        table = [[np.sum(ha & hb), np.sum(ha & ~hb)], [np.sum(~ha & hb), np.sum(~ha & ~hb)]]
        assert (row.only_a, row.only_b) == (table[0][1], table[1][0])
        p.append(1.0 if table[0][1] + table[1][0] == 0 else sm_mcnemar(table, exact=True).pvalue)
        assert row.p_value == pytest.approx(p[-1])
    order = np.argsort(p)
    holm = np.minimum(1, np.maximum.accumulate([(len(p) - i) * p[j] for i, j in enumerate(order)]))
    assert tests["p_holm"].to_numpy()[order] == pytest.approx(holm)


@pytest.mark.skipif(__import__("shutil").which("make") is None, reason="needs make")
def test_make_report_cultures_renders_offline_from_the_fixture(regions_set, tmp_path):
    import os
    import subprocess
    import sys

    from labclip.config import PROJ_ROOT

    env = {**os.environ, "PYTHONPATH": str(PROJ_ROOT / "src")}
    make = ["make", "--no-print-directory", "-C", str(PROJ_ROOT), "-o", "setup", "-o", "sysdeps", "report-cultures",
            f"PY={sys.executable}", f"OUT={tmp_path / 'out'}", "MODEL=demo", "LANGS=en ru"]
    missing = subprocess.run(make, capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "make report-cultures needs DATASET=" in missing.stderr
    done = subprocess.run([*make, f"DATASET={regions_set}"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert {"07_cultures.html", "07_cultures.json", "07_cultures.pdf"} <= {p.name for p in out.iterdir()}
    assert "Own-culture advantage" in (out / "07_cultures.html").read_text(encoding="utf-8")


def test_bench_cultures_prints_time_and_peak_of_the_breakdown(tmp_path):
    import subprocess
    import sys

    from labclip.config import PROJ_ROOT

    doc = tmp_path / "benchmarks.md"
    result = subprocess.run([sys.executable, str(PROJ_ROOT / "benchmarks" / "bench_cultures.py"), "--images", "360",
                             "--regions", "6", "--languages", "3", "--dim", "32", "--permutations", "99",
                             "--doc", str(doc)], capture_output=True, text=True, check=True, timeout=300,
                            cwd=PROJ_ROOT)
    assert "360 images in 6 regions x 3 languages" in result.stdout
    assert re.search(r"region x language breakdown .*\s+[\d.]+\s+[\d.]+\s+[\d.]+\n", result.stdout)
    assert re.search(r"peak of the breakdown: [\d.]+x one language's matrix \((within|ABOVE) the 2x target", result.stdout)
    assert "the target is defined at 3600 images" in result.stdout
    assert "<!-- bench_cultures: begin -->" in doc.read_text(encoding="utf-8")


def test_an_instructors_set_renders_with_its_culture_specific_images_beside_the_others(tmp_path):
    path = _instructor_set(tmp_path, ["yes", "no", "yes", "no", "no", "yes"])
    out = tmp_path / "out"
    assert cli_main(["report", "--notebooks", "07_cultures", "--dataset", str(path), "--model", "demo",
                     "--langs", "en", "ru", "--no-pdf", "--out", str(out)]) == 0
    page = (out / "07_cultures.html").read_text(encoding="utf-8")
    assert "Culture-specific images" in page and "culture-specific (3 images)" in page and "other (3 images)" in page
    assert "Kenya" in page and "Peru" in page and str(tmp_path) not in page
