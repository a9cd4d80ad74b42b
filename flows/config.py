"""The campaign file: a TOML document listing what to screen and how.

Each section *is* its stage's settings dataclass, defined once in the stage's science module;
the section's keys are the dataclass fields, with their defaults, units and bounds:

==============  ===============================================================
section         settings
==============  ===============================================================
``[mlff]``      :class:`ramanscreen.tasks.md.MLFFSettings` (calculator, options)
``[md]``        :class:`ramanscreen.tasks.md.MDSettings` (defaults for every material)
``[reference]`` :class:`ramanscreen.tasks.reference.ReferenceSettings`
``[model]``     :class:`ramanscreen.tasks.polarizability.ModelSettings` (``hypers`` = ``SOAPHypers``)
``[prediction]`` :class:`ramanscreen.tasks.polarizability.PredictionSettings`
``[spectrum]``  :class:`ramanscreen.tasks.spectra.SpectrumSettings`
``[transport]`` :class:`ramanscreen.tasks.transport.TransportSettings`
``[ranking]``   :class:`ramanscreen.analytics.ranking.Thresholds`
``[cluster]``   :class:`ramanscreen.flows.cluster.ClusterSettings`
==============  ===============================================================

plus ``name``, ``description``, ``results_root`` (relative to the current directory),
``[[materials]]`` (``name, structure, n_atoms, temperature_k`` or ``temperatures_k``,
``mobile, label`` and any ``[md]`` key) and ``[quick]``, a partial campaign deep-merged over
this one by ``--quick`` (``md``, ``reference``, ... tables, ``name``, and a ``materials`` table
keyed by material name, e.g. ``[quick.materials.AgI] n_atoms = 32``). An ``[explore]`` table
(and ``[quick.explore]``) is the closed loop of ``ramanscreen explore`` (:mod:`ramanscreen.flows.explore`,
which validates it); ``screen`` ignores it.

Everything is checked when the file is read, before anything starts: unknown keys, types,
bounds, and the cross-field checks that need the whole campaign (reference snapshots against
stored frames, spectral windows against each material's α sampling, the transport fit window
against the run). Anything wrong raises :class:`ramanscreen.tasks.common.InputError` naming the
file, the TOML key and the fix, e.g.
``default.toml: materials[2].temperature_k: must be > 0 K, got -5 (fix: ...)``.

>>> c = load_campaign(Path(__file__).resolve().parents[1] / "deployments" / "campaigns" / "default.toml")
>>> c.spectrum.omega_min_cm1, c.materials[0].md.dt_fs, c.ranking.d_liquid_cm2_s
(20.0, 10.0, 5e-06)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramanscreen.analytics.ranking import Thresholds
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.md import MDSettings, MLFFSettings
from ramanscreen.tasks.polarizability import ModelSettings, PredictionSettings
from ramanscreen.tasks.reference import ReferenceSettings
from ramanscreen.tasks.schema import field_names, from_mapping, prefixed
from ramanscreen.tasks.spectra import SpectrumSettings
from ramanscreen.tasks.transport import TransportSettings

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

#: Section -> its settings dataclass ([md] and [cluster] are read separately).
SECTIONS: dict[str, type] = {
    "mlff": MLFFSettings,
    "reference": ReferenceSettings,
    "model": ModelSettings,
    "prediction": PredictionSettings,
    "spectrum": SpectrumSettings,
    "transport": TransportSettings,
    "ranking": Thresholds,
}
#: Keys of ``[md]`` and of a material's MD overrides: the MDSettings fields a campaign sets.
MD_KEYS: tuple[str, ...] = tuple(field_names(MDSettings, toml_only=True))
MATERIAL_KEYS: tuple[str, ...] = ("name", "structure", "n_atoms", "temperature_k", "temperatures_k", "mobile", "label",
                                  "allow_charged")
TABLES = ("mlff", "md", "reference", "model", "prediction", "spectrum", "transport", "ranking", "cluster")
#: ``explore``: the closed loop's table (:mod:`ramanscreen.flows.explore` reads it; ``screen`` ignores it).
TOP_KEYS = ("name", "description", "results_root", "materials", "quick", "explore", *TABLES)
#: MDSettings fields that come from [mlff], not [md].
_MLFF_FIELDS = {"calculator": "mlff.calculator", "calculator_kwargs": "mlff.options"}


@dataclass(frozen=True)
class Material:
    """One (structure, temperature) run of a campaign; ``md`` holds its complete MD settings."""

    name: str  # unique within the campaign, used in paths and the Parquet key
    structure: str  # builder name or structure file (absolute path)
    n_atoms: int | None
    temperature_k: float
    mobile: tuple[str, ...]
    md: MDSettings
    label: str = ""

    @property
    def n_stored_frames(self) -> int:
        """Frames the production run stores: ``steps // write_every + 1``."""
        return self.md.steps // self.md.write_every + 1

    @property
    def cost_atom_steps(self) -> int:
        """A relative cost of the material's run: atoms × MD steps (equilibration, NPT and
        production). The campaign starts the costliest material's tasks first (longest first), so
        the longest chain of distillation → MD → α → analysis does not start last. A material
        whose size the builder decides (``n_atoms`` unset) counts 1 atom per step.

        >>> from ramanscreen.tasks.md import MDSettings
        >>> Material("x", "AgI", 128, 500.0, ("Ag",), MDSettings(temperature_k=500, steps=1000, equil_steps=100)).cost_atom_steps
        140800
        """
        return int(self.n_atoms or 1) * int(self.md.total_steps)

    def fingerprint(self, campaign: Campaign) -> str:
        """Hash of every input that determines this material's results (the Parquet run id).

        Threads, the checkpoint interval, reference retries and the ranking are left out: they
        do not change the results.
        """
        md = dataclasses.asdict(self.md)
        for key in ("num_threads", "checkpoint_every"):
            md.pop(key)
        blob = {
            "material": {"name": self.name, "structure": self.structure, "n_atoms": self.n_atoms,
                         "temperature_k": self.temperature_k, "mobile": list(self.mobile), "label": self.label},
            "md": md,
            # how the MD was driven (distilled or not, and how the potential was made); whether a
            # flagged potential is refused changes no result
            "mlff": {k: v for k, v in dataclasses.asdict(campaign.mlff).items() if k != "refuse_flagged"},
            "structure_file": _file_digest(self.structure),
            "reference": {k: v for k, v in dataclasses.asdict(campaign.reference).items()
                          if k not in ("retries", "retry_delay_s")},
            "model": dataclasses.asdict(campaign.model),
            "prediction": dataclasses.asdict(campaign.prediction),
            "spectrum": dataclasses.asdict(campaign.spectrum),
            "transport": dataclasses.asdict(campaign.transport),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Campaign:
    name: str
    results_root: Path
    materials: tuple[Material, ...]
    mlff: MLFFSettings
    reference: ReferenceSettings
    model: ModelSettings
    prediction: PredictionSettings
    spectrum: SpectrumSettings
    transport: TransportSettings
    ranking: Thresholds
    cluster: dict[str, Any]
    source: Path | None = None
    description: str = ""
    quick: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def campaign_dir(self) -> Path:
        return self.results_root / "campaigns" / self.name

    def thresholds(self) -> Thresholds:
        """The ranking metric and thresholds of ``[ranking]``."""
        return self.ranking

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (for flow parameters and the UI)."""
        return json.loads(json.dumps({"name": self.name, "results_root": str(self.results_root),
                                      "source": str(self.source), "quick": self.quick, **self.raw}, default=str))


def _file_digest(spec: str) -> str | None:
    p = Path(spec)
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return None


def n_alpha_frames(md: MDSettings) -> int:
    """α samples a production run yields: every ``alpha_stride``-th of its stored frames."""
    n_stored = md.steps // md.write_every + 1
    return len(range(0, n_stored, md.alpha_stride))


class _Checker:
    def __init__(self, file: Path | str | None) -> None:
        self.file = file

    def fail(self, field: str | None, message: str, fix: str | None = None) -> InputError:
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
        names = {int: "an integer", float: "a number", str: "a string", list: "a list"}
        want = "a number" if set(kinds) == {int, float} else " or ".join(names.get(k, k.__name__) for k in kinds)
        if isinstance(value, bool) or not isinstance(value, kinds):
            got = "a boolean" if isinstance(value, bool) else f"{type(value).__name__} {value!r}"
            raise self.fail(field, f"expected {want}, got {got}")
        return float(value) if set(kinds) == {int, float} else value

    def section(self, cls: type, data: Any, name: str, **extra: Any) -> Any:
        """Settings ``cls`` from the TOML table ``name`` (missing: all defaults)."""
        try:
            return from_mapping(cls, {} if data is None else data, prefix=name, **extra)
        except InputError as exc:
            raise prefixed(exc, None, file=self.file) from None


def _check_material_run(ck: _Checker, f: str, label: str, md: MDSettings, campaign_parts: dict[str, Any]) -> None:
    """Cross-field checks of one material against the campaign, before any MD: enough stored
    frames for the reference snapshots and the transport analysis, and an α sampling that can
    give the spectral windows."""
    mlff: MLFFSettings = campaign_parts["mlff"]
    if mlff.distil:
        if md.ensemble not in ("nvt-nhc", "npt"):
            raise ck.fail(f"{f}.ensemble" if f != "md" else "md.ensemble",
                          f"{label}: distilled potentials run in LAMMPS, which runs nvt-nhc or npt, not {md.ensemble!r}",
                          "use ensemble = \"nvt-nhc\" or \"npt\", or [mlff] distil = false")
        from ramanscreen.tasks.mlff import DistilSettings

        try:
            DistilSettings.for_run(mlff, md).validate()
        except InputError as exc:
            keys = {"md_steps": "mlff.teacher_steps", "equil_steps": "mlff.teacher_equil_steps",
                    "max_rounds": "mlff.refine_rounds"}
            raise ck.fail(keys.get(exc.field or "", f"mlff.{exc.field}"), f"{label}: {exc.message}", exc.fix) from None
    reference: ReferenceSettings = campaign_parts["reference"]
    spectrum: SpectrumSettings = campaign_parts["spectrum"]
    transport: TransportSettings = campaign_parts["transport"]
    n_stored = md.steps // md.write_every + 1
    if reference.n_snapshots > n_stored:
        raise ck.fail(f"{f}.steps", f"{label}: {n_stored} stored frames but reference.n_train + n_test = "
                      f"{reference.n_snapshots} snapshots", "run more steps, lower write_every, or lower n_train/n_test")
    where = {"n_frames": f"{f}.steps", "dt_fs": f"{f}.alpha_stride"}
    try:
        spectrum.check_sampling(md.alpha_dt_fs, n_alpha_frames(md))
    except InputError as exc:
        raise ck.fail(where.get(exc.field or "", f"spectrum.{exc.field}"), f"{label}: {exc.message}",
                      f"{exc.fix}: run more steps, or change the [spectrum] windows" if exc.field == "n_frames"
                      else exc.fix) from None
    try:
        transport.check_run(n_stored, md.dt_fs * md.write_every)
    except InputError as exc:
        raise ck.fail(where.get(exc.field or "", f"transport.{exc.field}"), f"{label}: {exc.message}", exc.fix) from None


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
    ck.known(quick, (*TABLES, "materials", "name", "explore"), "quick")
    over = {k: v for k, v in quick.items() if k not in ("materials", "name", "explore")}
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


def apply_quick(data: dict[str, Any], *, file: Path | str | None = None) -> dict[str, Any]:
    """The campaign document with its ``[quick]`` profile merged in (what ``--quick`` runs), or a
    one-line :class:`InputError` naming ``quick`` when there is none."""
    return _apply_quick(data, _Checker(file))


def _material_md(ck: _Checker, f: str, m: dict[str, Any], md_table: dict[str, Any], temperature_k: float,
                 mlff: MLFFSettings) -> MDSettings:
    """The complete MDSettings of one material: ``[md]`` overridden by the material's own keys."""
    own = {k: m[k] for k in MD_KEYS if k in m}
    try:
        return MDSettings(**{**md_table, **own}, temperature_k=temperature_k, calculator=mlff.calculator,
                          calculator_kwargs=dict(mlff.options))
    except InputError as exc:
        key = (exc.field or "").split(".")[0].split("[")[0]
        if key in _MLFF_FIELDS:
            raise prefixed(exc, None, file=ck.file, fields=_MLFF_FIELDS) from None
        prefix = f if key in own or key == "temperature_k" else "md"
        raise prefixed(exc, prefix, file=ck.file) from None


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
        ck.known(q, (*TABLES, "materials", "name", "explore"), "quick")
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

    parts = {sec: ck.section(cls, data.get(sec), sec) for sec, cls in SECTIONS.items()}
    mlff: MLFFSettings = parts["mlff"]
    cluster = ck.table(data.get("cluster", {}), "cluster")

    md_table = ck.table(data.get("md", {}), "md")
    ck.known(md_table, MD_KEYS, "md")
    _material_md(ck, "md", {}, md_table, MDSettings.temperature_k, mlff)  # [md] alone: errors name md.<key>

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
        ck.known(m, (*MATERIAL_KEYS, *MD_KEYS), f)
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
            # a file that lost atom rows is refused here, before anything runs (the builders are balanced)
            allow_charged = m.get("allow_charged", False)
            if not isinstance(allow_charged, bool):
                raise ck.fail(f"{f}.allow_charged", f"expected true or false, got {allow_charged!r}")
            from ramanscreen.tasks.structures import check_charge_balance, load_structure

            try:
                atoms = load_structure(path)
            except InputError as exc:
                raise ck.fail(f"{f}.structure", f"{path}: {exc.message}", exc.fix) from None
            try:
                check_charge_balance(atoms, file=path, allow_charged=allow_charged)
            except InputError as exc:
                raise ck.fail(f"{f}.structure", f"{path.name}: {exc.message}",
                              "check the file for missing atoms or wrong occupancies, or set allow_charged = true "
                              "in this material") from None
        n_atoms = m.get("n_atoms")
        if n_atoms is not None:
            n_atoms = ck.typed(n_atoms, int, f"{f}.n_atoms")
            if n_atoms < 1:
                raise ck.fail(f"{f}.n_atoms", f"must be >= 1, got {n_atoms}")
        if resolve_name(structure) is not None:  # a builder: its composition parameter and cell size
            from ramanscreen.tasks.structures import check_structure_spec

            try:
                check_structure_spec(structure, n_atoms)
            except InputError as exc:
                raise ck.fail(f"{f}.n_atoms" if exc.field == "n_atoms" else f"{f}.structure", exc.message,
                              exc.fix) from None
        if ("temperature_k" in m) == ("temperatures_k" in m):
            raise ck.fail(f"{f}.temperature_k", "give exactly one of temperature_k or temperatures_k")
        if "temperature_k" in m:
            temps = [(m["temperature_k"], None)]
        else:
            raw_t = ck.typed(m["temperatures_k"], list, f"{f}.temperatures_k")
            if not raw_t:
                raise ck.fail(f"{f}.temperatures_k", "empty list")
            temps = [(t, j) for j, t in enumerate(raw_t)]
        mobile = ck.typed(m["mobile"], list, f"{f}.mobile")
        if not mobile:
            raise ck.fail(f"{f}.mobile", "empty list", 'name the mobile species, e.g. ["Na"]')
        for j, s in enumerate(mobile):
            ck.typed(s, str, f"{f}.mobile[{j}]")
        label = ck.typed(m.get("label", ""), str, f"{f}.label")
        for t, j in temps:
            try:
                md = _material_md(ck, f, m, md_table, t, mlff)
            except InputError as exc:
                if j is not None and exc.field == f"{f}.temperature_k":
                    raise ck.fail(f"{f}.temperatures_k[{j}]", exc.message, exc.fix) from None
                raise
            full = mname if len(temps) == 1 else f"{mname}-{md.temperature_k:g}K"
            _check_material_run(ck, f, full, md, parts)
            if full in seen:
                raise ck.fail(f"{f}.name", f"duplicate material {full!r}", "give each material a unique name")
            seen.add(full)
            materials.append(Material(name=full, structure=structure, n_atoms=n_atoms, temperature_k=md.temperature_k,
                                      mobile=tuple(mobile), md=md, label=label or mname))

    from ramanscreen.flows.cluster import ClusterSettings

    ClusterSettings.from_dict(cluster, file=file)
    raw = {k: v for k, v in data.items() if k not in ("quick", "explore")}
    return Campaign(name=name, results_root=results_root, materials=tuple(materials), mlff=mlff,
                    reference=parts["reference"], model=parts["model"], prediction=parts["prediction"],
                    spectrum=parts["spectrum"], transport=parts["transport"], ranking=parts["ranking"],
                    cluster=cluster, source=Path(file).resolve() if file else None, description=description,
                    quick=quick, raw=raw)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed TOML of a campaign file, or a one-line :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such campaign file", file=path, fix="give a path like deployments/campaigns/default.toml")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", file=path, fix="check the syntax at that line") from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", file=path) from None


def load_campaign(path: str | os.PathLike[str], *, quick: bool = False) -> Campaign:
    """Read and validate a campaign TOML file (with ``quick``: its ``[quick]`` profile applied)."""
    return parse_campaign(read_toml(path), file=Path(path), quick=quick)


def validate_campaign(path: str | os.PathLike[str]) -> list[Campaign]:
    """Fully validate a campaign file and its ``[quick]`` profile, if it has one, without
    starting anything. Returns the campaign(s); raises :class:`InputError` on the first problem."""
    data = read_toml(path)
    out = [parse_campaign(data, file=Path(path))]
    if "quick" in data:
        out.append(parse_campaign(data, file=Path(path), quick=True))
    return out


def settings_reference_markdown() -> str:
    """The key reference of docs/campaign.md, generated from the settings dataclasses (the test
    suite checks the page holds exactly this, so the documentation follows the code)."""
    from ramanscreen.tasks.polarizability import SOAPHypers
    from ramanscreen.tasks.schema import describe

    def shown(v: Any) -> str:
        if isinstance(v, tuple):
            return "[" + ", ".join(f"{x:g}" for x in v) + "]"
        if isinstance(v, float):
            return f"{v:g}"
        if v is None:
            return "none"
        if isinstance(v, dict):
            return "{}"
        if dataclasses.is_dataclass(v):
            return "(table below)"
        return f'"{v}"' if isinstance(v, str) else str(v)

    sections = [("mlff", MLFFSettings), ("md", MDSettings), ("reference", ReferenceSettings),
                ("model", ModelSettings), ("model.hypers", SOAPHypers), ("prediction", PredictionSettings),
                ("spectrum", SpectrumSettings), ("transport", TransportSettings), ("ranking", Thresholds)]
    out = []
    for name, cls in sections:
        out += [f"**[{name}]** — `{cls.__module__}.{cls.__name__}`", "", "| key | default | unit | meaning |",
                "|---|---|---|---|"]
        out += [f"| `{d['key']}` | {shown(d['default'])} | {d['unit'] or ''} | {d['doc']} |" for d in describe(cls)]
        out.append("")
    return "\n".join(out)
