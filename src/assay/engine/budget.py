"""Budgeted ("anytime") evaluation: spend a fixed number of forward passes, seconds, or a share of the full
run on sampled rows of the perturbed views, where each row buys the most certainty.

A full suite costs about a hundred forward passes per row. Under ``--budget`` each budgeted metric (a
:class:`BudgetTarget`: one view, the source rows it may sample, what a row is worth) is a stratum of a finite
population: rows are drawn without replacement, in a seeded random order per view, and the planner hands
chunks of rows to the view :func:`assay.stats.sampling.next_stratum` chooses (``widest``: the widest interval
now, ``total``: the largest variance decrease per unit cost, ``uniform``: the least-sampled share, the
baseline) until the budget is spent or every row of every view was run. A sampled row gets exactly the inputs
and logits it gets in a full run wherever the view seeds its randomness per row (corruptions, input sets; see
:func:`assay.engine.run.run_rows` for attacks), so the intervals are about the value the full run would give
on this data.

Budgets (:func:`parse_budget`): ``20000passes`` (model passes: a row of a view costs its ``cost_per_row``,
an attack its iterations), ``90s`` / ``5m`` / ``1.5h`` (wall clock, each view's seconds per row measured from
its own chunks) and ``10%`` (that share of the full run's passes). The clean run that precedes the planner
counts against the budget (``spent_passes``, ``spent_seconds``). Ctrl-C stops the loop between or inside
chunks: the chunk in flight is dropped and the run so far comes back with ``interrupted=True``.

Two phases. The *uniform* phase gives every view the same number of rows, in rounds, until
:data:`UNIFORM_SHARE` of the planner's budget is spent (the first round is the pilot); how many rows a view gets
there depends on the budget and the clock only, never on the values seen. The *adaptive* phase then hands the
rest to ``next_stratum``. Why both: a view that looks easy by chance gets fewer adaptive rows and keeps its
optimistic estimate, so the plain mean of a view's rows is biased under adaptive allocation. Per view that bias
is small against the exact interval (``tests/test_sampling.py``: coverage above nominal); summed over dozens of
views in a mean corruption accuracy it is not (simulated: 80-90 % coverage of nominal 95 % intervals). Means
over views are therefore estimated from the uniform-phase rows (:meth:`SampledView.uniform_stratum`), a
stratified sample of fixed allocation: unbiased, and the adaptive rows still sharpen every per-view interval.
Giving the uniform phase a third of the budget cost the widest interval about 0.01-0.03 of its ratio to
uniform allocation in simulation (the easy views need about that many rows anyway).
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.engine.backends import Backend, LocalBackend
from assay.engine.run import run_rows
from assay.engine.views import View
from assay.errors import OptionError
from assay.progress import stage
from assay.stats.sampling import OBJECTIVES, Stratum, next_stratum

if TYPE_CHECKING:
    from assay.data.dataset import Dataset
    from assay.models.base import Model

__all__ = ["Budget", "BudgetRun", "BudgetTarget", "SampledView", "parse_budget", "run_budgeted"]

#: The longest budget text accepted (any real budget is a few characters).
MAX_BUDGET_CHARS = 1000
#: Bounds that keep a budget a finite, meaningful number: a year of wall clock, 10^15 passes.
MAX_BUDGET_SECONDS = 366 * 24 * 3600.0
MAX_BUDGET_PASSES = 10**15

#: Share of the planner's budget (after the clean run) spent on equal rows per view before the adaptive phase.
UNIFORM_SHARE = 1 / 3

_SECONDS_PER_UNIT = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_BUDGET = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|sec|m|min|h|passes|%)", re.ASCII)
_BUDGET_FIX = "give a time (90s, 5m, 1.5h), a number of model passes (20000passes) or a share of the full run (10%)"


def _number(value: float) -> str:
    """A budget number as text: 12 significant digits, no exponent (what :func:`parse_budget` reads back)."""
    text = f"{value:.12g}"
    return text if "e" not in text else f"{value:.12f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Budget:
    """What a budgeted run may spend: model passes, wall-clock seconds, or a share of the full run's passes
    (exactly one is set)."""

    passes: int | None = None
    seconds: float | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.passes, self.seconds, self.share)) != 1:
            raise OptionError("a budget is passes, seconds or a share of the full run: exactly one",
                              where="budget", fix=_BUDGET_FIX)

    def text(self) -> str:
        """The budget as :func:`parse_budget` reads it (``20000passes``, ``300s``, ``10%``)."""
        if self.passes is not None:
            return f"{self.passes}passes"
        if self.seconds is not None:
            return f"{_number(self.seconds)}s"
        assert self.share is not None
        return f"{_number(self.share * 100)}%"

    def describe(self) -> str:
        """For people: ``20,000 model passes``, ``5 min``, ``10% of the full run``."""
        from assay.progress import format_seconds

        if self.passes is not None:
            return f"{self.passes:,} model passes"
        if self.seconds is not None:
            return format_seconds(self.seconds)
        assert self.share is not None
        return f"{_number(self.share * 100)}% of the full run"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_budget(text: str) -> Budget:
    """``"5m"``, ``"90s"``, ``"1.5h"``, ``"20000passes"``, ``"10%"`` -> :class:`Budget`. OptionError (what, where,
    fix) for anything else: empty, zero, negative, non-ASCII, longer than :data:`MAX_BUDGET_CHARS`, an unknown
    unit, fractional passes, over 100% or out of range."""
    if not isinstance(text, str):
        raise OptionError(f"--budget must be text, got {type(text).__name__}", where="budget", fix=_BUDGET_FIX)
    if len(text) > MAX_BUDGET_CHARS or not text.isascii():
        what = f"is {len(text):,} characters long" if len(text) > MAX_BUDGET_CHARS else "has non-ASCII characters"
        raise OptionError(f"--budget {_shown(text)} {what}", where="budget", fix=_BUDGET_FIX)
    stripped = text.strip().lower()
    if not stripped:
        raise OptionError("--budget is empty", where="budget", fix=_BUDGET_FIX)
    match = _BUDGET.fullmatch(stripped)
    if match is None:
        raise OptionError(f"--budget {_shown(text)} is not a budget", where="budget", fix=_BUDGET_FIX)
    number, unit = match["number"], match["unit"]
    value = float(number)
    if not value > 0:
        raise OptionError(f"--budget {_shown(text)} must be positive", where="budget", fix=_BUDGET_FIX)
    if unit == "passes":
        if "." in number:
            raise OptionError(f"--budget {_shown(text)}: passes are counted in whole numbers", where="budget",
                              fix="give a whole number of passes, e.g. 20000passes")
        passes = int(number)
        if passes > MAX_BUDGET_PASSES:
            raise OptionError(f"--budget {_shown(text)} is more than {MAX_BUDGET_PASSES:.0e} passes",
                              where="budget", fix="give a budget a run can spend, or drop --budget for a full run")
        return Budget(passes=passes)
    if unit == "%":
        if value > 100:
            raise OptionError(f"--budget {_shown(text)} is more than the whole run", where="budget",
                              fix="give a share up to 100%, or drop --budget for a full run")
        return Budget(share=float(_number(value / 100)))
    seconds = float(_number(value * _SECONDS_PER_UNIT[unit]))  # 0.09m is 5.4 s, not 5.3999999999999995
    if seconds > MAX_BUDGET_SECONDS:
        raise OptionError(f"--budget {_shown(text)} is more than a year", where="budget",
                          fix="give a budget a run can spend, or drop --budget for a full run")
    return Budget(seconds=seconds)


@dataclass
class BudgetTarget:
    """One budgeted metric: a view, the source rows it may sample (``population``: row numbers of
    ``view.source(dataset)``, e.g. the clean-correct rows for an attack), and what a row is worth
    (``values(rows, logits) -> values in [0, 1]``, one per row; 0/1 when ``binary``). ``cost_per_row``: model
    passes one row costs (1 for a corruption, an attack's iterations + 1)."""

    name: str
    view: View
    population: np.ndarray
    values: Callable[[np.ndarray, np.ndarray], np.ndarray]
    cost_per_row: float = 1.0
    binary: bool = True


@dataclass
class SampledView:
    """What the planner ran for one target: the rows sampled (in the order drawn), their values and logits,
    the population size, and the passes (rows x cost per row) and seconds spent on them."""

    name: str
    rows: np.ndarray
    values: np.ndarray
    logits: np.ndarray
    population: int
    passes: float
    seconds: float
    cost_per_row: float = 1.0
    binary: bool = True
    uniform_rows: int = 0  # the first rows, drawn in the uniform phase (allocation fixed by budget and clock)

    def _stratum(self, values: np.ndarray) -> Stratum:
        v = np.asarray(values, dtype=np.float64)
        return Stratum(n=int(v.size), population=self.population, total=float(v.sum()),
                       total_sq=float(np.square(v).sum()), cost=self.cost_per_row, binary=self.binary)

    def stratum(self) -> Stratum:
        """The sampling state of this view over all its rows (its interval: ``stratum().interval(confidence)``);
        a view with an empty population has none (OptionError)."""
        return self._stratum(self.values)

    def uniform_stratum(self) -> Stratum:
        """The state over the uniform-phase rows only: a sample whose size did not depend on its values, for
        unbiased means over views (see the module docstring)."""
        return self._stratum(self.values[:self.uniform_rows])


@dataclass
class BudgetRun:
    """A budgeted run: the sampled views, what was spent (the clean run's passes and seconds included), what
    running every target fully would have cost, and why it stopped (``budget``, ``complete`` or
    ``interrupted``). ``rounds``: one record per chunk run (view, rows, phase, cumulative passes and seconds).
    ``budget_passes``: the pass limit (a passes budget, or share x full_passes; None for a time budget)."""

    views: dict[str, SampledView]
    budget: Budget
    objective: str
    passes_used: float
    seconds_used: float
    full_passes: float
    interrupted: bool
    stopped_because: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    budget_passes: float | None = None
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class _Chunk:
    """One chunk run: appended in one step once its values are known, so a Ctrl-C leaves whole chunks only."""

    target: int
    rows: np.ndarray
    values: np.ndarray
    logits: np.ndarray
    seconds: float
    phase: str
    ended: float  # seconds used by the run (the clean run's included) when the chunk finished


class _Plan:
    """The sampling state of one target during the run."""

    def __init__(self, target: BudgetTarget, source: Dataset, seed: int) -> None:
        self.target, self.source = target, source
        population = np.asarray(target.population)
        if population.ndim != 1 or (population.size and not np.issubdtype(population.dtype, np.integer)):
            raise ValueError(f"the population of {target.name} must be a 1-D array of row numbers")
        population = np.sort(population.astype(np.int64))
        if population.size and (population[0] < 0 or population[-1] >= len(source)
                                or np.any(population[1:] == population[:-1])):
            raise ValueError(f"the population of {target.name} must hold distinct rows of its source "
                             f"(0 to {len(source) - 1})")
        if not (math.isfinite(target.cost_per_row) and target.cost_per_row > 0):
            raise ValueError(f"the cost per row of {target.name} must be positive, got {target.cost_per_row!r}")
        # Seeded by the run's seed and the view's name: a view's order does not depend on the other targets.
        rng = np.random.default_rng([int(seed), zlib.crc32(target.name.encode())])
        self.order = rng.permutation(population)
        self.n = 0
        self.total = self.total_sq = 0.0
        self.seconds = 0.0

    @property
    def population(self) -> int:
        return int(self.order.size)

    @property
    def remaining(self) -> int:
        return self.population - self.n

    def add(self, chunk: _Chunk) -> None:
        self.n += chunk.rows.size
        self.total += float(chunk.values.sum())
        self.total_sq += float(np.square(chunk.values).sum())
        self.seconds += chunk.seconds

    def stratum(self, cost: float) -> Stratum:
        return Stratum(self.n, self.population, self.total, self.total_sq, cost=cost, binary=self.target.binary)


def _checked_values(target: BudgetTarget, rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
    values = np.asarray(target.values(rows, logits), dtype=np.float64)
    if values.shape != rows.shape or not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
        raise ValueError(f"the values of {target.name} must be one number in [0, 1] per row")
    if target.binary and np.any((values != 0) & (values != 1)):
        raise ValueError(f"the values of {target.name} are declared 0/1 but are not")
    return values


def run_budgeted(model: Model, dataset: Dataset, targets: list[BudgetTarget], budget: Budget, *,
                 objective: str = "widest", confidence: float = 0.95, seed: int = 0, batch_size: int = 256,
                 backend: Backend | None = None, progress: bool = True, pilot_rows: int = 32,
                 spent_seconds: float = 0.0, spent_passes: float = 0.0, uniform_share: float = UNIFORM_SHARE
                 ) -> BudgetRun:
    """Sample rows of every target's view until ``budget`` is spent (see the module docstring).

    Uniform phase: rounds of equal rows per target (the first round, ``pilot_rows`` rows, is the pilot) until
    ``uniform_share`` of the planner's budget is spent (passes: each target's equal share of it, at least the
    pilot; time: that share of the time left when the planner starts). Adaptive phase: chunks go to
    the target :func:`~assay.stats.sampling.next_stratum` picks. Chunks start small (``pilot_rows``) and grow with
    the sample (a quarter of the mean rows per view so far), up to ``batch_size`` rows, so the allocation adapts
    early and runs full batches later; near the end of the budget they shrink to an even share of the rows left per
    view (so the last rows are spread as the objective wants: without it, whole chunks left ``uniform`` visibly
    unequal); a chunk never runs past the rows left. A passes budget is never exceeded: a chunk is cut to the
    passes left, and the run stops when the chosen view cannot afford one row. A time budget: a chunk is cut so
    that it is predicted (from the view's measured seconds per row; before its first chunk, from the other views'
    seconds per pass) to end before the deadline. Ctrl-C: the chunk in flight is dropped, the run returns with
    ``interrupted=True``, and a backend with workers (which got the same Ctrl-C) is closed, so its next use starts
    fresh ones."""
    if objective not in OBJECTIVES:
        raise OptionError(f"unknown budget objective {objective!r}", where="budget-objective",
                          fix=f"choose from {', '.join(OBJECTIVES)}")
    if batch_size < 1 or pilot_rows < 1:
        raise OptionError("batch_size and pilot_rows must be at least 1", where="budget", fix="use e.g. 256 and 32")
    if not 0.0 <= uniform_share <= 1.0:
        raise OptionError(f"uniform_share {uniform_share!r} is not in [0, 1]", where="budget", fix="e.g. 1/3")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError("budget targets need distinct names")
    backend = backend or LocalBackend()
    plans = [_Plan(t, t.view.source(dataset), seed) for t in targets]
    full_passes = float(spent_passes) + sum(p.population * p.target.cost_per_row for p in plans)
    limit: float | None = None
    if budget.passes is not None:
        limit = float(budget.passes)
    elif budget.share is not None:
        limit = budget.share * full_passes
    started = time.monotonic()
    deadline = None if budget.seconds is None else started + budget.seconds - spent_seconds
    chunks: list[_Chunk] = []
    interrupted = False
    stopped_because = "budget"

    def passes_used() -> float:
        return float(spent_passes) + sum(p.n * p.target.cost_per_row for p in plans)

    def seconds_per_row(plan: _Plan) -> float | None:
        """The view's own measured seconds per row; before its first chunk, the others' seconds per pass."""
        if plan.n:
            return plan.seconds / plan.n
        done = [p for p in plans if p.n]
        if not done:
            return None
        per_pass = sum(p.seconds for p in done) / sum(p.n * p.target.cost_per_row for p in done)
        return per_pass * plan.target.cost_per_row

    def affordable(plan: _Plan, wanted: int) -> int:
        """Rows of ``plan`` the budget lets the next chunk run (0: stop)."""
        rows = min(wanted, plan.remaining)
        if limit is not None:
            rows = min(rows, math.floor((limit - passes_used()) / plan.target.cost_per_row + 1e-9))
        if deadline is not None:
            left = deadline - time.monotonic()
            per_row = seconds_per_row(plan)
            if left <= 0:
                return 0
            if per_row is not None and per_row > 0:
                rows = min(rows, math.floor(left / per_row + 1e-9))
        return max(rows, 0)

    def rows_left(unfinished: list[_Plan]) -> float | None:
        """About how many more rows the budget buys at the unfinished views' mean cost per row."""
        if not unfinished:
            return None
        if limit is not None:
            return (limit - passes_used()) / (sum(p.target.cost_per_row for p in unfinished) / len(unfinished))
        assert deadline is not None
        per_row = [seconds_per_row(p) for p in unfinished]
        known = [s for s in per_row if s is not None and s > 0]
        return (deadline - time.monotonic()) / (sum(known) / len(known)) if known else None

    def uniform_phase_over() -> bool:
        """Whether the uniform phase has spent its share (passes: every open view has its equal share)."""
        if limit is not None:
            return all(plans[i].n >= min(uniform_rows, plans[i].population) for i in open_plans)
        assert deadline is not None
        return time.monotonic() >= uniform_until

    def run_chunk(index: int, rows: int, phase: str) -> None:
        plan = plans[index]
        picked = plan.order[plan.n:plan.n + rows]
        t0 = time.perf_counter()
        out = run_rows(model, plan.target.view, plan.source, picked, batch_size=batch_size, backend=backend)
        values = _checked_values(plan.target, picked, out.logits)
        chunk = _Chunk(index, picked, values, out.logits, time.perf_counter() - t0, phase,
                       spent_seconds + time.monotonic() - started)
        chunks.append(chunk)  # one step: the chunk counts from here on
        plan.add(chunk)

    def planning_cost(plan: _Plan) -> float:
        if deadline is not None and plan.n:
            return max(plan.seconds / plan.n, 1e-9)
        return plan.target.cost_per_row

    open_plans = [i for i, p in enumerate(plans) if p.population]
    # The uniform phase's extent, fixed before any value is seen.
    uniform_rows = pilot_rows
    if limit is not None and open_plans:
        per_round = sum(plans[i].target.cost_per_row for i in open_plans)
        uniform_rows = max(pilot_rows, math.floor(uniform_share * max(limit - passes_used(), 0.0) / per_round))
    uniform_until = started + uniform_share * max((deadline or started) - started, 0.0)
    uniform_counts = dict.fromkeys(range(len(plans)), 0)
    total, unit = (limit, "passes") if limit is not None else (budget.seconds, "s")
    note = f"{len(open_plans)} views, objective {objective}, budget {budget.describe()}"
    try:
        with stage("budgeted sampling", total=total, unit=unit, enabled=progress, note=note) as advance:
            shown = 0.0

            def show(name: str) -> None:
                nonlocal shown
                now = passes_used() if limit is not None else spent_seconds + time.monotonic() - started
                advance.detail(f"[{name}]")
                advance(now - shown)
                shown = now

            show("clean")
            spent = False
            phase, chunk_rows = "pilot", pilot_rows
            while not spent:  # uniform phase: rounds of equal rows per view, the first round is the pilot
                wanted = [i for i in open_plans if plans[i].remaining and plans[i].n < (
                    uniform_rows if limit is not None else plans[i].population)]
                if not wanted:
                    break
                for i in wanted:
                    cap = uniform_rows - plans[i].n if limit is not None else chunk_rows
                    rows = affordable(plans[i], min(chunk_rows, cap))
                    if rows == 0:
                        spent = True
                        break
                    run_chunk(i, rows, phase)
                    uniform_counts[i] = plans[i].n
                    show(plans[i].target.name)
                phase, chunk_rows = "uniform", max(pilot_rows, min(batch_size, pilot_rows * 2))
                if not spent and uniform_phase_over():
                    break
            if not spent:
                while True:
                    sampled = sum(plans[i].n for i in open_plans)
                    step = int(min(batch_size, max(pilot_rows, sampled // (4 * max(len(open_plans), 1)))))
                    # Near the end, chunks shrink to an even share of what is left, so the last rows are spread
                    # as the objective wants rather than given whole to whichever view comes first.
                    unfinished = [plans[i] for i in open_plans if plans[i].remaining]
                    left = rows_left(unfinished)
                    if left is not None and unfinished:
                        step = max(1, min(step, math.ceil(left / len(unfinished))))
                    strata = [plans[i].stratum(planning_cost(plans[i])) for i in open_plans]
                    pick = next_stratum(strata, objective=objective, step=step, confidence=confidence)
                    if pick is None:
                        stopped_because = "complete"
                        break
                    index = open_plans[pick]
                    rows = affordable(plans[index], step)
                    if rows == 0:
                        break
                    run_chunk(index, rows, "adaptive")
                    show(plans[index].target.name)
            if all(p.remaining == 0 for p in plans):
                stopped_because = "complete"
    except KeyboardInterrupt:
        interrupted, stopped_because = True, "interrupted"
        if not isinstance(backend, LocalBackend):
            backend.close()  # its workers got the same Ctrl-C: the next run starts fresh ones
    return _collect(plans, chunks, budget, objective, full_passes, limit, interrupted, stopped_because,
                    float(spent_passes), float(spent_seconds) + time.monotonic() - started, confidence, seed,
                    model.info.num_classes, uniform_counts)


def _collect(plans: list[_Plan], chunks: list[_Chunk], budget: Budget, objective: str, full_passes: float,
             limit: float | None, interrupted: bool, stopped_because: str, spent_passes: float,
             seconds_used: float, confidence: float, seed: int, num_classes: int,
             uniform_counts: dict[int, int]) -> BudgetRun:
    """The BudgetRun of the chunks that finished (plans may be one chunk ahead of ``chunks`` only if a Ctrl-C
    fell between the two updates: the chunks are the record)."""
    views: dict[str, SampledView] = {}
    rounds: list[dict[str, Any]] = []
    passes = spent_passes
    for chunk in chunks:
        target = plans[chunk.target].target
        passes += chunk.rows.size * target.cost_per_row
        rounds.append({"view": target.name, "rows": int(chunk.rows.size), "phase": chunk.phase,
                       "passes": passes, "seconds": chunk.ended})
    for index, plan in enumerate(plans):
        mine = [c for c in chunks if c.target == index]
        target = plan.target
        rows = np.concatenate([c.rows for c in mine]) if mine else np.zeros(0, dtype=np.int64)
        values = np.concatenate([c.values for c in mine]) if mine else np.zeros(0)
        logits = (np.concatenate([c.logits for c in mine]) if mine
                  else np.zeros((0, num_classes), dtype=np.float32))
        views[target.name] = SampledView(target.name, rows, values, logits, plan.population,
                                         passes=rows.size * target.cost_per_row,
                                         seconds=sum(c.seconds for c in mine), cost_per_row=target.cost_per_row,
                                         binary=target.binary,
                                         uniform_rows=min(uniform_counts.get(index, 0), int(rows.size)))
    return BudgetRun(views=views, budget=budget, objective=objective, passes_used=passes, seconds_used=seconds_used,
                     full_passes=full_passes, interrupted=interrupted, stopped_because=stopped_because,
                     rounds=rounds, budget_passes=limit, confidence=confidence, seed=seed)
