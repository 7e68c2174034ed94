"""Cross-cultural retrieval: recall per (image region, caption language), and the tests a student asks of it.

A caption set whose images carry a region (Crossmodal-3600's ``image/locale``, kept as ``region`` by
:mod:`labclip.datasets`; any caption file's ``region`` column) is scored from one similarity matrix per
language, computed block by block (never the whole matrix), one caption per image (the first, CLIP_benchmark's
definition). Each caption and image is ranked two ways (:data:`SCOPES`): within the whole set (the published
definition) and within its image's region only (a harder, culture-local task: every distractor comes from the
same region). The functions return plain numbers and :class:`labclip.stats.Estimate` s; no display library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

from . import stats
from .errors import LabclipError

KS = (1, 5, 10)
SET, REGION = "set", "region"
SCOPES = {SET: "ranked among all images and captions of the set (the published definition)",
          REGION: "ranked among the images and captions of the image's own region only (culture-local)"}
ROW_ORDER = ("t2i", "i2t")  # the order of the directions in region_ranks and recall_rows
# Elements of one block of the similarity matrix (rows × columns): bounds the temporaries at a few MB.
BLOCK_ELEMENTS = 1 << 20
N_PERMUTATIONS = 9999

# Crossmodal-3600 took 100 images in each of 36 regions, each chosen for one of its 36 languages being spoken
# there; a record's ``image/locale`` is that language's code. The language spoken where each locale's images
# were taken, as a table (a region may list several languages):
XM3600_REGION_LANGUAGES: dict[str, tuple[str, ...]] = {
    "ar": ("ar",), "bn": ("bn",), "cs": ("cs",), "da": ("da",), "de": ("de",), "el": ("el",),
    "en": ("en",), "es": ("es",), "fa": ("fa",), "fi": ("fi",), "fil": ("fil",), "fr": ("fr",),
    "he": ("he",), "hi": ("hi",), "hr": ("hr",), "hu": ("hu",), "id": ("id",), "it": ("it",),
    "ja": ("ja",), "ko": ("ko",), "mi": ("mi",), "nl": ("nl",), "no": ("no",), "pl": ("pl",),
    "pt": ("pt",), "quz": ("quz",), "ro": ("ro",), "ru": ("ru",), "sv": ("sv",), "sw": ("sw",),
    "te": ("te",), "th": ("th",), "tr": ("tr",), "uk": ("uk",), "vi": ("vi",), "zh": ("zh",),
}


@dataclass(frozen=True)
class RegionRanks:
    """Ranks (1 = best; a tie with a wrong answer counts against) of one caption language, one caption per image.

    Attributes:
        language: the caption language.
        regions: ``(n_images,)`` index of each image's region in ``names``.
        names: the region names.
        ranks: ``{(scope, direction): (n_images,) ranks}``; ``t2i`` ranks each image's caption's own image,
            ``i2t`` each image's own caption; ``scope`` is :data:`SET` or :data:`REGION`.
    """

    language: str
    regions: np.ndarray
    names: tuple[str, ...]
    ranks: dict

    def hits(self, scope: str = SET, direction: str = "t2i", k: int = 1) -> np.ndarray:
        """One boolean per image: its own caption (``i2t``) or image (``t2i``) among the first ``k``."""
        return self.ranks[(scope, direction)] <= k


def region_index(regions: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each image's region as an index into the sorted region names.

    Raises:
        LabclipError: an empty region name (the image's row, counted from 1, is named).
    """
    empty = [i for i, r in enumerate(regions) if not str(r).strip()]
    if empty:
        raise LabclipError(f"image {empty[0] + 1} has an empty region; every image needs one")
    names, index = np.unique(np.asarray([str(r).strip() for r in regions]), return_inverse=True)
    return index.astype(np.intp), tuple(str(n) for n in names)


def region_ranks(image_emb: np.ndarray, text_emb: np.ndarray, regions: Sequence[str], language: str = "",
                 block_elements: int = BLOCK_ELEMENTS) -> RegionRanks:
    """Rank every image's caption and image in the whole set and within its region, from one similarity matrix.

    The matrix ``images × captions`` (cosine, float32) is computed ``block_elements`` at a time and never held
    whole (twice: once for the right pairs' scores, once to rank against them): memory beyond the embeddings is
    O(n_images) plus one block.

    Args:
        image_emb: ``(n, dim)`` image embeddings.
        text_emb: ``(n, dim)`` caption embeddings, caption ``i`` describing image ``i``.
        regions: the region of each image.
        language: the captions' language (recorded).
        block_elements: elements of one block of rows.

    Raises:
        LabclipError: shapes that don't pair one caption with each image, or a region per image.
    """
    images = _unit(image_emb)
    texts = _unit(text_emb)
    n = len(images)
    if texts.shape != images.shape or n < 1:
        raise LabclipError(f"need one caption embedding per image: {texts.shape} vs {images.shape}")
    if len(regions) != n:
        raise LabclipError(f"need one region per image: {len(regions)} regions for {n} images")
    index, names = region_index(regions)
    step = max(1, block_elements // n)
    blocks = [np.arange(start, min(start + step, n)) for start in range(0, n, step)]
    # The right pairs' scores from the very products the ranks compare them with, so a tie is a tie.
    own = np.empty(n, dtype=np.float32)
    for rows in blocks:
        own[rows] = (images[rows] @ texts.T)[np.arange(len(rows)), rows]
    ranks = {key: np.ones(n, dtype=np.int64) for key in ((s, d) for s in (SET, REGION) for d in ROW_ORDER)}
    for rows in blocks:
        block = images[rows] @ texts.T
        same = index[rows, None] == index[None, :]
        better_text = block >= own[rows, None]
        better_text[np.arange(len(rows)), rows] = False
        ranks[(SET, "i2t")][rows] += np.count_nonzero(better_text, axis=1)
        ranks[(REGION, "i2t")][rows] += np.count_nonzero(better_text & same, axis=1)
        better_image = block >= own[None, :]
        better_image[np.arange(len(rows)), rows] = False
        ranks[(SET, "t2i")] += np.count_nonzero(better_image, axis=0)
        ranks[(REGION, "t2i")] += np.count_nonzero(better_image & same, axis=0)
    return RegionRanks(language, index, names, ranks)


def _unit(emb) -> np.ndarray:
    a = np.asarray(emb, dtype=np.float32)
    if a.ndim != 2:
        raise LabclipError(f"embeddings must be a 2-D array, got shape {a.shape}")
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def recall_rows(results: Sequence[RegionRanks], ks: Sequence[int] = KS) -> list[dict]:
    """Recall@k with its Wilson interval per (region, language, scope, direction, k), and over all regions.

    Returns:
        One dict per figure: ``language``, ``region`` (``"all"`` for every image), ``scope``, ``direction``,
        ``k``, ``hits``, ``n``, ``recall``, ``low``, ``high`` (fractions).
    """
    rows = []
    for r in results:
        groups = [("all", np.ones(len(r.regions), dtype=bool))]
        groups += [(name, r.regions == i) for i, name in enumerate(r.names)]
        for scope in (SET, REGION):
            for direction in ROW_ORDER:
                for k in ks:
                    hits = r.hits(scope, direction, k)
                    for region, member in groups:
                        if region == "all" and scope == REGION and len(r.names) == 1:
                            continue
                        h, m = int(np.count_nonzero(hits & member)), int(np.count_nonzero(member))
                        low, high = stats.wilson_interval(h, m)
                        rows.append({"language": r.language, "region": region, "scope": scope,
                                     "direction": direction, "k": k, "hits": h, "n": m, "recall": h / m,
                                     "low": low, "high": high})
    return rows


@dataclass(frozen=True)
class OwnCulture(stats.Significance):
    """The own-culture advantage: do captions in a language retrieve images from where it is spoken better?

    For image ``i`` and language ``L``, ``d[i, L]`` is its hit in ``L`` minus its mean hit in the other
    languages (paired: each image against itself, so how hard an image is cancels). Per language, the effect
    is the mean ``d`` over its home images minus the mean over the other images (stratified: one contrast per
    language); :attr:`effect` is the mean over the languages that have home images and other images.

    Attributes:
        effect: in points (percentage points of recall).
        low: lower end of its 95% interval (percentile bootstrap over images, within their region).
        high: upper end.
        p_value: two-sided permutation test of region labels over images (scipy ``permutation_test``, exact
            when every permutation fits in the resamples).
        per_language: ``{language index: its effect in points, an Estimate with the same bootstrap interval}``.
        n_images: images with a region.
        n_permutations: permutations the p-value counts.
        exact: whether every permutation was enumerated.
    """

    effect: float
    low: float
    high: float
    p_value: float
    per_language: dict
    n_images: int
    n_permutations: int
    exact: bool


def home_languages(names: Sequence[str], languages: Sequence[str],
                   table: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """The evaluated languages spoken in each region: from ``table`` (default: Crossmodal-3600's,
    :data:`XM3600_REGION_LANGUAGES`), else a region named by an evaluated language's code is that language's."""
    table = XM3600_REGION_LANGUAGES if table is None else table
    out = {}
    for name in names:
        spoken = table.get(name, (name,))
        out[name] = tuple(lang for lang in spoken if lang in languages)
    return out


def own_culture(hits: np.ndarray, regions: np.ndarray, home: Sequence[Sequence[int]],
                n_resamples: int = N_PERMUTATIONS, seed: int = 0) -> OwnCulture:
    """Test the own-culture advantage (see :class:`OwnCulture`).

    Args:
        hits: ``(n_images, n_languages)`` booleans, e.g. text→image hits@1 in each language.
        regions: ``(n_images,)`` region index of each image.
        home: for each region index, the indices of the languages spoken there.
        n_resamples: permutations (and bootstrap resamples); all of them are enumerated when
            ``n_images!`` is not larger.
        seed: seed of the random permutations and the bootstrap.

    Raises:
        LabclipError: fewer than two languages, or no language with both home and other images.
    """
    h = np.asarray(hits, dtype=np.float64)
    regions = np.asarray(regions, dtype=np.intp)
    if h.ndim != 2 or h.shape[1] < 2 or h.shape[0] != len(regions):
        raise LabclipError(f"the own-culture test needs hits of every image in at least two languages, got {h.shape}")
    n, n_langs = h.shape
    n_regions = int(regions.max()) + 1
    d = h - (h.sum(axis=1, keepdims=True) - h) / (n_langs - 1)
    weights, used = _contrast_weights(regions, home, n_regions, n_langs)
    if not used:
        raise LabclipError("the own-culture test needs a language spoken in some of the regions and not in others")
    per_image_region = d @ weights.T  # (n, n_regions): contribution of image i if it were in region r
    rows = np.arange(n)

    def statistic(labels, axis=-1):
        return 100 * per_image_region[rows, np.asarray(labels, dtype=np.intp)].sum(axis=axis)

    observed = float(statistic(regions))
    test = _scipy_stats.permutation_test((regions,), statistic, permutation_type="pairings", vectorized=True,
                                         n_resamples=n_resamples, batch=200, rng=np.random.default_rng(seed))
    contribution = 100 * per_image_region[np.arange(n), regions]
    low, high = stats.bootstrap_interval(contribution, np.sum, n_resamples=n_resamples, seed=seed, strata=regions)
    per_language = {}
    for lang in used:
        share = weights[regions, lang] * len(used)  # 1/|home| at home, -1/|elsewhere| elsewhere
        part = 100 * share * d[:, lang]
        per_language[lang] = stats.Estimate(float(part.sum()), *stats.bootstrap_interval(
            part, np.sum, n_resamples=n_resamples, seed=seed, strata=regions), n=n, method="stratified bootstrap")
    total = len(test.null_distribution)
    return OwnCulture(observed, low, high, float(test.pvalue), per_language, n, total,
                      exact=n <= 12 and math.factorial(n) <= n_resamples)


def _contrast_weights(regions: np.ndarray, home: Sequence[Sequence[int]], n_regions: int,
                      n_langs: int) -> tuple[np.ndarray, list[int]]:
    """``w[r, L]``: the weight of an image in region ``r`` on ``d[:, L]`` in the effect."""
    counts = np.bincount(regions, minlength=n_regions)
    spoken = np.zeros((n_regions, n_langs), dtype=bool)
    for r in range(n_regions):
        spoken[r, list(home[r])] = True
    n_home = counts @ spoken
    used = [lang for lang in range(n_langs) if 0 < n_home[lang] < len(regions)]
    w = np.zeros((n_regions, n_langs))
    for lang in used:
        w[:, lang] = np.where(spoken[:, lang], 1 / n_home[lang], -1 / (len(regions) - n_home[lang])) / len(used)
    return w, used


@dataclass(frozen=True)
class Heterogeneity:
    """Chi-square test of independence of region and hit (are the regions' recalls more different than chance?).

    Attributes:
        statistic: the chi-square statistic.
        dof: degrees of freedom (regions − 1).
        p_value: its p-value.
        min_expected: the smallest expected count; below 5 the chi-square approximation is rough.
    """

    statistic: float
    dof: int
    p_value: float
    min_expected: float


def heterogeneity(hits: np.ndarray, regions: np.ndarray) -> Heterogeneity | None:
    """Chi-square test on the regions × (hit, miss) table (scipy ``chi2_contingency``); ``None`` when it is
    undefined (one region, or every image a hit or every image a miss)."""
    hits = np.asarray(hits, dtype=bool)
    regions = np.asarray(regions, dtype=np.intp)
    n_regions = int(regions.max()) + 1
    table = np.stack([np.bincount(regions, weights=hits, minlength=n_regions),
                      np.bincount(regions, weights=~hits, minlength=n_regions)], axis=1)
    table = table[table.sum(axis=1) > 0]
    if len(table) < 2 or (table.sum(axis=0) == 0).any():
        return None
    result = _scipy_stats.chi2_contingency(table, correction=False)
    return Heterogeneity(float(result.statistic), int(result.dof), float(result.pvalue),
                         float(result.expected_freq.min()))


def ranked_regions(hits: np.ndarray, regions: np.ndarray, names: Sequence[str], seed: int = 0) -> list[dict]:
    """Regions from worst to best by recall pooled over languages, each with its 95% interval.

    Args:
        hits: ``(n_images, n_languages)`` booleans.
        regions: region index per image.
        names: region names.
        seed: bootstrap seed.

    Returns:
        One dict per region: ``region``, ``estimate`` (an :class:`labclip.stats.Estimate`: the hit rate over the
        region's images × languages; with several languages its interval is a bootstrap over images, since an
        image's languages succeed or fail together), ``n_images``.
    """
    h = np.asarray(hits, dtype=bool)
    h = h[:, None] if h.ndim == 1 else h
    out = []
    for i, name in enumerate(names):
        member = np.flatnonzero(regions == i)
        flat = h[member].ravel()
        groups = np.repeat(member, h.shape[1]) if h.shape[1] > 1 and len(member) > 1 else None
        out.append({"region": name, "estimate": stats.proportion(flat, groups, seed=seed), "n_images": len(member)})
    return sorted(out, key=lambda row: (row["estimate"].value, row["region"]))
