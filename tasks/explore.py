"""Closed-loop exploration (active learning) of a composition–temperature–pressure design space.

Pure logic, no Prefect or Dask: the evaluation is a parameter (a callable that runs the real
material flow, or a cheap oracle in tests and ``benchmarks/bench_explore.py``).

* **Design space** (:class:`DesignSpace`): a formula template with one substitution variable,
  e.g. ``Li{7-x}La3Zr{2-x}Ta{x}O12`` with x in [0, 1], a temperature range (K) and a pressure
  range (GPa). Points live in the unit cube u ∈ [0, 1]³ (x, T, P scaled linearly); a fixed
  dimension (low = high) is allowed.
* **Start**: a Latin-hypercube design (:class:`scipy.stats.qmc.LatinHypercube`).
* **Each round**: refit the GP surrogate (:mod:`ramanscreen.tasks.surrogate`, hyperparameters
  re-chosen by Bayesian optimisation of the CV error) on every finished evaluation, score a
  scrambled-Sobol candidate pool by the acquisition function, and pick a batch with a
  diversity rule:

  * ``imse`` (default) — integrated variance reduction: the candidate c whose evaluation
    most lowers the GP's posterior variance summed over the whole pool,
    Σ_p Cov(p, c)² / Var(c) (the fitted kernel; its noise term in Var(c)). It targets the
    global held-out error, and unlike ``std`` it does not spend the first batches on the
    corners of the T–P box, where the variance is largest but informs little of the rest;
  * ``std`` — the predictive standard deviation s(u) (uncertainty sampling);
  * ``mean`` — the predicted mean μ(u) (exploit: maximum σ);
  * ``ucb`` — μ + κ s;  ``ei`` — expected improvement over the best observed value,
    (μ − y* − ξ) Φ(z) + s φ(z), z = (μ − y* − ξ)/s;
  * ``random`` — uniform picks from the pool (the baseline of the benchmark).

  Batch diversity: ``kriging_believer`` (after each pick the GP is conditioned on its own
  mean at that point, with the fitted kernel, so the next pick sees the reduced uncertainty)
  plus a minimum distance ``min_distance`` in the unit cube to every chosen and evaluated
  point; ``min_distance`` alone; or ``none``.
* **Stop**: when the evaluation budget is spent, or when the largest predictive std over the
  pool falls below ``target_std`` (in the surrogate's units: log10 for σ).
* **State** (:class:`ExploreState`): ``proposals.parquet`` (one row per proposed point, with
  its status ``proposed`` / ``done`` / ``failed`` and its value) and ``rounds.parquet`` (one row
  per refit: training size, CV metrics, the pool's largest std, the stop reason), each rewritten
  atomically after every change, plus ``space.json``. A resumed loop evaluates only the
  ``proposed`` rows: a finished evaluation is never redone.

>>> space = DesignSpace("Li{7-x}La3Zr{2-x}Ta{x}O12", (0.0, 1.0), (300.0, 600.0), (0.0, 0.5))
>>> space.formula(0.25)
'Li6.75La3Zr1.75Ta0.25O12'
>>> space.formula(0.0)
'Li7La3Zr2O12'
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import json
import math
import operator
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError, atomic_write, write_table
from ramanscreen.tasks.surrogate import (
    PropertyTable,
    SurrogateModel,
    SurrogateSettings,
    feature_matrix,
    fit_surrogate,
)

ACQUISITIONS = ("imse", "std", "mean", "ucb", "ei", "random")
DIVERSITY = ("kriging_believer", "min_distance", "none")
STATUSES = ("proposed", "done", "failed")
STATE_FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------------
# Design space
# --------------------------------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_SLOT_RE = re.compile(r"([A-Z][a-z]?)\{([^{}]*)\}")


def _eval_amount(expr: str, x: float) -> float:
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id == "x":
            return x
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        raise ValueError(f"only numbers, x, + - * / are allowed, not {ast.dump(node)[:40]}")

    return ev(ast.parse(expr, mode="eval"))


@dataclasses.dataclass(frozen=True)
class DesignSpace:
    """Composition family × temperature × pressure. ``formula_template`` has ``El{expr}`` slots
    whose amounts are expressions in ``x`` (numbers, x, + − × ÷); amounts are rounded to
    ``x_decimals`` decimals, and an element whose amount is 0 is dropped."""

    formula_template: str = "Li{7-x}La3Zr{2-x}Ta{x}O12"
    x_range: tuple[float, float] = (0.0, 1.0)
    temperature_k: tuple[float, float] = (298.0, 573.0)
    pressure_gpa: tuple[float, float] = (0.01, 0.5)
    x_decimals: int = 3
    #: 0: x continuous; > 0: x is snapped to multiples of ``x_step`` (what a cell holds, e.g.
    #: 0.125 = one Ta per conventional garnet cell), the proposals then name cells one can build
    x_step: float = 0.0

    def __post_init__(self) -> None:
        if not _SLOT_RE.search(self.formula_template):
            raise InputError(f"no El{{expr}} slot in {self.formula_template!r}", field="formula_template",
                             fix="write e.g. Li{7-x}La3Zr{2-x}Ta{x}O12")
        for name, (lo, hi) in (("x_range", self.x_range), ("temperature_k", self.temperature_k),
                               ("pressure_gpa", self.pressure_gpa)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise InputError(f"need low ≤ high, got [{lo}, {hi}]", field=name, fix="give [low, high]")
        if not (math.isfinite(self.x_step) and self.x_step >= 0):
            raise InputError(f"must be ≥ 0, got {self.x_step}", field="x_step",
                             fix="0 for a continuous x, or the step a cell holds (e.g. 0.125)")
        if self.x_step > 0 and (math.ceil(self.x_range[0] / self.x_step - 1e-9)
                                > math.floor(self.x_range[1] / self.x_step + 1e-9)):
            raise InputError(f"no multiple of {self.x_step:g} in [{self.x_range[0]:g}, {self.x_range[1]:g}]",
                             field="x_step", fix="widen x_range or use a smaller x_step")
        if self.temperature_k[0] <= 0:
            raise InputError(f"temperatures must be > 0 K, got {self.temperature_k[0]}", field="temperature_k",
                             fix="give the range in K")
        for x in (self.x_range[0], self.x_range[1], 0.5 * (self.x_range[0] + self.x_range[1])):
            self.formula(x)  # validates every slot at the ends and the middle

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], *, file: str | os.PathLike[str] | None = None) -> DesignSpace:
        """Build from a TOML/JSON table (keys as the fields; ranges as two-element lists)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown key {unknown[0]!r}", file=file, field=unknown[0],
                             fix=f"use {', '.join(sorted(known))}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("x_range", "temperature_k", "pressure_gpa"):
                if not (isinstance(v, (list, tuple)) and len(v) == 2):
                    raise InputError(f"must be [low, high], got {v!r}", file=file, field=k, fix="e.g. [0.0, 1.0]")
                try:
                    kw[k] = (float(v[0]), float(v[1]))
                except (TypeError, ValueError):
                    raise InputError(f"must be numbers, got {v!r}", file=file, field=k, fix="e.g. [0.0, 1.0]") from None
            else:
                kw[k] = v
        try:
            return cls(**kw)
        except InputError as exc:
            raise InputError(exc.message, file=file, field=exc.field, fix=exc.fix) from None

    def formula(self, x: float) -> str:
        """The formula at substitution ``x``."""

        def sub(m: re.Match[str]) -> str:
            try:
                v = round(_eval_amount(m.group(2), float(x)), self.x_decimals)
            except (ValueError, SyntaxError, ZeroDivisionError) as exc:
                raise InputError(f"cannot evaluate {m.group(0)!r}: {exc}", field="formula_template",
                                 fix="write amounts like {7-x} or {2*x}") from None
            if v < 0:
                raise InputError(f"{m.group(1)} amount {v:g} < 0 at x = {x:g}", field="x_range",
                                 fix="narrow x_range so every amount stays ≥ 0")
            if v == 0:
                return ""
            text = f"{v:.{self.x_decimals}f}".rstrip("0").rstrip(".")
            return m.group(1) + ("" if text == "1" else text)

        return _SLOT_RE.sub(sub, self.formula_template)

    @property
    def bounds(self) -> np.ndarray:
        return np.array([self.x_range, self.temperature_k, self.pressure_gpa], dtype=float)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map unit-cube points (n, 3) to (x, T, P); x is rounded to ``x_decimals``."""
        b = self.bounds
        pts = b[:, 0] + np.asarray(u, dtype=float) * (b[:, 1] - b[:, 0])
        pts[:, 0] = np.round(self._snap(pts[:, 0]), self.x_decimals)
        return pts

    def _snap(self, x):
        """``x`` to the nearest multiple of ``x_step`` inside ``x_range`` (unchanged when 0).

        >>> DesignSpace(x_range=(0.0, 1.0), x_step=0.125)._snap(np.array([0.3, 0.99, 0.07]))
        array([0.25 , 1.   , 0.125])
        """
        if self.x_step <= 0:
            return x
        lo, hi = self.x_range
        k_lo, k_hi = math.ceil(lo / self.x_step - 1e-9), math.floor(hi / self.x_step + 1e-9)
        return np.clip(np.round(np.asarray(x, dtype=float) / self.x_step), k_lo, k_hi) * self.x_step

    def to_unit(self, pts: np.ndarray) -> np.ndarray:
        b = self.bounds
        width = np.where(b[:, 1] > b[:, 0], b[:, 1] - b[:, 0], 1.0)
        return (np.asarray(pts, dtype=float) - b[:, 0]) / width

    def latin_hypercube(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` Latin-hypercube points (x, T, P)."""
        from scipy.stats import qmc

        return self.from_unit(qmc.LatinHypercube(d=3, seed=seed).random(n))

    def pool(self, n: int, seed: int = 0) -> np.ndarray:
        """A scrambled-Sobol candidate pool of about ``n`` points (the next power of two)."""
        from scipy.stats import qmc

        m = max(1, int(math.ceil(math.log2(max(n, 2)))))
        return self.from_unit(qmc.Sobol(d=3, scramble=True, seed=seed).random_base2(m))


@dataclasses.dataclass(frozen=True)
class ExploreSettings:
    """Every default of the loop, defined once (the flow and the TOML read them here)."""

    target: str = "sigma_S_cm"
    initial_points: int = 8
    batch_size: int = 4
    budget: int = 40
    target_std: float | None = None
    acquisition: str = "imse"
    ucb_kappa: float = 2.0
    ei_xi: float = 0.01
    diversity: str = "kriging_believer"
    min_distance: float = 0.05
    pool_size: int = 1024
    seed: int = 0
    surrogate: SurrogateSettings = dataclasses.field(default_factory=lambda: SurrogateSettings(n_trials=12))

    def __post_init__(self) -> None:
        if self.acquisition not in ACQUISITIONS:
            raise InputError(f"unknown acquisition {self.acquisition!r}", field="acquisition",
                             fix=f"use one of {', '.join(ACQUISITIONS)}")
        if self.diversity not in DIVERSITY:
            raise InputError(f"unknown diversity rule {self.diversity!r}", field="diversity",
                             fix=f"use one of {', '.join(DIVERSITY)}")
        if self.initial_points < 3:
            raise InputError(f"must be ≥ 3, got {self.initial_points}", field="initial_points",
                             fix="the surrogate's CV needs at least 3 compositions")
        if self.batch_size < 1 or self.budget < self.initial_points:
            raise InputError(f"batch_size ≥ 1 and budget ≥ initial_points needed (got {self.batch_size}, {self.budget})",
                             field="budget", fix="raise the budget")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], *, file: str | os.PathLike[str] | None = None) -> ExploreSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown key {unknown[0]!r}", file=file, field=unknown[0], fix=f"use {', '.join(sorted(known))}")
        kw = dict(d)
        if "surrogate" in kw and isinstance(kw["surrogate"], Mapping):
            sk = {f.name for f in dataclasses.fields(SurrogateSettings)}
            bad = sorted(set(kw["surrogate"]) - sk)
            if bad:
                raise InputError(f"unknown key {bad[0]!r}", file=file, field=f"surrogate.{bad[0]}", fix=f"use {', '.join(sorted(sk))}")
            s = dict(kw["surrogate"])
            for k in ("families", "length_scale_range", "noise_range"):
                if k in s:
                    s[k] = tuple(s[k])
            kw["surrogate"] = SurrogateSettings(**s)
        try:
            return cls(**kw)
        except InputError as exc:
            raise InputError(exc.message, file=file, field=exc.field, fix=exc.fix) from None


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Proposal:
    """One point to evaluate (what the evaluation callable receives)."""

    proposal_id: str
    round: int
    x: float
    temperature_k: float
    pressure_gpa: float
    formula: str
    acquisition: str
    predicted_mean: float = float("nan")
    predicted_std: float = float("nan")
    status: str = "proposed"
    value: float = float("nan")
    note: str = ""
    proposed_at: str = ""
    evaluated_at: str = ""


_PROPOSAL_FIELDS = [f.name for f in dataclasses.fields(Proposal)]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class ExploreState:
    """The persisted loop state in ``state_dir`` (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike[str], space: DesignSpace, settings: ExploreSettings) -> None:
        self.dir = Path(state_dir)
        self.space = space
        self.settings = settings
        self.proposals: list[Proposal] = []
        self.rounds: list[dict[str, Any]] = []
        self._load_or_init()

    # ---- persistence
    def _space_record(self) -> dict[str, Any]:
        s = dataclasses.asdict(self.settings)
        return {"format_version": STATE_FORMAT_VERSION, "space": dataclasses.asdict(self.space),
                "target": s["target"], "seed": s["seed"]}

    def _load_or_init(self) -> None:
        import pyarrow.parquet as pq

        rec = self._space_record()
        space_file = self.dir / "space.json"
        if space_file.is_file():
            old = json.loads(space_file.read_text())
            same = json.loads(json.dumps(rec)) == old
            if not same:
                raise InputError("the state directory was made for another design space, target or seed", file=space_file,
                                 fix="use a fresh --out directory, or the settings it was made with")
            if (self.dir / "proposals.parquet").is_file():
                rows = pq.read_table(self.dir / "proposals.parquet").to_pylist()
                self.proposals = [Proposal(**{k: r[k] for k in _PROPOSAL_FIELDS}) for r in rows]
            if (self.dir / "rounds.parquet").is_file():
                self.rounds = pq.read_table(self.dir / "rounds.parquet").to_pylist()
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(space_file, "w") as fh:
                json.dump(rec, fh, indent=2)
                fh.write("\n")

    def save(self) -> None:
        meta = {"ramanscreen.kind": "explore_proposals", "target": self.settings.target,
                "provenance": "values are what the evaluation callable returned (MLFF-MD in campaigns, an oracle in tests)"}
        if self.proposals:
            write_table({k: [getattr(p, k) for p in self.proposals] for k in _PROPOSAL_FIELDS},
                        self.dir / "proposals.parquet", metadata=meta)
        if self.rounds:
            keys = list(dict.fromkeys(k for r in self.rounds for k in r))
            write_table({k: [r.get(k) for r in self.rounds] for k in keys}, self.dir / "rounds.parquet",
                        metadata={"ramanscreen.kind": "explore_rounds"})

    # ---- queries
    def by_status(self, status: str) -> list[Proposal]:
        return [p for p in self.proposals if p.status == status]

    @property
    def n_spent(self) -> int:
        """Evaluations done, failed or pending (all count against the budget)."""
        return len(self.proposals)

    @property
    def last_round(self) -> int:
        return max((p.round for p in self.proposals), default=-1)

    @property
    def stop_reason(self) -> str | None:
        return self.rounds[-1].get("stop_reason") if self.rounds else None

    def training_table(self) -> PropertyTable:
        done = [p for p in self.by_status("done") if math.isfinite(p.value)]
        return PropertyTable(
            formula=[p.formula for p in done],
            temperature_k=np.array([p.temperature_k for p in done]),
            pressure_gpa=np.array([p.pressure_gpa for p in done]),
            columns={self.settings.target: [p.value for p in done]},
            source=str(self.dir / "proposals.parquet"), line_offset=None,
        )


# --------------------------------------------------------------------------------------------
# Acquisition and batch selection
# --------------------------------------------------------------------------------------------


def acquisition_values(kind: str, mean: np.ndarray, std: np.ndarray, *, best: float = float("nan"), kappa: float = 2.0,
                       xi: float = 0.01) -> np.ndarray:
    """Score of each candidate (higher is better).

    >>> acquisition_values("ucb", np.array([0.0, 1.0]), np.array([1.0, 0.1]), kappa=2.0).tolist()
    [2.0, 1.2]
    >>> bool(acquisition_values("ei", np.array([0.0]), np.array([1.0]), best=0.0, xi=0.0)[0] > 0.39)
    True
    """
    from scipy.stats import norm

    if kind == "std":
        return std.copy()
    if kind == "mean":
        return mean.copy()
    if kind == "ucb":
        return mean + kappa * std
    if kind == "ei":
        imp = mean - best - xi
        z = np.where(std > 0, imp / np.maximum(std, 1e-300), 0.0)
        return np.where(std > 0, imp * norm.cdf(z) + std * norm.pdf(z), np.maximum(imp, 0.0))
    raise InputError(f"unknown acquisition {kind!r}", field="acquisition", fix=", ".join(ACQUISITIONS))


class _Conditioner:
    """GP with the fitted kernel, re-conditioned on pseudo-observations (kriging believer)."""

    def __init__(self, model: SurrogateModel, X_train: np.ndarray, y_train: np.ndarray) -> None:
        self.scaler = model.pipeline.named_steps["scale"]
        self.kernel = model.pipeline.named_steps["gp"].kernel_
        self.X = self.scaler.transform(X_train)
        self.y = np.asarray(y_train, dtype=float)
        self.gp = model.pipeline.named_steps["gp"]

    def add(self, x_row: np.ndarray, y_value: float) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor

        self.X = np.vstack([self.X, self.scaler.transform(x_row[None, :])])
        self.y = np.append(self.y, y_value)
        self.gp = GaussianProcessRegressor(kernel=self.kernel, optimizer=None, normalize_y=True).fit(self.X, self.y)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.gp.predict(self.scaler.transform(X), return_std=True)
        return np.asarray(m), np.asarray(s)

    def covariance(self, X: np.ndarray) -> np.ndarray:
        """Posterior covariance over the rows of ``X`` (the kernel's noise on the diagonal)."""
        return np.asarray(self.gp.predict(self.scaler.transform(X), return_cov=True)[1])


def variance_reduction(cov: np.ndarray) -> np.ndarray:
    """Integrated variance reduction of each candidate over the same set (the ``imse`` score).

    Observing candidate c lowers the posterior variance at p by Cov(p, c)² / Var(c); the score
    sums that over every p (vectorised over all candidates at once).

    >>> cov = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.2]])
    >>> variance_reduction(cov).round(2).tolist()   # a point correlated with another beats an isolated one
    [1.81, 1.81, 1.2]
    """
    var = np.clip(np.diag(cov), 1e-300, None)
    return (cov ** 2).sum(axis=0) / var


def select_batch(model: SurrogateModel | None, space: DesignSpace, settings: ExploreSettings, pool: np.ndarray,
                 taken: np.ndarray, n: int, *, X_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> list[tuple[np.ndarray, float, float]]:
    """Pick ``n`` pool points: (point (x, T, P), predicted mean, predicted std) each."""
    rng = rng or np.random.default_rng(settings.seed)
    u_pool = space.to_unit(pool)
    u_taken = space.to_unit(taken) if len(taken) else np.empty((0, 3))
    available = np.ones(len(pool), bool)

    def exclude_near(u: np.ndarray, radius: float) -> None:
        if len(u):
            d = np.sqrt(((u_pool[:, None, :] - np.atleast_2d(u)[None, :, :]) ** 2).sum(-1)).min(axis=1)
            available[d < radius] = False

    radius = settings.min_distance if settings.diversity in ("kriging_believer", "min_distance") else 1e-9
    exclude_near(u_taken, radius)
    formulas = [space.formula(x) for x in pool[:, 0]]
    X_pool = feature_matrix(formulas, pool[:, 1], pool[:, 2], model.elements) if model is not None else None
    cond = None
    # condition on each pick's own mean: the kriging-believer rule, and imse's batch rule
    believe = settings.diversity == "kriging_believer" or settings.acquisition == "imse"
    if model is not None and X_train is not None and y_train is not None and believe:
        cond = _Conditioner(model, X_train, y_train)
    best = float(np.max(y_train)) if y_train is not None and len(y_train) else float("nan")
    out: list[tuple[np.ndarray, float, float]] = []
    for _ in range(n):
        if not available.any():
            available[:] = True  # pool exhausted by the distance rule: fall back to any point
            exclude_near(np.array([space.to_unit(p[None, :])[0] for p, _, _ in out]).reshape(-1, 3), 1e-9)
            if not available.any():
                break
        if settings.acquisition == "random" or model is None or X_pool is None:
            k = int(rng.choice(np.flatnonzero(available)))
            mean = std = float("nan")
            if model is not None and X_pool is not None:
                m, s = model.pipeline.predict(X_pool[k:k + 1], return_std=True)
                mean, std = float(m[0]), float(s[0])
        else:
            m, s = cond.predict(X_pool) if cond is not None else model.pipeline.predict(X_pool, return_std=True)
            if settings.acquisition == "imse":
                if cond is None:
                    raise InputError("the imse acquisition needs the training set", field="acquisition",
                                     fix="pass X_train and y_train to select_batch")
                score = variance_reduction(cond.covariance(X_pool))
            else:
                score = acquisition_values(settings.acquisition, np.asarray(m), np.asarray(s), best=best,
                                           kappa=settings.ucb_kappa, xi=settings.ei_xi)
            score = np.where(available, score, -np.inf)
            k = int(np.argmax(score))
            mean, std = float(m[k]), float(s[k])
            if cond is not None:  # the next pick sees the variance this one removes
                cond.add(X_pool[k], mean)
        out.append((pool[k].copy(), mean, std))
        exclude_near(u_pool[k:k + 1], radius)
        available[k] = False
    return out


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

Evaluate = Callable[[Proposal], float]
RoundCallback = Callable[[SurrogateModel, dict[str, Any]], None]


class ExploreLoop:
    """Drive the loop: ``pending()`` → evaluate → ``record()`` → ``next_round()`` … (or ``run``).

    The lead's Prefect flow calls the same four methods: it evaluates ``pending()`` on the Dask
    cluster (one material run each), calls ``record`` as each finishes, then ``next_round``.
    """

    def __init__(self, space: DesignSpace, settings: ExploreSettings, state_dir: str | os.PathLike[str]) -> None:
        self.space = space
        self.settings = settings
        self.state = ExploreState(state_dir, space, settings)
        self.last_model: SurrogateModel | None = None
        #: the last refit's report (CV predictions: ``surrogate.save_model`` draws its parity plot)
        self.last_report: Any = None

    def pending(self) -> list[Proposal]:
        """Proposals not evaluated yet (after a kill: exactly the unfinished ones)."""
        return self.state.by_status("proposed")

    def record(self, proposal_id: str, value: float | None, *, status: str = "done", note: str = "") -> None:
        """Store one evaluation (``status='failed'`` with a ``note`` when it did not produce a value)."""
        if status not in ("done", "failed"):
            raise InputError(f"unknown status {status!r}", field="status", fix="done or failed")
        for p in self.state.proposals:
            if p.proposal_id == proposal_id:
                if p.status != "proposed":
                    raise InputError(f"proposal {proposal_id} is already {p.status}", field="proposal_id",
                                     fix="a finished evaluation is never redone")
                if status == "done":
                    if value is None or not math.isfinite(float(value)):
                        raise InputError(f"proposal {proposal_id}: value {value!r} is not a finite number",
                                         field="value", fix="record it as failed with a note")
                    p.value = float(value)
                p.status, p.note, p.evaluated_at = status, note, _now()
                self.state.save()
                return
        raise InputError(f"no proposal {proposal_id!r}", field="proposal_id", fix="use an id from pending()")

    @property
    def finished(self) -> bool:
        return self.state.stop_reason is not None

    def _fit(self) -> tuple[SurrogateModel, np.ndarray, np.ndarray]:
        table = self.state.training_table()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model, self.last_report = fit_surrogate(table, self.settings.target, self.settings.surrogate)
        X = feature_matrix(table.formula, table.temperature_k, table.pressure_gpa, model.elements)
        from ramanscreen.tasks.surrogate import apply_transform

        y = apply_transform(np.asarray(table.columns[self.settings.target], dtype=float), model.transform)
        return model, X, y

    def next_round(self, callback: RoundCallback | None = None) -> list[Proposal]:
        """Refit and propose the next batch (the Latin-hypercube design first); [] when the loop stops.

        Raises :class:`InputError` if proposals are still pending (evaluate them first).
        """
        st, s = self.state, self.settings
        if self.finished:
            return []
        if self.pending():
            raise InputError(f"{len(self.pending())} proposals are still pending", field="proposals",
                             fix="evaluate and record them before the next round")
        if not st.proposals:
            pts = self.space.latin_hypercube(s.initial_points, seed=s.seed)
            return self._append(0, [(p, float("nan"), float("nan")) for p in pts], "latin_hypercube")
        rnd = st.last_round + 1
        done = [p for p in st.by_status("done") if math.isfinite(p.value)]
        row: dict[str, Any] = {"round": rnd, "n_train": len(done), "n_failed": len(st.by_status("failed")),
                               "n_spent": st.n_spent, "fitted_at": _now()}
        if len(set(p.formula for p in done)) < s.surrogate.min_compositions:
            row["stop_reason"] = f"fewer than {s.surrogate.min_compositions} compositions evaluated successfully"
            self._set_round(row)
            return []
        model, X, y = self._fit()
        self.last_model = model
        pool = self.space.pool(s.pool_size, seed=s.seed + 1000 + rnd)
        X_pool = feature_matrix([self.space.formula(x) for x in pool[:, 0]], pool[:, 1], pool[:, 2], model.elements)
        _, pool_std = model.pipeline.predict(X_pool, return_std=True)
        cv = model.info["cv"]
        row.update({"cv_rmse": cv["rmse"], "cv_mae": cv["mae"], "cv_within_1sigma": cv["within_1sigma"],
                    "cv_within_2sigma": cv["within_2sigma"], "max_pool_std": float(np.max(pool_std)),
                    "mean_pool_std": float(np.mean(pool_std)), "best_observed": float(np.max(y)),
                    "kernel": model.kernel, "stop_reason": None})
        remaining = s.budget - st.n_spent
        if s.target_std is not None and float(np.max(pool_std)) <= s.target_std:
            row["stop_reason"] = f"max predictive std {float(np.max(pool_std)):.3g} ≤ target_std {s.target_std:g}"
        elif remaining <= 0:
            row["stop_reason"] = f"budget of {s.budget} evaluations spent"
        self._set_round(row)
        if callback is not None:
            callback(model, row)
        if row["stop_reason"]:
            return []
        taken = np.array([[p.x, p.temperature_k, p.pressure_gpa] for p in st.proposals])
        picks = select_batch(model, self.space, s, pool, taken, min(s.batch_size, remaining), X_train=X, y_train=y,
                             rng=np.random.default_rng(s.seed + rnd))
        return self._append(rnd, picks, s.acquisition)

    def _set_round(self, row: dict[str, Any]) -> None:
        self.state.rounds = [r for r in self.state.rounds if r["round"] != row["round"]] + [row]
        self.state.save()

    def _append(self, rnd: int, picks: Sequence[tuple[np.ndarray, float, float]], acquisition: str) -> list[Proposal]:
        new = []
        for k, (pt, mean, std) in enumerate(picks):
            x, t, p = (float(v) for v in pt)
            new.append(Proposal(proposal_id=f"r{rnd:03d}-{k:03d}", round=rnd, x=x, temperature_k=t, pressure_gpa=p,
                                formula=self.space.formula(x), acquisition=acquisition, predicted_mean=mean,
                                predicted_std=std, proposed_at=_now()))
        self.state.proposals.extend(new)
        self.state.save()
        return new

    def run(self, evaluate: Evaluate, *, callback: RoundCallback | None = None, max_rounds: int | None = None) -> ExploreState:
        """Evaluate, record and propose until the loop stops (or ``max_rounds`` refits).

        ``evaluate(proposal)`` returns the target value in raw units (e.g. σ in S/cm); an
        exception marks that proposal failed (with its message) and the loop goes on.
        """
        rounds = 0
        while True:
            for p in self.pending():
                try:
                    value = float(evaluate(p))
                except InputError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one failed material must not stop the loop
                    self.record(p.proposal_id, None, status="failed", note=f"{type(exc).__name__}: {exc}"[:300])
                    continue
                if not math.isfinite(value) or (value <= 0 and self.settings.target.startswith(("sigma", "D_"))):
                    self.record(p.proposal_id, None, status="failed", note=f"non-usable value {value!r}")
                else:
                    self.record(p.proposal_id, value)
            if max_rounds is not None and rounds >= max_rounds:
                return self.state
            batch = self.next_round(callback)
            rounds += 1
            if not batch:
                return self.state


__all__ = [
    "ACQUISITIONS",
    "DIVERSITY",
    "DesignSpace",
    "ExploreLoop",
    "ExploreSettings",
    "ExploreState",
    "Proposal",
    "acquisition_values",
    "select_batch",
]
