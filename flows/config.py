"""The campaign file: a TOML document listing what to screen and how.

Every key is checked; anything wrong (unknown key, wrong type, bad value) raises
:class:`ramanscreen.tasks.common.InputError` naming the file and the dotted field, e.g.
``default.toml: materials[2].temperature_k: must be > 0 (fix: ...)``.

Layout (see ``docs/campaign.md`` for every key)::

    name = "default"
    results_root = "results"          # relative to the current directory

    [mlff]        calculator, options
    [md]          defaults for every material: dt_fs, steps, equil_steps, write_every, ...
    [reference]   backend, options, n_train (N_T), retries, retry_delay_s
    [model]       λ-SOAP hyperparameters and committee size
    [prediction]  chunk_frames
    [spectrum]    sigma_cm1, band_quantiles, ...
    [cluster]     passed to flows/cluster.py
    [[materials]] name, structure, n_atoms, temperature_k (or temperatures_k), mobile, + any [md] key
    [quick]       a partial campaign deep-merged over this one by ``--quick``

``[quick]`` may hold ``md``, ``reference``, ``model``, ``prediction``, ``spectrum`` and
``cluster`` tables and a ``materials`` table keyed by material name, e.g.
``[quick.materials.AgI] n_atoms = 32``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ramanscreen.tasks.common import InputError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

#: Keys allowed in ``[md]`` and per material (fields of ``ramanscreen.tasks.md.MDSettings``), type and default.
#: ``temperature_k`` is per material; the calculator comes from ``[mlff]``.
MD_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "dt_fs": ((int, float), 2.0),
    "steps": (int, 1000),  # production steps
    "equil_steps": (int, 0),
    "write_every": (int, 1),  # store every n-th MD step in the trajectory
    "alpha_stride": (int, 10),  # predict α on every n-th stored frame
    "ensemble": (str, "nvt-nhc"),
    "pressure_gpa": ((int, float), 0.0),
    "tdamp_fs": ((int, float), None),  # Nosé-Hoover chain damping time; None: 100 × dt
    "pdamp_fs": ((int, float), None),
    "friction_per_fs": ((int, float), 0.01),
    "seed": (int, 0),
    "checkpoint_every": (int, 100),
    "num_threads": (int, 1),  # torch threads per MD task (one task per Dask worker slot)
}
MATERIAL_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None),
    "structure": (str, None),
    "n_atoms": (int, None),
    "temperature_k": ((int, float), None),
    "temperatures_k": (list, None),
    "mobile": (list, None),
    "label": (str, None),
}
_TABLE_KEYS: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "mlff": {"calculator": (str, "chgnet"), "options": (dict, {})},
    "reference": {
        "backend": (str, "dipole"),
        "options": (dict, {}),  # dataclass fields of the backend (ramanscreen.tasks.reference)
        "n_train": (int, 100),  # N_T: snapshots the model is fitted on
        "n_test": (int, 10),  # further snapshots, only for the R²/RMSE test metrics
        "selection": (str, "random"),  # "random" (the paper) or "fps"
        "retries": (int, 3),
        "retry_delay_s": ((int, float), 2.0),
        "seed": (int, 0),
    },
    "model": {
        "committee": (int, 4),  # bootstrap committee members (the spectrum band)
        "hypers": (dict, {}),  # ramanscreen.tasks.polarizability.SOAPHypers fields
        "seed": (int, 0),
    },
    "prediction": {"chunk_frames": (int, 200)},
    "spectrum": {
        "sigma_cm1": ((int, float), 4.0),
        "laser_nm": ((int, float), 532.0),
        "max_freq_cm1": ((int, float), None),
        "band_percentiles": (list, [16.0, 84.0]),
        "omega_min_cm1": ((int, float), 5.0),
        "omega_c_cm1": ((int, float), 50.0),
        "host_window_cm1": (list, [60.0, 1000.0]),
    },
    "ranking": {
        "metric": (str, "cp_fraction"),  # ramanscreen.analytics.ranking metric: cp_fraction or a descriptors column
        "d_liquid_cm2_s": ((int, float), 5e-6),
        "d_hopping_cm2_s": ((int, float), 1e-7),
        "cp_threshold": ((int, float), 0.25),
    },
    "transport": {
        "method": (str, "kinisi"),  # "kinisi" or "blocks"
        "drift": (str, "framework"),
        "n_blocks": (int, 5),
        # earliest start of the MSD fit window, ps (ramanscreen.tasks.transport.analyze_transport)
        "min_fit_start_ps": ((int, float), 0.0),
    },
}
TABLES = ("mlff", "md", "reference", "model", "prediction", "spectrum", "transport", "ranking", "cluster")
TOP_KEYS = ("name", "description", "results_root", "materials", "quick", *TABLES)


@dataclass(frozen=True)
class Material:
    """One (structure, temperature) run of a campaign."""

    name: str  # unique within the campaign, used in paths and the Parquet key
    structure: str  # builder name or structure file (absolute path)
    n_atoms: int | None
    temperature_k: float
    mobile: tuple[str, ...]
    md: dict[str, Any]
    label: str = ""

    def fingerprint(self, campaign: Campaign) -> str:
        """Hash of every input that determines this material's results (the Parquet run id)."""
        blob = {
            "material": asdict(self),
            "structure_file": _file_digest(self.structure),
            "mlff": campaign.mlff,
            "reference": {k: v for k, v in campaign.reference.items() if k not in ("retries", "retry_delay_s")},
            "model": campaign.model,
            "prediction": campaign.prediction,
            "spectrum": campaign.spectrum,
            "transport": campaign.transport,
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Campaign:
    name: str
    results_root: Path
    materials: tuple[Material, ...]
    mlff: dict[str, Any]
    reference: dict[str, Any]
    model: dict[str, Any]
    prediction: dict[str, Any]
    spectrum: dict[str, Any]
    transport: dict[str, Any]
    ranking: dict[str, Any]
    cluster: dict[str, Any]
    source: Path | None = None
    description: str = ""
    quick: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def campaign_dir(self) -> Path:
        return self.results_root / "campaigns" / self.name

    def thresholds(self):
        """The ``ramanscreen.analytics.ranking.Thresholds`` of ``[ranking]``."""
        from ramanscreen.analytics.ranking import Thresholds

        r = self.ranking
        return Thresholds(d_liquid_cm2_s=r["d_liquid_cm2_s"], d_hopping_cm2_s=r["d_hopping_cm2_s"],
                          cp_threshold=r["cp_threshold"])

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (for flow parameters and the UI)."""
        return json.loads(json.dumps({"name": self.name, "results_root": str(self.results_root),
                                      "source": str(self.source), "quick": self.quick, **self.raw}, default=str))


def _file_digest(spec: str) -> str | None:
    p = Path(spec)
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return None


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table", bool: "true/false"}
    if isinstance(t, tuple):
        return "a number" if set(t) == {int, float} else " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


class _Checker:
    def __init__(self, file: Path | str | None) -> None:
        self.file = file

    def fail(self, field: str, message: str, fix: str | None = None) -> InputError:
        return InputError(message, file=self.file, field=field, fix=fix)

    def table(self, data: Any, field: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(field, f"expected a table, got {type(data).__name__}", f"write it as [{field}]")
        return data

    def known(self, data: dict[str, Any], allowed: Any, field: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{field}.{key}" if field else key
                raise self.fail(where, "unknown key", f"allowed keys: {', '.join(sorted(allowed))}")

    def typed(self, value: Any, kind: type | tuple[type, ...], field: str) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(field, f"expected {_type_name(kind)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(field, f"expected {_type_name(kind)}, got {type(value).__name__} {value!r}")
        return float(value) if kinds == (int, float) else value

    def positive(self, value: float, field: str, *, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            raise self.fail(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    def section(self, data: Any, name: str) -> dict[str, Any]:
        spec = _TABLE_KEYS[name]
        data = self.table({} if data is None else data, name)
        self.known(data, spec, name)
        out = {}
        for key, (kind, default) in spec.items():
            out[key] = self.typed(data[key], kind, f"{name}.{key}") if key in data else copy.deepcopy(default)
        return out

    def md(self, data: dict[str, Any], field: str, base: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, (kind, _default) in MD_KEYS.items():
            if key in data:
                out[key] = self.typed(data[key], kind, f"{field}.{key}" if field else key)
        for key in ("dt_fs", "steps", "write_every", "alpha_stride", "checkpoint_every", "num_threads",
                    "tdamp_fs", "pdamp_fs"):
            if out[key] is not None:
                self.positive(out[key], f"{field}.{key}" if field else key)
        self.positive(out["equil_steps"], f"{field}.equil_steps", allow_zero=True)
        return out


def n_alpha_frames(md: dict[str, Any]) -> int:
    """α samples a production run yields: every ``alpha_stride``-th of its stored frames."""
    n_stored = md["steps"] // md["write_every"] + 1
    return len(range(0, n_stored, md["alpha_stride"]))


def _check_lengths(ck: _Checker, f: str, md: dict[str, Any], reference: dict[str, Any],
                   spectrum: dict[str, Any]) -> None:
    """Catch, before any MD, runs too short for the reference snapshots or the spectral windows."""
    from ramanscreen.tasks.common import CM1_PER_INV_FS

    n_stored = md["steps"] // md["write_every"] + 1
    need = reference["n_train"] + reference["n_test"]
    if need > n_stored:
        raise ck.fail(f"{f}.steps", f"{n_stored} stored frames but reference.n_train + n_test = {need} snapshots",
                      "run more steps, lower write_every, or lower n_train/n_test")
    n_alpha = n_alpha_frames(md)
    alpha_dt = md["dt_fs"] * md["write_every"] * md["alpha_stride"]
    df = CM1_PER_INV_FS / (n_alpha * alpha_dt)
    if spectrum["omega_min_cm1"] <= 2 * df:
        need_ps = 2 * CM1_PER_INV_FS / spectrum["omega_min_cm1"] / 1000
        raise ck.fail(f"{f}.steps", f"{md['steps']} steps of {md['dt_fs']:g} fs give a spectral bin of {df:.3g} cm⁻¹, "
                      f"too coarse for spectrum.omega_min_cm1 = {spectrum['omega_min_cm1']:g}",
                      f"run more than {need_ps:.3g} ps of production or raise spectrum.omega_min_cm1")
    if spectrum["omega_c_cm1"] - spectrum["omega_min_cm1"] < 3 * df:
        raise ck.fail(f"{f}.steps", f"the central-peak window {spectrum['omega_min_cm1']:g}–{spectrum['omega_c_cm1']:g} "
                      f"cm⁻¹ holds fewer than 3 bins of {df:.3g} cm⁻¹", "run longer or widen spectrum.omega_c_cm1")
    nyquist = CM1_PER_INV_FS / (2 * alpha_dt)
    if spectrum["host_window_cm1"][0] >= nyquist:
        raise ck.fail(f"{f}.alpha_stride", f"α every {alpha_dt:g} fs reaches only {nyquist:.0f} cm⁻¹, below the "
                      f"host window start {spectrum['host_window_cm1'][0]:g} cm⁻¹", "lower alpha_stride or write_every")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` (tables recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_quick(data: dict[str, Any], ck: _Checker) -> dict[str, Any]:
    quick = ck.table(data.get("quick"), "quick") if "quick" in data else None
    if quick is None:
        raise ck.fail("quick", "this campaign has no [quick] profile", "add a [quick] table or drop --quick")
    ck.known(quick, (*TABLES, "materials", "name"), "quick")
    over = {k: v for k, v in quick.items() if k not in ("materials", "name")}
    merged = deep_merge({k: v for k, v in data.items() if k != "quick"}, over)
    merged["name"] = quick.get("name", f"{data.get('name', 'campaign')}-quick")
    per = ck.table(quick.get("materials", {}), "quick.materials")
    mats = merged.get("materials")
    if isinstance(mats, list):
        names = {m.get("name") for m in mats if isinstance(m, dict)}
        for mname, patch in per.items():
            if mname not in names:
                raise ck.fail(f"quick.materials.{mname}", "no material of that name",
                              f"use one of {', '.join(sorted(str(n) for n in names))}")
            ck.table(patch, f"quick.materials.{mname}")
        merged["materials"] = [deep_merge(m, per.get(m.get("name"), {})) if isinstance(m, dict) else m for m in mats]
    return merged


def parse_campaign(data: dict[str, Any], *, file: Path | str | None = None, quick: bool = False,
                   base_dir: Path | None = None) -> Campaign:
    """Validate a campaign document (already parsed from TOML) into a :class:`Campaign`."""
    ck = _Checker(file)
    data = ck.table(data, "campaign")
    ck.known(data, TOP_KEYS, "")
    if quick:
        data = _apply_quick(data, ck)
    elif "quick" in data:
        q = ck.table(data["quick"], "quick")
        ck.known(q, (*TABLES, "materials", "name"), "quick")
    base_dir = base_dir or (Path(file).resolve().parent if file else Path.cwd())

    if "name" not in data:
        raise ck.fail("name", "missing", 'add e.g. name = "default"')
    name = ck.typed(data["name"], str, "name")
    if not _NAME_RE.match(name):
        raise ck.fail("name", f"{name!r} is not a plain name", "use letters, digits, '-', '_', '.'")
    description = ck.typed(data.get("description", ""), str, "description")
    root = ck.typed(data.get("results_root", "results"), str, "results_root")
    env_root = os.environ.get("RAMANSCREEN_RESULTS_ROOT")
    results_root = Path(env_root or root).expanduser().resolve()

    mlff = ck.section(data.get("mlff"), "mlff")
    reference = ck.section(data.get("reference"), "reference")
    for key in ("n_train", "retries"):
        ck.positive(reference[key], f"reference.{key}", allow_zero=key == "retries")
    ck.positive(reference["retry_delay_s"], "reference.retry_delay_s", allow_zero=True)
    if reference["n_train"] < 2:
        raise ck.fail("reference.n_train", "needs at least 2 training snapshots")
    model = ck.section(data.get("model"), "model")
    ck.positive(model["committee"], "model.committee")
    prediction = ck.section(data.get("prediction"), "prediction")
    ck.positive(prediction["chunk_frames"], "prediction.chunk_frames")
    if reference["n_test"] < 0:
        raise ck.fail("reference.n_test", f"must be >= 0, got {reference['n_test']}")
    if reference["selection"] not in ("random", "fps"):
        raise ck.fail("reference.selection", f"unknown method {reference['selection']!r}", 'use "random" or "fps"')
    spectrum = ck.section(data.get("spectrum"), "spectrum")
    for key in ("sigma_cm1", "omega_min_cm1", "omega_c_cm1", "laser_nm", "max_freq_cm1"):
        if spectrum[key] is not None:
            ck.positive(spectrum[key], f"spectrum.{key}", allow_zero=key == "sigma_cm1")
    for key in ("band_percentiles", "host_window_cm1"):
        vals = spectrum[key]
        if len(vals) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) \
                or not vals[0] < vals[1]:
            raise ck.fail(f"spectrum.{key}", f"expected two increasing numbers, got {vals!r}")
        spectrum[key] = [float(v) for v in vals]
    if not spectrum["band_percentiles"][0] >= 0 and spectrum["band_percentiles"][1] <= 100:
        raise ck.fail("spectrum.band_percentiles", "percentiles must lie in [0, 100]")
    if spectrum["omega_c_cm1"] <= spectrum["omega_min_cm1"]:
        raise ck.fail("spectrum.omega_c_cm1", "must exceed spectrum.omega_min_cm1")
    transport = ck.section(data.get("transport"), "transport")
    if transport["method"] not in ("kinisi", "blocks"):
        raise ck.fail("transport.method", f"unknown method {transport['method']!r}", 'use "kinisi" or "blocks"')
    if transport["drift"] not in ("framework", "system", "none"):
        raise ck.fail("transport.drift", f"unknown mode {transport['drift']!r}", 'use "framework", "system" or "none"')
    ck.positive(transport["n_blocks"], "transport.n_blocks")
    ck.positive(transport["min_fit_start_ps"], "transport.min_fit_start_ps", allow_zero=True)
    ranking = ck.section(data.get("ranking"), "ranking")
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", ranking["metric"]):
        raise ck.fail("ranking.metric", f"{ranking['metric']!r} is not a column name",
                      "use cp_fraction or a central-peak descriptor such as fraction_below_omega_c")
    for key in ("d_liquid_cm2_s", "d_hopping_cm2_s", "cp_threshold"):
        ck.positive(ranking[key], f"ranking.{key}")
    if ranking["d_hopping_cm2_s"] >= ranking["d_liquid_cm2_s"]:
        raise ck.fail("ranking.d_hopping_cm2_s", "must be below ranking.d_liquid_cm2_s")
    cluster = ck.table(data.get("cluster", {}), "cluster")

    md_defaults = {k: d for k, (_t, d) in MD_KEYS.items()}
    md_table = ck.table(data.get("md", {}), "md")
    ck.known(md_table, MD_KEYS, "md")
    md_base = ck.md(md_table, "md", md_defaults)

    raw_mats = data.get("materials")
    if raw_mats is None or raw_mats == []:
        raise ck.fail("materials", "no materials listed", 'add [[materials]] tables with name and structure')
    if not isinstance(raw_mats, list):
        raise ck.fail("materials", "expected an array of tables", "write each material as [[materials]]")
    materials: list[Material] = []
    seen: set[str] = set()
    for i, m in enumerate(raw_mats):
        f = f"materials[{i}]"
        m = ck.table(m, f)
        ck.known(m, {**MATERIAL_KEYS, **MD_KEYS}, f)
        for req in ("name", "structure", "mobile"):
            if req not in m:
                raise ck.fail(f"{f}.{req}", "missing")
        mname = ck.typed(m["name"], str, f"{f}.name")
        if not _NAME_RE.match(mname):
            raise ck.fail(f"{f}.name", f"{mname!r} is not a plain name", "use letters, digits, '-', '_', '.'")
        structure = ck.typed(m["structure"], str, f"{f}.structure")
        from ramanscreen.tasks.structures import resolve_name

        if resolve_name(structure) is None:
            path = (base_dir / structure).resolve() if not Path(structure).is_absolute() else Path(structure)
            if not path.is_file():
                from ramanscreen.tasks.structures import BUILDERS

                raise ck.fail(f"{f}.structure", f"{structure!r} is neither a builder nor a structure file",
                              f"use one of {', '.join(BUILDERS)} or a path relative to the campaign file")
            structure = str(path)
        n_atoms = m.get("n_atoms")
        if n_atoms is not None:
            n_atoms = ck.typed(n_atoms, int, f"{f}.n_atoms")
            ck.positive(n_atoms, f"{f}.n_atoms")
        if ("temperature_k" in m) == ("temperatures_k" in m):
            raise ck.fail(f"{f}.temperature_k", "give exactly one of temperature_k or temperatures_k")
        if "temperature_k" in m:
            temps = [ck.typed(m["temperature_k"], (int, float), f"{f}.temperature_k")]
            tfield = [f"{f}.temperature_k"]
        else:
            raw_t = ck.typed(m["temperatures_k"], list, f"{f}.temperatures_k")
            if not raw_t:
                raise ck.fail(f"{f}.temperatures_k", "empty list")
            tfield = [f"{f}.temperatures_k[{j}]" for j in range(len(raw_t))]
            temps = [ck.typed(t, (int, float), tf) for t, tf in zip(raw_t, tfield, strict=False)]
        for t, tf in zip(temps, tfield, strict=False):
            ck.positive(t, tf)
        mobile = ck.typed(m["mobile"], list, f"{f}.mobile")
        if not mobile:
            raise ck.fail(f"{f}.mobile", "empty list", 'name the mobile species, e.g. ["Na"]')
        for j, s in enumerate(mobile):
            ck.typed(s, str, f"{f}.mobile[{j}]")
        label = ck.typed(m.get("label", ""), str, f"{f}.label")
        md = ck.md(m, f, md_base)
        _check_lengths(ck, f, md, reference, spectrum)
        for t in temps:
            full = mname if len(temps) == 1 else f"{mname}-{t:g}K"
            if full in seen:
                raise ck.fail(f"{f}.name", f"duplicate material {full!r}", "give each material a unique name")
            seen.add(full)
            materials.append(Material(name=full, structure=structure, n_atoms=n_atoms, temperature_k=float(t),
                                      mobile=tuple(mobile), md=md, label=label or mname))
    if reference["n_train"] > 10**6:
        raise ck.fail("reference.n_train", "unreasonably large")

    raw = {k: v for k, v in data.items() if k not in ("quick",)}
    return Campaign(name=name, results_root=results_root, materials=tuple(materials), mlff=mlff,
                    reference=reference, model=model, prediction=prediction, spectrum=spectrum,
                    transport=transport, ranking=ranking, cluster=cluster, source=Path(file).resolve() if file else None, description=description,
                    quick=quick, raw=raw)


def load_campaign(path: str | os.PathLike[str], *, quick: bool = False) -> Campaign:
    """Read and validate a campaign TOML file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such campaign file", file=path, fix="give a path like deployments/campaigns/default.toml")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", file=path, fix="check the syntax at that line") from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", file=path) from None
    campaign = parse_campaign(data, file=path, quick=quick)
    validate_against_stages(campaign)
    return campaign


def validate_against_stages(campaign: Campaign) -> None:
    """Check the keys that pass through to stage modules (SOAP hypers, cluster, backend names)
    against those modules, so a typo fails here rather than an hour into the campaign."""
    file = campaign.source
    hypers = campaign.model["hypers"]
    if hypers:
        try:
            from ramanscreen.tasks.polarizability import SOAPHypers
        except ImportError:  # stage not installed: checked when the model is fitted
            SOAPHypers = None
        if SOAPHypers is not None:
            import dataclasses

            allowed = {f.name for f in dataclasses.fields(SOAPHypers)}
            for key in hypers:
                if key not in allowed:
                    raise InputError("unknown key", file=file, field=f"model.hypers.{key}",
                                     fix=f"allowed keys: {', '.join(sorted(allowed))}")
    from ramanscreen.flows.cluster import ClusterSettings

    ClusterSettings.from_dict(campaign.cluster, file=file)
