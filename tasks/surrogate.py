"""Gaussian-process surrogate of a material property from composition, temperature and pressure.

The second framework (``docs/second-framework.md``) predicts log10 of the ionic conductivity
σ (S/cm), and with the same machinery log10 D (cm²/s) or an elastic modulus (GPa), from

* the **composition**, turned into element-property descriptors (:func:`composition_features`):
  the atomic fraction of every element seen in training (``frac_<El>``) plus, for each of
  Pauling electronegativity, ionic radius (Å), atomic mass (u) and oxidation state, the
  fraction-weighted mean and standard deviation and the minimum and maximum over the elements
  present (the range is max − min, so it is not a separate column);
* the **temperature** as ``inv_temperature_1000_k`` = 1000 / T (an Arrhenius law is linear in it);
* the **pressure** ``pressure_gpa`` (0 GPa where a table has none; the reader says so; in a
  results root, P as :data:`ramanscreen.tasks.results.PRESSURE_GPA_DOC` defines it).

The model is scikit-learn's :class:`~sklearn.gaussian_process.GaussianProcessRegressor` on
standardised features, kernel ``C · K + WhiteKernel`` with K one of RBF, Matérn (ν = ½, 3⁄2, 5⁄2)
or RationalQuadratic, isotropic or with one length scale per feature (ARD). The kernel family,
ARD and the *starting* length scale and noise are chosen by Bayesian optimisation (optuna's
TPE sampler) of the grouped K-fold cross-validated RMSE; inside each trial the GP fits length
scales, amplitude and noise on every training fold by maximising the log marginal likelihood
from that start. The best configuration is refitted on all data.

Targets are transformed before the fit (``log10`` for σ and D, identity for moduli); every
metric is in the transformed units (log10 units for σ and D). Predictions carry the GP's
standard deviation.

Bad target values: an empty cell is *missing* (that row is left out for this target, counted
and reported). ``<x`` / ``>x`` (e.g. ``<1E-10``) are *censored* bounds: they are left out of the
GP fit (a GP with a Gaussian likelihood cannot use them), counted in a warning, and listed in
the report with the model's prediction and whether it respects the bound. A value that cannot
be parsed, or is not positive under a log transform, is refused with one line naming the file,
the row and the column.

>>> feats = composition_features("Li7La3Zr2O12")
>>> round(feats["frac_Li"], 4), round(feats["mean_oxidation_state"], 6)
(0.2917, 0.0)
>>> feats["max_electronegativity"]
3.44
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError, atomic_path, atomic_write, save_figure, write_table
from ramanscreen.tasks.results import BUILT_DENSITY_PRESSURE_GPA

#: Bump when the saved-model layout or the feature definitions change; a model saved with
#: another format version is refused on load.
MODEL_FORMAT_VERSION = 1
#: Element properties summarised by the composition descriptors (name -> unit).
ELEMENT_PROPERTIES: dict[str, str] = {
    "electronegativity": "Pauling",
    "ionic_radius": "Å (Shannon, pymatgen, for the guessed oxidation state)",
    "atomic_mass": "u",
    "oxidation_state": "e (pymatgen oxidation-state guess, charge balanced)",
}
#: Statistics of each element property (fraction-weighted mean and std; min and max over the elements present).
STATISTICS = ("mean", "std", "min", "max")
#: Non-composition features.
CONDITION_FEATURES = ("inv_temperature_1000_k", "pressure_gpa")
#: Kernel families the optimiser chooses from (Matérn with its ν).
KERNEL_FAMILIES = ("rbf", "matern0.5", "matern1.5", "matern2.5", "rq")
#: Targets fitted in log10 by default (transport coefficients); anything else is fitted as is.
LOG_TARGET_PREFIXES = ("sigma", "D_", "conductivity", "diffusivity")
#: Column names a table may use.
FORMULA_COLUMN = "formula"
TEMPERATURE_COLUMN = "temperature_k"
PRESSURE_COLUMN = "pressure_gpa"


@dataclasses.dataclass(frozen=True)
class SurrogateSettings:
    """Every default of the surrogate fit, defined once (the CLI and the loop read them here).

    ``n_trials``: Bayesian-optimisation trials; ``cv_folds``: folds of the grouped K-fold CV (fewer
    when there are fewer distinct compositions); ``length_scale_range`` / ``noise_range``: the
    log-uniform ranges of the starting length scale (standardised-feature units) and of the
    starting WhiteKernel noise (fraction of the target variance); ``families``: the kernel
    families searched; ``allow_ard``: whether one length scale per feature may be chosen;
    ``seed``: seeds the CV split, the sampler and the GP optimiser.
    """

    n_trials: int = 30
    cv_folds: int = 5
    seed: int = 0
    families: tuple[str, ...] = KERNEL_FAMILIES
    allow_ard: bool = True
    length_scale_range: tuple[float, float] = (0.1, 30.0)
    noise_range: tuple[float, float] = (1e-4, 0.5)
    min_compositions: int = 3

    def __post_init__(self) -> None:
        bad = [f for f in self.families if f not in KERNEL_FAMILIES]
        if bad or not self.families:
            raise InputError(f"unknown kernel family {bad[0] if bad else '(none)'}", field="families",
                             fix=f"use some of {', '.join(KERNEL_FAMILIES)}")
        if self.n_trials < 1:
            raise InputError(f"must be ≥ 1, got {self.n_trials}", field="n_trials", fix="e.g. 30")
        if self.cv_folds < 2:
            raise InputError(f"must be ≥ 2, got {self.cv_folds}", field="cv_folds", fix="e.g. 5")


def default_transform(target: str) -> str:
    """``log10`` for conductivities and diffusivities, ``identity`` otherwise.

    >>> default_transform("sigma_S_cm"), default_transform("D_cm2_s"), default_transform("bulk_modulus_vrh_gpa")
    ('log10', 'log10', 'identity')
    """
    return "log10" if target.startswith(LOG_TARGET_PREFIXES) else "identity"


# --------------------------------------------------------------------------------------------
# Composition descriptors
# --------------------------------------------------------------------------------------------


def _parse_composition(formula: str, *, file: Any = None, field: str = FORMULA_COLUMN):
    from pymatgen.core import Composition

    text = str(formula).strip()
    try:
        comp = Composition(text)
    except Exception as exc:  # noqa: BLE001 - pymatgen raises several types for bad formulas
        raise InputError(f"cannot read formula {text!r}: {' '.join(str(exc).split())[:120]}", file=file, field=field,
                         fix="write a chemical formula such as Li6.4La3Zr1.4Ta0.6O12") from None
    if not text or comp.num_atoms <= 0:
        raise InputError(f"empty formula {text!r}", file=file, field=field, fix="write a chemical formula")
    return comp


@functools.lru_cache(maxsize=4096)
def oxidation_states(formula: str) -> dict[str, float]:
    """Charge-balanced oxidation states of each element.

    pymatgen's most probable guess (``Composition.oxi_state_guesses``) when the formula scales to
    integers with at most 200 sites and its site enumeration stays small (≤ 5 000
    assignments); otherwise (long fractional formulas, e.g. x = 0.137, where
    the site enumeration explodes) one state per element from ``Element.common_oxidation_states``,
    the combination with the smallest net charge, ties going to negative states on the more
    electronegative elements. A formula that cannot be balanced gets a warning.

    >>> oxidation_states("Li6.4La3Zr1.4Ta0.6O12")
    {'Li': 1.0, 'La': 3.0, 'Zr': 4.0, 'Ta': 5.0, 'O': -2.0}
    >>> oxidation_states("Li6.863La3Zr1.863Ta0.137O12")["Ta"]
    5.0
    """
    comp = _parse_composition(formula)
    scale = _integer_scale(comp)
    if scale is not None and comp.num_atoms * scale <= 200 and _guess_cost(comp, scale) <= 5_000:
        try:
            guesses = list((comp * scale).oxi_state_guesses(max_sites=-200))
        except Exception:  # noqa: BLE001 - pymatgen's guesser fails in several ways on odd inputs
            guesses = []
        if guesses:
            return {el.symbol: float(guesses[0].get(el.symbol, 0.0)) for el in comp.elements}
    return _balance_per_element(comp, formula)


def _guess_cost(comp, scale: int) -> float:
    """Site assignments pymatgen's guesser enumerates: Π_e C(n_e + k_e − 1, k_e − 1)."""
    cost = 1.0
    for el in comp.elements:
        k = max(len(el.common_oxidation_states), 1)
        cost *= math.comb(round(comp[el] * scale) + k - 1, k - 1)
    return cost


def _balance_per_element(comp, formula: str) -> dict[str, float]:
    import itertools

    els = list(comp.elements)
    options = [tuple(el.common_oxidation_states) or (0,) for el in els]
    amounts = np.array([comp[el] for el in els])
    chi = np.array([el.X if el.X is not None and math.isfinite(el.X) else 0.0 for el in els])
    best, best_key = None, None
    for combo in itertools.islice(itertools.product(*options), 100_000):
        ox = np.array(combo, dtype=float)
        key = (round(abs(float(amounts @ ox)), 9), float(np.sum(amounts * ox * chi)))
        if best_key is None or key < best_key:
            best, best_key = ox, key
    assert best is not None and best_key is not None
    if best_key[0] > 1e-6 * float(amounts.sum()):
        warnings.warn(f"{formula}: no charge-balanced combination of common oxidation states (net {best_key[0]:g} e)",
                      UserWarning, stacklevel=3)
    return {el.symbol: float(v) for el, v in zip(els, best, strict=True)}


def _integer_scale(comp) -> int | None:
    """Smallest factor ≤ 100 that makes every amount an integer, or None."""
    amounts = [comp[el] for el in comp.elements]
    for k in range(1, 101):
        if all(abs(a * k - round(a * k)) < 1e-6 for a in amounts):
            return k
    return None


@functools.lru_cache(maxsize=256)
def _element_properties(symbol: str, oxidation: float) -> tuple[float, float, float, float]:
    from pymatgen.core import Element, Species

    el = Element(symbol)
    chi = float(el.X) if el.X is not None and not math.isnan(el.X) else float("nan")
    radius = None
    if float(oxidation).is_integer():
        try:
            radius = Species(symbol, int(oxidation)).ionic_radius
        except Exception:  # noqa: BLE001 - no tabulated radius for this oxidation state
            radius = None
    if radius is None:
        radius = el.average_ionic_radius if el.average_ionic_radius else el.atomic_radius
    return chi, float(radius) if radius is not None else float("nan"), float(el.atomic_mass), float(oxidation)


@functools.lru_cache(maxsize=4096)
def _composition_stats(formula: str) -> tuple[tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]]:
    comp = _parse_composition(formula)
    oxi = oxidation_states(formula)
    symbols = [el.symbol for el in comp.elements]
    frac = np.array([comp.get_atomic_fraction(s) for s in symbols])
    props = np.array([_element_properties(s, oxi[s]) for s in symbols])  # (n_el, 4)
    stats: list[tuple[str, float]] = []
    for j, name in enumerate(ELEMENT_PROPERTIES):
        v = props[:, j]
        mean = float(np.sum(frac * v))
        std = float(np.sqrt(max(np.sum(frac * (v - mean) ** 2), 0.0)))
        stats += [(f"mean_{name}", mean), (f"std_{name}", std), (f"min_{name}", float(v.min())),
                  (f"max_{name}", float(v.max()))]
    return tuple(zip(symbols, frac.tolist(), strict=True)), tuple(stats)


def composition_features(formula: str, elements: Sequence[str] | None = None) -> dict[str, float]:
    """The documented descriptors of one formula (see the module docstring).

    ``elements`` fixes the ``frac_<El>`` columns (the training vocabulary); by default the
    formula's own elements. Elements outside ``elements`` still enter the property statistics.
    """
    fracs, stats = _composition_stats(str(formula).strip())
    own = dict(fracs)
    names = list(own) if elements is None else list(elements)
    out = {f"frac_{el}": float(own.get(el, 0.0)) for el in names}
    out.update(dict(stats))
    return out


def feature_names(elements: Sequence[str]) -> list[str]:
    """Column order of the feature matrix for a given element vocabulary."""
    names = [f"frac_{el}" for el in elements]
    names += [f"{s}_{p}" for p in ELEMENT_PROPERTIES for s in STATISTICS]
    return [*names, *CONDITION_FEATURES]


def element_vocabulary(formulas: Sequence[str]) -> list[str]:
    """Elements of all formulas, ordered by atomic number."""
    from pymatgen.core import Element

    seen = {el for f in set(formulas) for el, _ in _composition_stats(str(f).strip())[0]}
    return sorted(seen, key=lambda s: Element(s).Z)


def feature_matrix(formulas: Sequence[str], temperature_k: Any, pressure_gpa: Any, elements: Sequence[str]) -> np.ndarray:
    """Rows of :func:`feature_names` for each (formula, T, P)."""
    t = np.asarray(temperature_k, dtype=float)
    p = np.asarray(pressure_gpa, dtype=float)
    names = feature_names(elements)
    cache: dict[str, list[float]] = {}
    rows = []
    for f in formulas:
        if f not in cache:
            d = composition_features(f, elements)
            cache[f] = [d[n] for n in names[: -len(CONDITION_FEATURES)]]
        rows.append(cache[f])
    comp = np.asarray(rows, dtype=float).reshape(len(formulas), len(names) - len(CONDITION_FEATURES))
    return np.column_stack([comp, 1000.0 / t, p])


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PropertyTable:
    """Rows of (formula, T, P) with raw target columns, as read from a file or a results root.

    ``columns`` holds every other column unchanged (strings or numbers); ``source`` names the
    file for error messages; ``row_label(i)`` says where row ``i`` is in it.
    """

    formula: list[str]
    temperature_k: np.ndarray
    pressure_gpa: np.ndarray
    columns: dict[str, list[Any]]
    source: str
    line_offset: int | None = 2  # CSV: data row 0 is on line 2; None when lines mean nothing
    notes: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.formula)

    def row_label(self, i: int) -> str:
        return f"row {i + 1}" + ("" if self.line_offset is None else f" (line {i + self.line_offset})")


def _is_results_root(path: Path) -> bool:
    return path.is_dir() and (path / "materials").is_dir()


#: Which rows of a results root :func:`read_property_table` reads: the computed runs
#: (``screening`` view), the imported experimental spectra with a measured σ
#: (``experimental_conductivity`` view), or both.
RESULTS_ROWS = ("all", "computed", "experimental")


def read_property_table(path: str | os.PathLike[str], *, require_temperature: bool = True,
                        results_rows: str = "all") -> PropertyTable:
    """Read a CSV or Parquet table with ``formula``, ``temperature_k``, optional ``pressure_gpa``
    and target columns, or a campaign results root (its ``screening`` view and, per
    ``results_rows``, its ``experimental_conductivity`` view; the ``kind`` column says which).

    A table without ``pressure_gpa`` gets P = 0 GPa on every row, and ``notes`` says so.
    """
    path = Path(path)
    if results_rows not in RESULTS_ROWS:
        raise InputError(f"unknown rows {results_rows!r}", field="--rows", fix=f"use one of {', '.join(RESULTS_ROWS)}")
    if _is_results_root(path):
        return _read_results_root(path, results_rows)
    if not path.exists():
        raise InputError("file does not exist", file=path, fix="pass a CSV/Parquet table or a results root")
    columns = _read_columns(path)
    return _property_table_from_columns(columns, str(path), line_offset=2 if path.suffix.lower() != ".parquet" else None,
                                        require_temperature=require_temperature)


def _read_columns(path: Path) -> dict[str, list[Any]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        elif path.suffix.lower() in (".csv", ".txt", ".tsv"):
            delim = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim),
                                   convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        else:
            raise InputError(f"unknown table format {path.suffix!r}", file=path, fix="use .csv or .parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read the table: {' '.join(str(exc).split())[:160]}", file=path,
                         fix="write a CSV with a header row, or a Parquet file") from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _float_column(values: Sequence[Any], name: str, source: str, label, *, positive: bool = False) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            x = float(v)
            if not math.isfinite(x) or (positive and x <= 0):
                raise ValueError
        except (TypeError, ValueError):
            need = "a positive number" if positive else "a finite number"
            raise InputError(f"{label(i)}: cannot use {v!r}", file=source, field=name, fix=f"write {need}") from None
        out[i] = x
    return out


def _property_table_from_columns(columns: dict[str, list[Any]], source: str, *, line_offset: int | None,
                                 require_temperature: bool = True) -> PropertyTable:
    if FORMULA_COLUMN not in columns:
        raise InputError(f"no '{FORMULA_COLUMN}' column (columns: {', '.join(list(columns)[:8])})", file=source,
                         field=FORMULA_COLUMN, fix="add a formula column, e.g. Li7La3Zr2O12")
    n = len(columns[FORMULA_COLUMN])
    if n == 0:
        raise InputError("the table has no rows", file=source, fix="add data rows")

    def label(i: int) -> str:
        return f"row {i + 1}" + ("" if line_offset is None else f" (line {i + line_offset})")

    formulas = []
    for i, f in enumerate(columns[FORMULA_COLUMN]):
        if f is None or not str(f).strip():
            raise InputError(f"{label(i)}: empty formula", file=source, field=FORMULA_COLUMN, fix="fill in the formula")
        _parse_composition(str(f), file=source, field=f"{FORMULA_COLUMN} ({label(i)})")
        formulas.append(str(f).strip())
    notes = []
    if TEMPERATURE_COLUMN in columns:
        temps = _float_column(columns[TEMPERATURE_COLUMN], TEMPERATURE_COLUMN, source, label, positive=True)
    elif require_temperature:
        raise InputError(f"no '{TEMPERATURE_COLUMN}' column", file=source, field=TEMPERATURE_COLUMN,
                         fix="add the temperature in K of every row")
    else:
        temps = np.full(n, np.nan)
    if PRESSURE_COLUMN in columns:
        press = _float_column(columns[PRESSURE_COLUMN], PRESSURE_COLUMN, source, label)
    else:
        press = np.zeros(n)
        notes.append(f"no '{PRESSURE_COLUMN}' column: every row taken at 0 GPa")
    rest = {k: v for k, v in columns.items() if k not in (FORMULA_COLUMN, TEMPERATURE_COLUMN, PRESSURE_COLUMN)}
    return PropertyTable(formulas, temps, press, rest, source, line_offset, notes)


def _missing_as_zero(rows: list[tuple[Any, ...]], i: int) -> tuple[list[tuple[Any, ...]], int]:
    """``rows`` with a missing (None) value at column ``i`` replaced by 0.0, and how many were."""
    n = sum(r[i] is None for r in rows)
    return [r[:i] + (0.0 if r[i] is None else r[i],) + r[i + 1:] for r in rows], n


def _read_results_root(root: Path, rows: str = "all") -> PropertyTable:
    from ramanscreen.analytics.db import connect

    con = connect(root)
    columns: dict[str, list[Any]] = {}
    notes = []
    try:
        parts: list[tuple[str, list[str], list[tuple[Any, ...]]]] = []
        if rows in ("all", "computed"):
            cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'screening'").fetchall()]
            wanted = [c for c in ("campaign", "material", "run_id", FORMULA_COLUMN, TEMPERATURE_COLUMN, PRESSURE_COLUMN,
                                  "mobile_species", "D_cm2_s", "sigma_S_cm", "cp_fraction", "mlff") if c in cols]
            cur = con.execute(f"SELECT {', '.join(wanted)} FROM screening ORDER BY campaign, material, run_id")
            got_c = cur.fetchall()
            if PRESSURE_COLUMN in wanted:  # fixed-cell runs are at 0 GPa (results.PRESSURE_GPA_DOC), and said so
                got_c, n_missing = _missing_as_zero(got_c, wanted.index(PRESSURE_COLUMN))
                n_fixed = sum(r[wanted.index(PRESSURE_COLUMN)] == BUILT_DENSITY_PRESSURE_GPA for r in got_c)
                if n_missing:
                    notes.append(f"{n_missing} computed rows without {PRESSURE_COLUMN} (NVT runs) taken at 0 GPa")
                if n_fixed:
                    notes.append(f"{n_fixed} computed rows at {PRESSURE_COLUMN} = 0 GPa: fixed-cell NVT at the built "
                                 "density (nominal, not the MLFF's virial pressure)")
            parts.append(("computed", wanted, got_c))
            if PRESSURE_COLUMN not in wanted:
                notes.append(f"no '{PRESSURE_COLUMN}' in the screening view: computed rows taken at 0 GPa")
            notes.append("computed rows from the screening view: D_cm2_s and sigma_S_cm are MLFF-MD values, not DFT")
        if rows in ("all", "experimental"):
            exp = ["campaign", "material", "spectrum_id", FORMULA_COLUMN, TEMPERATURE_COLUMN, PRESSURE_COLUMN,
                   "sigma_S_cm", "source"]
            got = con.execute(f"SELECT {', '.join(exp)} FROM experimental_conductivity "
                              "ORDER BY material, campaign NULLS FIRST, spectrum_id").fetchall()
            no_t = [r for r in got if r[4] is None]
            if no_t:
                notes.append(f"{len(no_t)} experimental spectra with σ but no temperature left out")
            got, _ = _missing_as_zero([r for r in got if r[4] is not None], exp.index(PRESSURE_COLUMN))
            parts.append(("experimental", exp, got))
            notes.append(f"{len(got)} experimental rows from the experimental_conductivity view (measured σ)")
    finally:
        con.close()
    names = list(dict.fromkeys(["kind", *(c for _, wanted, _ in parts for c in wanted)]))
    for kind, wanted, got in parts:
        for name in names:
            values: list[Any]
            if name == "kind":
                values = [kind] * len(got)
            elif name in wanted:
                values = [r[wanted.index(name)] for r in got]
            else:
                values = [0.0 if name == PRESSURE_COLUMN else None] * len(got)
            columns.setdefault(name, []).extend(values)
    if not columns.get(FORMULA_COLUMN):
        raise InputError(f"no {rows} rows to read", file=root,
                         fix="import experimental spectra with --sigma-s-cm and --temperature-k, or use --rows all")
    table = _property_table_from_columns(columns, str(root), line_offset=None)
    table.notes.extend(notes)
    return table


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

_CENSORED_RE = re.compile(r"^\s*(<=?|>=?|≤|≥)\s*(.+?)\s*$")


@dataclasses.dataclass
class TargetValues:
    """A parsed target column: ``value`` (raw units; NaN where missing), ``censor`` ("" exact,
    "<" an upper bound, ">" a lower bound, "missing"), and the counts."""

    name: str
    value: np.ndarray
    censor: np.ndarray  # dtype object/str

    @property
    def exact(self) -> np.ndarray:
        return self.censor == ""

    @property
    def n_censored(self) -> int:
        return int(np.isin(self.censor, ["<", ">"]).sum())

    @property
    def n_missing(self) -> int:
        return int((self.censor == "missing").sum())


def parse_target(table: PropertyTable, target: str, transform: str) -> TargetValues:
    """Parse the raw ``target`` column: numbers, ``<x``/``>x`` bounds, empty cells.

    Raises :class:`InputError` naming the file, the row and the column for a value that cannot
    be parsed or (with ``transform='log10'``) is not positive.
    """
    if target not in table.columns:
        raise InputError(f"no target column '{target}' (columns: {', '.join(list(table.columns)[:10])})",
                         file=table.source, field=target, fix="pass --target with one of the table's columns")
    raw = table.columns[target]
    value = np.full(len(raw), np.nan)
    censor = np.array([""] * len(raw), dtype=object)
    for i, v in enumerate(raw):
        kind = ""
        if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
            censor[i] = "missing"
            continue
        text = v
        if isinstance(v, str):
            m = _CENSORED_RE.match(v)
            if m:
                kind = "<" if m.group(1) in ("<", "<=", "≤") else ">"
                text = m.group(2)
        try:
            x = float(text)
            if not math.isfinite(x):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"{table.row_label(i)}: cannot parse {v!r}", file=table.source, field=target,
                             fix="write a number, '<x' / '>x' for a bound, or leave the cell empty") from None
        if transform == "log10" and x <= 0:
            raise InputError(f"{table.row_label(i)}: {v!r} is not positive (the fit is in log10)", file=table.source,
                             field=target, fix="remove the row, write a bound such as '<1e-10', or fix the value")
        value[i] = x
        censor[i] = kind
    return TargetValues(target, value, censor)


def apply_transform(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log10":
        return np.log10(values)
    if transform == "identity":
        return np.asarray(values, dtype=float)
    raise InputError(f"unknown transform {transform!r}", field="transform", fix="use log10 or identity")


def invert_transform(values: np.ndarray, transform: str) -> np.ndarray:
    return 10.0 ** np.asarray(values) if transform == "log10" else np.asarray(values, dtype=float)


# --------------------------------------------------------------------------------------------
# GP, cross-validation and Bayesian optimisation
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """One point of the hyperparameter search: the family, ARD, and the ML-II starting values."""

    family: str = "rbf"
    ard: bool = False
    length_scale: float = 1.0
    noise: float = 0.01
    rq_alpha: float = 1.0

    def build(self, n_features: int):
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, RationalQuadratic, WhiteKernel

        ls: Any = np.full(n_features, self.length_scale) if (self.ard and self.family != "rq") else self.length_scale
        bounds = (1e-2, 1e4)
        if self.family == "rbf":
            k = RBF(ls, bounds)
        elif self.family.startswith("matern"):
            k = Matern(ls, bounds, nu=float(self.family[len("matern"):]))
        elif self.family == "rq":
            k = RationalQuadratic(length_scale=self.length_scale, alpha=self.rq_alpha, length_scale_bounds=bounds,
                                  alpha_bounds=(1e-2, 1e3))
        else:
            raise InputError(f"unknown kernel family {self.family!r}", field="family", fix=", ".join(KERNEL_FAMILIES))
        return ConstantKernel(1.0, (1e-3, 1e3)) * k + WhiteKernel(self.noise, (1e-8, 1.0))


def make_gp(choice: KernelChoice, n_features: int, seed: int = 0):
    """Standardise features, then a GP with ``normalize_y`` (ML-II fit from ``choice``'s start)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    gp = GaussianProcessRegressor(kernel=choice.build(n_features), normalize_y=True, n_restarts_optimizer=0,
                                  random_state=seed)
    return Pipeline([("scale", StandardScaler()), ("gp", gp)])


def _fit_quiet(model, X: np.ndarray, y: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*lbfgs.*")
        model.fit(X, y)
    return model


def cv_splits(groups: Sequence[str], n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped K-fold (a composition is never in a training and its held-out fold at once)."""
    from sklearn.model_selection import GroupKFold

    groups_arr = np.asarray(groups)
    k = min(n_folds, len(set(groups_arr.tolist())))
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups_arr)), groups=groups_arr))


def cross_validate(choice: KernelChoice, X: np.ndarray, y: np.ndarray, splits, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictive mean and standard deviation for every row."""
    mean = np.empty(len(y))
    std = np.empty(len(y))
    for train, test in splits:
        model = _fit_quiet(make_gp(choice, X.shape[1], seed), X[train], y[train])
        m, s = model.predict(X[test], return_std=True)
        mean[test], std[test] = m, s
    return mean, std


def regression_metrics(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and the share of points within ±1σ and ±2σ (ideal: 0.683 and 0.954).

    >>> m = regression_metrics(np.array([0.0, 1.0]), np.array([0.0, 0.5]), np.array([1.0, 0.1]))
    >>> m["mae"], m["within_1sigma"], m["within_2sigma"]
    (0.25, 0.5, 0.5)
    """
    err = mean - y
    z = np.abs(err) / np.maximum(std, 1e-300)
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "within_1sigma": float(np.mean(z <= 1.0)),
        "within_2sigma": float(np.mean(z <= 2.0)),
        "mean_std": float(np.mean(std)),
        "n": int(len(y)),
    }


def optimise_kernel(X: np.ndarray, y: np.ndarray, groups: Sequence[str], settings: SurrogateSettings,
                    ) -> tuple[KernelChoice, list[dict[str, Any]], tuple[np.ndarray, np.ndarray], int]:
    """Bayesian optimisation (optuna TPE) of the CV RMSE over :class:`KernelChoice`.

    Returns the best choice, the trial history, its out-of-fold (mean, std) and the fold count.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = cv_splits(groups, settings.cv_folds, settings.seed)
    oof: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    lo_ls, hi_ls = settings.length_scale_range
    lo_n, hi_n = settings.noise_range

    def objective(trial) -> float:
        family = trial.suggest_categorical("family", list(settings.families))
        ard = settings.allow_ard and family != "rq" and trial.suggest_categorical("ard", [False, True])
        choice = KernelChoice(
            family=family, ard=bool(ard),
            length_scale=trial.suggest_float("length_scale", lo_ls, hi_ls, log=True),
            noise=trial.suggest_float("noise", lo_n, hi_n, log=True),
            rq_alpha=trial.suggest_float("rq_alpha", 0.1, 10.0, log=True) if family == "rq" else 1.0,
        )
        trial.set_user_attr("choice", dataclasses.asdict(choice))
        mean, std = cross_validate(choice, X, y, splits, settings.seed)
        oof[trial.number] = (mean, std)
        return float(np.sqrt(np.mean((mean - y) ** 2)))

    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(10, settings.n_trials))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=settings.n_trials)
    history = [{"trial": t.number, "cv_rmse": t.value, **t.user_attrs["choice"]} for t in study.trials]
    best = study.best_trial
    return KernelChoice(**best.user_attrs["choice"]), history, oof[best.number], len(splits)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SurrogateModel:
    """A fitted surrogate: the sklearn pipeline plus everything needed to use and judge it."""

    pipeline: Any
    target: str
    transform: str
    elements: list[str]
    features: list[str]
    choice: KernelChoice
    info: dict[str, Any]

    def predict(self, formulas: Sequence[str], temperature_k: Any, pressure_gpa: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation in the transformed units (log10 for σ and D)."""
        n = len(formulas)
        t = np.broadcast_to(np.asarray(temperature_k, dtype=float), (n,))
        p = np.broadcast_to(np.asarray(pressure_gpa, dtype=float), (n,))
        X = feature_matrix(list(formulas), t, p, self.elements)
        mean, std = self.pipeline.predict(X, return_std=True)
        return np.asarray(mean), np.asarray(std)

    def unseen_elements(self, formulas: Sequence[str]) -> list[str]:
        """Elements of ``formulas`` the model was not trained on (their fractions are dropped)."""
        return [el for el in element_vocabulary(formulas) if el not in self.elements]

    @property
    def log_marginal_likelihood(self) -> float:
        return float(self.pipeline.named_steps["gp"].log_marginal_likelihood_value_)

    @property
    def kernel(self) -> str:
        return str(self.pipeline.named_steps["gp"].kernel_)


@dataclasses.dataclass
class FitReport:
    """Cross-validation of the chosen configuration and the rows it was judged on."""

    metrics: dict[str, float]
    table: dict[str, list[Any]]  # per row: formula, T, P, y, oof mean/std, censor, bound check
    history: list[dict[str, Any]]
    notes: list[str]


def fit_surrogate(table: PropertyTable, target: str, settings: SurrogateSettings | None = None,
                  transform: str | None = None) -> tuple[SurrogateModel, FitReport]:
    """Fit the GP surrogate of ``target`` on ``table`` (see the module docstring).

    Missing and censored rows are left out of the fit, each with a counted warning; the
    report lists censored rows with the model's prediction and whether it respects the bound.
    """
    settings = settings or SurrogateSettings()
    transform = transform or default_transform(target)
    tv = parse_target(table, target, transform)
    notes = list(table.notes)
    if tv.n_missing:
        msg = f"{target}: {tv.n_missing} of {len(table)} rows have no value and are left out"
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)
    if tv.n_censored:
        msg = (f"{target}: {tv.n_censored} censored values ('<x'/'>x') are left out of the GP fit and "
               "listed in the report with the model's prediction")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes.append(msg)
    idx = np.flatnonzero(tv.exact)
    formulas = [table.formula[i] for i in idx]
    n_groups = len(set(formulas))
    if n_groups < settings.min_compositions:
        raise InputError(f"{len(idx)} usable rows with {n_groups} distinct compositions; the grouped CV needs "
                         f"≥ {settings.min_compositions}", file=table.source, field=target,
                         fix="add measurements of more compositions")
    elements = element_vocabulary(table.formula)
    X = feature_matrix(formulas, table.temperature_k[idx], table.pressure_gpa[idx], elements)
    y = apply_transform(tv.value[idx], transform)
    choice, history, (oof_mean, oof_std), n_folds = optimise_kernel(X, y, formulas, settings)
    pipeline = _fit_quiet(make_gp(choice, X.shape[1], settings.seed), X, y)
    metrics = regression_metrics(y, oof_mean, oof_std)
    metrics.update({"n_folds": n_folds, "n_compositions": n_groups, "n_censored": tv.n_censored,
                    "n_missing": tv.n_missing})
    model = SurrogateModel(pipeline, target, transform, elements, feature_names(elements), choice, {})
    # report table: fitted rows with out-of-fold predictions, censored rows with full-model predictions
    cens = np.flatnonzero(np.isin(tv.censor, ["<", ">"]))
    c_mean, c_std = (model.predict([table.formula[i] for i in cens], table.temperature_k[cens], table.pressure_gpa[cens])
                     if len(cens) else (np.empty(0), np.empty(0)))
    rows = np.concatenate([idx, cens])
    y_all = apply_transform(np.where(np.isnan(tv.value), 1.0, tv.value), transform)
    mean_all = np.concatenate([oof_mean, c_mean])
    std_all = np.concatenate([oof_std, c_std])
    bound_ok: list[Any] = [None] * len(idx)
    for k, i in enumerate(cens):
        bound_ok.append(bool(mean_all[len(idx) + k] <= y_all[i]) if tv.censor[i] == "<" else bool(mean_all[len(idx) + k] >= y_all[i]))
    report_table = {
        "row": [int(i) + 1 for i in rows],
        FORMULA_COLUMN: [table.formula[i] for i in rows],
        TEMPERATURE_COLUMN: table.temperature_k[rows].tolist(),
        PRESSURE_COLUMN: table.pressure_gpa[rows].tolist(),
        f"{transform}_{target}" if transform != "identity" else target: y_all[rows].tolist(),
        "censored": [str(tv.censor[i]) for i in rows],
        "prediction": mean_all.tolist(),
        "prediction_std": std_all.tolist(),
        "prediction_kind": ["out-of-fold"] * len(idx) + ["full model"] * len(cens),
        "bound_satisfied": bound_ok,
    }
    model.info = {
        "n_train": int(len(idx)),
        "cv": metrics,
        "kernel": model.kernel,
        "log_marginal_likelihood": model.log_marginal_likelihood,
        "settings": dataclasses.asdict(settings),
        "source": table.source,
        "notes": notes,
        "train_temperature_k": [float(np.min(table.temperature_k[idx])), float(np.max(table.temperature_k[idx]))],
        "train_pressure_gpa": [float(np.min(table.pressure_gpa[idx])), float(np.max(table.pressure_gpa[idx]))],
    }
    return model, FitReport(metrics, report_table, history, notes)


def predict_table(model: SurrogateModel, table: PropertyTable) -> dict[str, Any]:
    """Prediction columns for every row of ``table``: mean and std in transformed units, the
    back-transformed median and a 95 % interval (``<target>``, ``<target>_lo95``, ``<target>_hi95``)."""
    mean, std = model.predict(table.formula, table.temperature_k, table.pressure_gpa)
    name = model.target
    pre = f"{model.transform}_{name}" if model.transform != "identity" else name
    out: dict[str, Any] = {
        FORMULA_COLUMN: table.formula,
        TEMPERATURE_COLUMN: table.temperature_k,
        PRESSURE_COLUMN: table.pressure_gpa,
        f"{pre}_mean": mean,
        f"{pre}_std": std,
        name: invert_transform(mean, model.transform),
        f"{name}_lo95": invert_transform(mean - 1.96 * std, model.transform),
        f"{name}_hi95": invert_transform(mean + 1.96 * std, model.transform),
    }
    unseen = model.unseen_elements(table.formula)
    if unseen:
        warnings.warn(f"elements not in the training set: {', '.join(unseen)}; their fractions are ignored and the "
                      "prediction is an extrapolation", UserWarning, stacklevel=2)
    return out


# --------------------------------------------------------------------------------------------
# Save / load / report
# --------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ramanscreen", "scikit-learn", "numpy", "scipy", "pymatgen-core", "optuna"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _minor(v: str) -> str:
    return ".".join(v.split(".")[:2])


MODEL_SUFFIX = ".joblib"


def model_paths(path: str | os.PathLike[str]) -> dict[str, Path]:
    """``MODEL.joblib`` and the files named after it: ``MODEL.json`` (metadata), ``MODEL.cv.csv``
    (out-of-fold predictions), ``MODEL.trials.csv`` (optimisation history), ``MODEL.parity.png``.

    >>> sorted(model_paths("m.joblib"))
    ['cv', 'info', 'model', 'parity', 'trials']
    """
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(MODEL_SUFFIX)
    if p.suffix != MODEL_SUFFIX:
        raise InputError(f"model path must end in {MODEL_SUFFIX}, got {p.name!r}", field="--out",
                         fix="use e.g. --out sigma_gp.joblib (MODEL.json and the report are written beside it)")
    stem = p.with_suffix("")
    return {"model": p, "info": Path(f"{stem}.json"), "cv": Path(f"{stem}.cv.csv"),
            "trials": Path(f"{stem}.trials.csv"), "parity": Path(f"{stem}.parity.png")}


def save_model(model: SurrogateModel, path: str | os.PathLike[str], report: FitReport | None = None) -> Path:
    """Write ``MODEL.joblib`` (the sklearn pipeline) and ``MODEL.json`` (features, target, CV
    metrics, versions, the joblib's SHA-256); with ``report`` also ``MODEL.cv.csv``,
    ``MODEL.trials.csv`` and ``MODEL.parity.png``. ``MODEL.json`` is written last: a crash before
    it leaves the previous model (or none) loadable, never a mismatched pair."""
    import joblib

    paths = model_paths(path)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    payload = {"pipeline": model.pipeline, "stamp": stamp}
    with atomic_path(paths["model"]) as tmp:
        joblib.dump(payload, tmp)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
    if report is not None:
        write_table(report.table, paths["cv"])
        keys = sorted({k for h in report.history for k in h})
        write_table({k: [h.get(k) for h in report.history] for k in keys}, paths["trials"])
        plot_parity(report, model, paths["parity"])
    info = {
        "format_version": MODEL_FORMAT_VERSION,
        "kind": "ramanscreen.surrogate.gp",
        "target": model.target,
        "transform": model.transform,
        "elements": model.elements,
        "features": model.features,
        "feature_definitions": {
            "frac_<El>": "atomic fraction of the element",
            "<stat>_<property>": f"stat in {STATISTICS} of {list(ELEMENT_PROPERTIES)} over the elements, fraction-weighted",
            "inv_temperature_1000_k": "1000 / T in 1/K",
            "pressure_gpa": "pressure in GPa",
        },
        "kernel_choice": dataclasses.asdict(model.choice),
        **model.info,
        "versions": _versions(),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "joblib_sha256": digest,
        "provenance": "GP surrogate; its training values are whatever the table holds (experiment, MLFF-MD, DFT)",
    }
    with atomic_write(paths["info"], "w") as fh:
        json.dump(info, fh, indent=2, default=float)
        fh.write("\n")
    return paths["model"]


def load_model(path: str | os.PathLike[str]) -> SurrogateModel:
    """Load ``MODEL.joblib`` written by :func:`save_model` (``MODEL.json`` may be given instead).

    Refuses (one line) a model of another format version or made with another scikit-learn
    minor version (pickled estimators are not portable across those), and a joblib file that
    does not match its ``MODEL.json``.
    """
    import joblib

    paths = model_paths(path)
    info_path = paths["info"]
    if not info_path.is_file():
        raise InputError(f"no {info_path.name} beside it; not a surrogate model", file=paths["model"],
                         fix="pass the MODEL.joblib that `ramanscreen surrogate fit --out` wrote")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"damaged metadata: {exc}", file=info_path, fix="refit the model") from None
    fmt = info.get("format_version")
    if fmt != MODEL_FORMAT_VERSION:
        raise InputError(f"model format version {fmt}, this ramanscreen reads {MODEL_FORMAT_VERSION}", file=info_path,
                         fix="refit the model with this ramanscreen")
    made = info.get("versions", {}).get("scikit-learn", "?")
    have = _versions()["scikit-learn"]
    if _minor(made) != _minor(have):
        raise InputError(f"model made with scikit-learn {made}, this environment has {have}", file=info_path,
                         fix="refit the model here, or install the scikit-learn it was made with")
    blob = paths["model"].read_bytes() if paths["model"].is_file() else b""
    if hashlib.sha256(blob).hexdigest() != info.get("joblib_sha256"):
        raise InputError(f"does not match {info_path.name} (incomplete or foreign write)", file=paths["model"],
                         fix="refit the model")
    payload = joblib.load(paths["model"])
    choice = KernelChoice(**info["kernel_choice"])
    keep = {k: v for k, v in info.items() if k not in ("kernel_choice",)}
    return SurrogateModel(payload["pipeline"], info["target"], info["transform"], list(info["elements"]),
                          list(info["features"]), choice, keep)


def plot_parity(report: FitReport, model: SurrogateModel, path: str | os.PathLike[str]) -> Path:
    """Parity plot of out-of-fold predictions (±1σ bars); censored rows as open triangles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = report.table
    ycol = next(k for k in t if k.endswith(model.target) and k not in (FORMULA_COLUMN,))
    y = np.asarray(t[ycol], dtype=float)
    m = np.asarray(t["prediction"], dtype=float)
    s = np.asarray(t["prediction_std"], dtype=float)
    cens = np.asarray(t["censored"])
    exact = cens == ""
    fig = Figure(figsize=(5.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(y[exact], m[exact], yerr=s[exact], fmt="o", ms=4, capsize=2, label="out-of-fold ±1σ")
    for kind, marker in (("<", "v"), (">", "^")):
        sel = cens == kind
        if sel.any():
            ax.scatter(y[sel], m[sel], marker=marker, facecolors="none", edgecolors="C3", label=f"censored '{kind}' (full model)")
    lo = float(np.nanmin(np.concatenate([y, m - s]))) - 0.2
    hi = float(np.nanmax(np.concatenate([y, m + s]))) + 0.2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    unit = f"log10 {model.target}" if model.transform == "log10" else model.target
    ax.set_xlabel(f"observed {unit}")
    ax.set_ylabel(f"predicted {unit}")
    cv = report.metrics
    ax.set_title(f"GP surrogate, {cv['n_folds']}-fold grouped CV: MAE {cv['mae']:.2f}, RMSE {cv['rmse']:.2f}\n"
                 f"within ±1σ {cv['within_1sigma']:.0%}, ±2σ {cv['within_2sigma']:.0%} (n = {cv['n']})", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def dataset_path(name: str = "conductivity_literature.csv") -> Path:
    """Path of a data file shipped with ramanscreen (``tasks/data``)."""
    from importlib import resources

    return Path(str(resources.files("ramanscreen.tasks").joinpath("data", name)))


def as_mapping(model: SurrogateModel) -> Mapping[str, Any]:
    """The model's JSON-able description (what ``model.json`` holds, without versions)."""
    return {"target": model.target, "transform": model.transform, "elements": model.elements,
            "features": model.features, "kernel_choice": dataclasses.asdict(model.choice), **model.info}


__all__ = [
    "CONDITION_FEATURES",
    "ELEMENT_PROPERTIES",
    "KERNEL_FAMILIES",
    "MODEL_FORMAT_VERSION",
    "FitReport",
    "KernelChoice",
    "PropertyTable",
    "RESULTS_ROWS",
    "SurrogateModel",
    "SurrogateSettings",
    "TargetValues",
    "composition_features",
    "cross_validate",
    "dataset_path",
    "default_transform",
    "feature_matrix",
    "feature_names",
    "fit_surrogate",
    "load_model",
    "model_paths",
    "optimise_kernel",
    "oxidation_states",
    "parse_target",
    "plot_parity",
    "predict_table",
    "read_property_table",
    "regression_metrics",
    "save_model",
]
