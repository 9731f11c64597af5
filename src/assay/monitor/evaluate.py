"""From a window's state to its tests, estimates and alarms (:func:`accumulate`, :func:`evaluate_window`).

Tests per window, each against the reference (the statistics themselves live in :mod:`assay.stats.drift`):

* class mix of the predictions: chi-squared homogeneity below ``small_window`` rows, Jensen-Shannon
  distance (base 2) above, judged against a threshold calibrated on reference chunks of the window's size;
* top-label confidence and predictive entropy: KS on the reference's fixed bins (conservative: binning can
  only lower the statistic), with the normalised Wasserstein distance as the effect size;
* shares of the window that are above the ATC threshold (label-free accuracy, Garg et al. 2022), near the
  decision margin, and flagged by the OOD detector: Fisher's exact test against the reference's counts
  (two samples: the reference is a sample too);
* each monitored feature (tabular input columns, or embedding dimensions): binned KS on its equal-mass
  reference bins (continuous) or chi-squared with an unseen-category bin (discrete);
* embeddings jointly: MMD with an RBF kernel and a permutation p-value (b + 1) / (m + 1) on a seeded sample.

A window's p-values fall in three families: the output tests, the monitored features (one test each), and
the multivariate embedding test. Each family is adjusted by Benjamini-Hochberg at its share of the settings'
FDR (:data:`FAMILY_WEIGHTS`: 0.4, 0.5, 0.1), and the shares add up to the FDR: under no drift the chance that
a window raises any alarm is at most the FDR level (BH controls the family-wise error under the global null,
for independent or positively dependent tests; Bonferroni across the families).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from assay.monitor.settings import MonitorSettings
from assay.monitor.state import LogBatch, WindowState, row_priority
from assay.reference import FeatureBins, Reference, bin_counts, confidence_and_entropy
from assay.stats.bootstrap import clopper_pearson
from assay.stats.drift import (
    DriftTest,
    binned_ks_test,
    binned_wasserstein,
    categorical_test,
    class_mix_test,
    mmd_permutation_test,
)
from assay.stats.multiple_testing import benjamini_hochberg

#: Confidence sums are kept as integers in units of 2^-32.
FIXED_POINT = 2.0**32

__all__ = ["FAMILY_WEIGHTS", "FIXED_POINT", "MonitorContext", "TestResult", "WindowResult", "accumulate",
           "evaluate_window", "family", "feature_counts", "near_margin"]


@dataclass(frozen=True)
class TestResult:
    """One test of one window (the snapshot's ``tests`` entries)."""

    name: str
    statistic: float
    method: str
    threshold: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    alarm: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": _finite(self.statistic), "threshold": _finite(self.threshold),
                "p_value": _finite(self.p_value), "p_adjusted": _finite(self.p_adjusted), "method": self.method,
                "alarm": bool(self.alarm)}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class WindowResult:
    """A closed window: its span, size, tests, label-free estimates and alarms (plain JSON via ``to_dict``)."""

    index: int
    start: float | None
    end: float | None
    n: int
    requests: int
    insufficient: bool
    tests: tuple[TestResult, ...] = ()
    alarms: tuple[str, ...] = ()
    estimated_accuracy: dict[str, Any] | None = None
    doc_accuracy: dict[str, Any] | None = None
    ood_rate: dict[str, Any] | None = None
    margin_share: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def alarm(self) -> bool:
        return bool(self.alarms)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "start": self.start, "end": self.end, "n": self.n, "requests": self.requests,
                "insufficient": self.insufficient, "estimated_accuracy": self.estimated_accuracy,
                "doc_accuracy": self.doc_accuracy, "ood_rate": self.ood_rate, "margin_share": self.margin_share,
                "tests": [t.to_dict() for t in self.tests], "alarms": list(self.alarms), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowResult:
        tests = tuple(TestResult(name=t["name"], statistic=np.nan if t["statistic"] is None else t["statistic"],
                                 method=t["method"], threshold=t["threshold"], p_value=t["p_value"],
                                 p_adjusted=t["p_adjusted"], alarm=t["alarm"]) for t in d["tests"])
        return cls(index=int(d["index"]), start=d["start"], end=d["end"], n=int(d["n"]), requests=int(d["requests"]),
                   insufficient=bool(d["insufficient"]), tests=tests, alarms=tuple(d["alarms"]),
                   estimated_accuracy=d["estimated_accuracy"], doc_accuracy=d["doc_accuracy"], ood_rate=d["ood_rate"],
                   margin_share=d["margin_share"], notes=tuple(d.get("notes", ())))


@dataclass
class MonitorContext:
    """What every window is compared with, computed once from the reference (and, when the bundle has its
    clean logits, the reference's share of predictions near the margin)."""

    reference: Reference
    settings: MonitorSettings
    reference_near_margin: int | None = None
    ood_threshold: float = 0.0
    reference_ood: int = 0
    reference_atc_above: int | None = None
    js_thresholds: dict[int, tuple[float, str] | None] = field(default_factory=dict)

    @classmethod
    def build(cls, reference: Reference, settings: MonitorSettings,
              reference_logits: np.ndarray | None = None) -> MonitorContext:
        confidence = reference.confidence.astype(np.float64)
        # The OOD detector is max softmax probability at the operating point that keeps ood_tpr of the
        # reference (the FPR@95TPR point of the evaluation's OOD check): flagged when confidence < threshold.
        ordered = np.sort(confidence)
        k = int(math.floor((1 - settings.ood_tpr) * reference.n))
        threshold = float(ordered[min(k, reference.n - 1)])
        near = None
        if reference_logits is not None and len(reference_logits) == reference.n:
            near = int(near_margin(np.asarray(reference_logits, dtype=np.float64), settings.margin).sum())
        above = None
        if reference.atc_threshold_maxconf is not None:
            above = int((confidence > reference.atc_threshold_maxconf).sum())
        return cls(reference=reference, settings=settings, reference_near_margin=near, ood_threshold=threshold,
                   reference_ood=int((confidence < threshold).sum()), reference_atc_above=above)

    def js_threshold(self, size: int) -> tuple[float, str] | None:
        """Threshold of the class-mix JS distance for windows of ``size`` rows: reference chunks of that size
        against the rest (``Reference.recompute_chunks``), by the settings' rule; None when the reference holds
        too few such chunks for the rule (the conformal quantile q needs q / (1 - q) chunks, 99 at 0.99; mean +
        k sd at least :data:`MIN_SIGMA_CHUNKS`): then the chi-squared p-value decides."""
        if size not in self.js_thresholds:
            chunks = self.reference.recompute_chunks(chunk_size=size, n_chunks=1000)
            result = None
            s = self.settings
            if chunks is not None and "prediction_js" in chunks.values:
                if s.threshold_rule == "quantile":
                    if chunks.count >= math.ceil(s.threshold_quantile / (1 - s.threshold_quantile) - 1e-9):
                        value = chunks.threshold("prediction_js", quantile=s.threshold_quantile)
                        result = (float(value), f"chunk quantile {s.threshold_quantile:g} (conformal order statistic) "
                                                f"of {chunks.count} reference chunks of {size} rows")
                elif chunks.count >= MIN_SIGMA_CHUNKS:
                    value = chunks.threshold("prediction_js", n_sigma=s.n_sigma)
                    result = (float(value), f"mean+{s.n_sigma:g}sd of {chunks.count} reference chunks of {size} rows")
            self.js_thresholds[size] = result
        return self.js_thresholds[size]


#: Fewest reference chunks from which a mean + k sd threshold is set.
MIN_SIGMA_CHUNKS = 20


def near_margin(logits: np.ndarray, margin: float, confidence: np.ndarray | None = None) -> np.ndarray:
    """Rows whose two largest softmax probabilities differ by less than ``margin``: with l1 >= l2 the two
    largest logits, p1 - p2 = p1 (1 - exp(l2 - l1)), from the top-label confidence p1 (computed here unless
    given)."""
    logits = np.asarray(logits, dtype=np.float64)
    top2 = np.partition(logits, logits.shape[1] - 2, axis=1)[:, -2:]
    if confidence is None:
        confidence = 1.0 / np.exp(logits - top2[:, 1:]).sum(axis=1)
    return np.asarray(confidence * -np.expm1(top2[:, 0] - top2[:, 1]) < margin)


def feature_counts(bins: FeatureBins, x: np.ndarray) -> np.ndarray:
    """``bins.histogram(x)`` for many rows, fast: per inner edge, how many values lie at or above it (one
    comparison pass over the matrix each, in the features' own float32 against each edge rounded up to the
    next float32: exact, since for a float32 v, v >= e iff v >= the smallest float32 >= e), then differences.
    NaN padding of features with fewer bins compares False and gives empty bins, as in ``FeatureBins``."""
    x = np.asarray(x)
    width = bins.edges.shape[1] - 1
    inner = bins.edges[:, 1:-1].copy()  # (D, width - 1): each feature's inner edges, then its last edge and NaN
    inner[np.arange(width - 1) >= (bins.n_bins - 1)[:, None]] = np.nan
    if x.dtype == np.float32:
        rounded = inner.astype(np.float32)
        below = np.isfinite(inner) & (rounded.astype(np.float64) < inner)
        inner_cmp = np.where(below, np.nextafter(rounded, np.float32(np.inf)), rounded)
    else:
        x = x.astype(np.float64)
        inner_cmp = inner
    at_or_above = np.empty((width + 1, bins.n_features), dtype=np.int64)
    at_or_above[0] = len(x)
    at_or_above[width] = 0
    for k in range(width - 1):
        at_or_above[k + 1] = np.count_nonzero(x >= inner_cmp[:, k], axis=0)  # ~25 % faster than .sum(axis=0)
    counts = (at_or_above[:-1] - at_or_above[1:]).T
    # Past a feature's inner edges the NaN ones count 0: its last bin holds what is at or above its last inner edge.
    return np.ascontiguousarray(np.maximum(counts, 0))


def accumulate(state: WindowState, batch: LogBatch, positions: np.ndarray, ctx: MonitorContext) -> None:
    """Add ``batch`` (rows at log ``positions``) to ``state``: O(rows), never a pass over earlier rows."""
    if len(batch) == 0:
        return
    ref = ctx.reference
    logits = batch.logits.astype(np.float64)
    confidence, entropy = confidence_and_entropy(logits)
    state.n += len(batch)
    state.requests += int(batch.first.sum())
    state.start = min(state.start, float(batch.time.min()))
    state.end = max(state.end, float(batch.time.max()))
    state.class_counts += np.bincount(logits.argmax(axis=1), minlength=ref.num_classes)
    state.confidence_counts += ref.confidence_histogram.count(confidence)
    if ref.entropy_histogram is not None:
        state.entropy_counts += ref.entropy_histogram.count(entropy)
    # Fixed point (2^-32): integer sums are exact, so any chunking of the log gives the same window.
    state.confidence_sum += int(np.rint(confidence * FIXED_POINT).astype(np.int64).sum())
    state.confidence_sq_sum += int(np.rint(confidence**2 * FIXED_POINT).astype(np.int64).sum())
    if ref.atc_threshold_maxconf is not None:
        state.atc_above += int((confidence > ref.atc_threshold_maxconf).sum())
    state.near_margin += int(near_margin(logits, ctx.settings.margin, confidence).sum())
    state.ood += int((confidence < ctx.ood_threshold).sum())
    features = batch.features
    if features is not None and ref.features is not None and state.feature_counts is not None:
        has = ~np.isnan(features).any(axis=1)
        x = features[has]
        if len(x):
            state.n_features += len(x)
            state.feature_counts += feature_counts(ref.features, x)
            assert state.feature_unseen is not None
            for d in np.flatnonzero(ref.features.discrete):  # unseen categories: their own bin, not a level's
                levels = ref.features.levels[d]
                unseen = x[~np.isin(x[:, d], levels[np.isfinite(levels)]), d]
                if unseen.size:
                    state.feature_unseen[d] += unseen.size
                    edges = ref.features.feature_edges(int(d))
                    state.feature_counts[d, : edges.size - 1] -= bin_counts(unseen, edges)
            if state.sample_dims and ctx.settings.sample_size:
                _keep_sample(state, x, row_priority(positions[has], ctx.settings.seed), ctx.settings.sample_size)


def _keep_sample(state: WindowState, x: np.ndarray, priority: np.ndarray, k: int) -> None:
    """Bottom-k by priority: the k rows of smallest priority among those seen, ordered by priority (the new
    rows are cut to their own k smallest first, so a large batch is never copied whole)."""
    if len(priority) > k:
        few = np.argpartition(priority, k - 1)[:k]
        x, priority = x[few], priority[few]
    rows = np.concatenate([state.sample, x.astype(np.float32)])
    keys = np.concatenate([state.sample_priority, priority])
    order = np.argsort(keys, kind="stable")[:k]
    state.sample, state.sample_priority = rows[order], keys[order]


# ------------------------------------------------------------------------------------------ evaluation


def _fisher(k: int, n: int, k_ref: int, n_ref: int, alternative: Literal["two-sided", "less", "greater"]) -> float:
    """Fisher's exact test of the 2 x 2 table (window, reference) x (in, out) (scipy)."""
    from scipy.stats import fisher_exact

    table = np.array([[k, n - k], [k_ref, n_ref - k_ref]], dtype=np.int64)
    return float(fisher_exact(table, alternative=alternative).pvalue)  # type: ignore[attr-defined, unused-ignore]


def _proportion(k: int, n: int, confidence: float) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n, confidence)
    return {"value": k / n, "ci": [lo, hi]}


def _from_drift(test: DriftTest, name: str, threshold: float | None = None) -> TestResult:
    return TestResult(name=name, statistic=float(test.statistic), method=test.method, threshold=threshold,
                      p_value=None if test.p_value is None else float(test.p_value))


def evaluate_window(state: WindowState, ctx: MonitorContext) -> WindowResult:
    """Tests, estimates and alarms of one window (see the module docstring)."""
    s, ref = ctx.settings, ctx.reference
    start = None if not math.isfinite(state.start) else state.start
    end = None if not math.isfinite(state.end) else state.end
    base: dict[str, Any] = {"index": state.index, "start": start, "end": end, "n": state.n, "requests": state.requests}
    if state.n < s.min_window:
        return WindowResult(**base, insufficient=True,
                            notes=(f"insufficient data: {state.n} rows, fewer than the minimum {s.min_window}",))
    n = state.n
    notes: list[str] = []
    tests: list[TestResult] = []
    # Output drift: class mix.
    mix = class_mix_test(ref.prediction_counts, state.class_counts, small_window=s.small_window)
    if mix.p_value is None:
        calibrated = ctx.js_threshold(n)
        if calibrated is None:  # no chunks of this size fit in the reference: the chi-squared test decides
            mix = class_mix_test(ref.prediction_counts, state.class_counts, small_window=n + 1)
            tests.append(_from_drift(mix, "class_mix"))
        else:
            value, method = calibrated
            tests.append(TestResult(name="class_mix", statistic=float(mix.statistic), threshold=value,
                                    method=f"{mix.method}; threshold: {method}", alarm=float(mix.statistic) > value))
    else:
        tests.append(_from_drift(mix, "class_mix"))
    # Confidence and entropy distributions.
    confidence = ref.confidence.astype(np.float64)
    tests.append(_from_drift(binned_ks_test(ref.confidence_histogram.counts, state.confidence_counts), "confidence_ks"))
    tests.append(TestResult(name="confidence_wasserstein", method="normalised Wasserstein-1 on the reference bins "
                            "(effect size; the KS test alarms)", statistic=binned_wasserstein(
                                ref.confidence_histogram.counts, state.confidence_counts,
                                ref.confidence_histogram.edges, float(confidence.std()))))
    if ref.entropy_histogram is not None and ref.entropy is not None:
        tests.append(_from_drift(binned_ks_test(ref.entropy_histogram.counts, state.entropy_counts), "entropy_ks"))
        tests.append(TestResult(name="entropy_wasserstein", method="normalised Wasserstein-1 on the reference bins "
                                "(effect size; the KS test alarms)", statistic=binned_wasserstein(
                                    ref.entropy_histogram.counts, state.entropy_counts, ref.entropy_histogram.edges,
                                    float(ref.entropy.astype(np.float64).std()))))
    # Shares: ATC (label-free accuracy), near the margin, OOD.
    estimated = None
    if ctx.reference_atc_above is not None:
        estimated = {"method": "ATC", **_proportion(state.atc_above, n, s.confidence)}
        tests.append(TestResult(
            name="estimated_accuracy", statistic=state.atc_above / n, method="ATC share above the reference "
            "threshold vs the reference's, Fisher's exact test (one-sided: lower)",
            p_value=_fisher(state.atc_above, n, ctx.reference_atc_above, ref.n, "less")))
    doc = None
    if ref.accuracy is not None:
        mean = state.confidence_sum / FIXED_POINT / n
        var = max(state.confidence_sq_sum / FIXED_POINT / n - mean**2, 0.0)
        value = ref.accuracy - (float(confidence.mean()) - mean)
        from scipy.special import ndtri

        half = float(ndtri(0.5 + s.confidence / 2)) * math.sqrt(var / n + float(confidence.var()) / ref.n)
        doc = {"value": value, "ci": [value - half, value + half]}
    margin_share = state.near_margin / n
    if ctx.reference_near_margin is not None:
        tests.append(TestResult(
            name="near_margin_share", statistic=margin_share, method=f"share with top-2 probability gap < "
            f"{s.margin:g} vs the reference's, Fisher's exact test (two-sided)",
            p_value=_fisher(state.near_margin, n, ctx.reference_near_margin, ref.n, "two-sided")))
    ood = {**_proportion(state.ood, n, s.confidence), "threshold": ctx.ood_threshold}
    tests.append(TestResult(
        name="ood_rate", statistic=state.ood / n, method=f"share with max softmax probability below the threshold "
        f"keeping {s.ood_tpr:.0%} of the reference, Fisher's exact test (one-sided: higher)",
        p_value=_fisher(state.ood, n, ctx.reference_ood, ref.n, "greater")))
    # Input drift: monitored features, one by one, and embeddings jointly.
    feats = ref.features
    if feats is not None and state.feature_counts is not None and state.n_features >= s.min_window:
        label = "input" if feats.space == "inputs" else "embedding"
        for d in range(feats.n_features):
            nb = int(feats.n_bins[d])
            ref_counts, cur_counts = feats.counts[d, :nb], state.feature_counts[d, :nb]
            if feats.discrete[d]:
                assert state.feature_unseen is not None
                levels = [f"{v:g}" for v in feats.levels[d, :nb]]
                unseen = int(state.feature_unseen[d])
                cur = dict(zip(levels, cur_counts.tolist(), strict=True))
                cur["<unseen>"] = unseen
                test = categorical_test(dict(zip(levels, ref_counts.tolist(), strict=True)), cur)
            else:
                test = binned_ks_test(ref_counts, cur_counts)
            tests.append(_from_drift(test, f"{label}[{d}]"))
        if feats.sample is not None and state.sample.shape[0] >= 2 and s.sample_size:
            # A fresh seeded subset of the reference sample per window: one fixed subset would be compared with
            # every window, and an atypical draw of it would make every window's p-value small together.
            pick = np.random.default_rng([s.seed, state.index, 0x4D4D44]).permutation(len(feats.sample))
            reference_rows = feats.sample[np.sort(pick[: max(s.sample_size, 2)])]
            mmd = mmd_permutation_test(reference_rows, state.sample, n_permutations=s.mmd_permutations,
                                       seed=s.seed * 1_000_003 + state.index)
            tests.append(_from_drift(mmd, f"{label}_mmd"))
    elif feats is not None:
        notes.append(f"input drift not tested: {state.n_features} rows of this window carry monitored features "
                     f"({feats.space}; log them with --log-{'inputs' if feats.space == 'inputs' else 'features'})")
    tests = _adjust(tests, s.fdr)
    alarms = tuple(f"{t.name}: {_alarm_text(t)}" for t in tests if t.alarm)
    return WindowResult(**base, insufficient=False, tests=tuple(tests), alarms=alarms, estimated_accuracy=estimated,
                        doc_accuracy=doc, ood_rate=ood, margin_share=margin_share, notes=tuple(notes))


#: Shares of the window's false-alarm budget (the settings' FDR) per family of tests: the output tests, the
#: monitored features one by one, the multivariate embedding test. Renormalised over the families present.
FAMILY_WEIGHTS = {"output": 0.4, "features": 0.5, "multivariate": 0.1}


def family(name: str) -> str:
    if name.endswith("_mmd"):
        return "multivariate"
    return "features" if name.startswith(("input[", "embedding[")) else "output"


def _adjust(tests: list[TestResult], fdr: float) -> list[TestResult]:
    """Benjamini-Hochberg within each family of p-values at ``fdr`` times the family's weight
    (:data:`FAMILY_WEIGHTS`), families combined by Bonferroni: under no drift the chance of any alarm in the
    window is at most ``fdr``. ``p_adjusted`` is the BH-adjusted p divided by the weight (capped at 1), so a
    test alarms exactly when ``p_adjusted <= fdr``. Why families: a permutation p-value is never below
    1 / (permutations + 1), which one BH ranking across ~70 tests would never reject on its own."""
    with_p = [i for i, t in enumerate(tests) if t.p_value is not None]
    present = {family(tests[i].name) for i in with_p}
    total = sum(FAMILY_WEIGHTS[f] for f in present)
    out = list(tests)
    for fam in present:
        members = [i for i in with_p if family(tests[i].name) == fam]
        weight = FAMILY_WEIGHTS[fam] / total
        reject, adjusted = benjamini_hochberg(np.array([tests[i].p_value for i in members], dtype=np.float64),
                                              min(fdr * weight, 0.999))
        for j, i in enumerate(members):
            t = tests[i]
            out[i] = TestResult(name=t.name, statistic=t.statistic, method=t.method, threshold=t.threshold,
                                p_value=t.p_value, p_adjusted=min(1.0, float(adjusted[j]) / weight),
                                alarm=bool(reject[j]))
    return out


def _alarm_text(t: TestResult) -> str:
    if t.p_adjusted is not None:
        return f"statistic {t.statistic:.4g}, BH-adjusted p {t.p_adjusted:.3g}"
    return f"statistic {t.statistic:.4g} above the threshold {t.threshold:.4g}"

