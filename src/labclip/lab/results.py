"""Typed results of the lab, computed once: a matching (one caption list against the images) and a
comparison (models × languages × strategies). Display and prose read them; nothing recomputes their ranks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import MatchMetrics, RetrievalRanks, match_metrics, retrieval_ranks
from ..stats import Estimate
from ..stats import mean as mean_estimate
from .tables import frequent_distractors, topk_table


@dataclass
class Matching:
    """Paired matching of one caption language against the images, with its ranks computed once."""

    language: str
    images: list[str]
    captions: list[str]
    sim: np.ndarray
    metrics: MatchMetrics
    topk: pd.DataFrame
    distractors: pd.DataFrame
    sigmoid: bool = False
    ranks: RetrievalRanks | None = None

    def __post_init__(self) -> None:
        if self.ranks is None:
            self.ranks = retrieval_ranks(self.sim)

    @property
    def retrieval(self) -> RetrievalRanks:
        """The ranks of the right answers in both directions (computed once, when the matching was made)."""
        assert self.ranks is not None
        return self.ranks

    @property
    def top1(self) -> np.ndarray:
        """Per image: whether its own caption ranks first (image→text top-1 hits)."""
        return self.retrieval.i2t == 1

    def estimates(self) -> dict[str, Estimate]:
        """Top-1 and top-k accuracy in both directions (Wilson) and the MRR (seeded bootstrap) with 95% intervals."""
        return self.retrieval.estimates((1, self.metrics.k))

    def margin(self) -> Estimate:
        """Mean margin of the correct caption over the best wrong one, with a seeded bootstrap interval over images."""
        sim = np.asarray(self.sim, dtype=np.float64)
        wrong = np.where(np.eye(len(sim), dtype=bool), -np.inf, sim).max(axis=1)
        return mean_estimate(np.diag(sim) - wrong)


def matching(label: str, sim: np.ndarray, captions: Sequence[str], images: Sequence[str], *, top_k: int,
             logit_scale: float, logit_bias: float | None, metrics: MatchMetrics | None = None) -> Matching:
    """A :class:`Matching` with its metrics (:func:`labclip.metrics.match_metrics` unless given), ranks, top-k
    table and frequent distractors."""
    captions, images = list(captions), list(images)
    metrics = metrics if metrics is not None else match_metrics(sim, top_k, logit_scale)
    return Matching(language=label, images=images, captions=captions, sim=sim, metrics=metrics,
                    topk=topk_table(sim, captions, metrics.k, logit_scale, images, logit_bias=logit_bias),
                    distractors=frequent_distractors(sim, captions, metrics.k), sigmoid=logit_bias is not None)


@dataclass
class Comparison:
    """Models × languages × strategies on one caption set (:func:`labclip.lab.compare.compare`).

    Attributes:
        table: one row per model, language and strategy (figures, intervals, gap to the reference language).
        reference: the reference language of the gaps.
        n: images in the caption set.
        skipped: what could not be compared, ``"model NAME: why"`` or ``"translation ...: why"``.
        records: per row, who made it (:func:`labclip.lab.provenance.model_record`).
        i2t_hits1: per row, each image's image→text top-1 hit, for paired tests.
        translations: the machine translations used, by translation model.
    """

    table: pd.DataFrame
    reference: str = "en"
    n: int = 0
    skipped: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    i2t_hits1: list[np.ndarray] = field(default_factory=list)
    translations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.table.empty

    def __len__(self) -> int:
        return len(self.table)
