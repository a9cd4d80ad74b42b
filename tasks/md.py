"""Molecular dynamics with ASE and an ML force field, with checkpoints that survive a crash.

* Ensembles: ``"nvt-nhc"`` (ASE's :class:`~ase.md.nose_hoover_chain.NoseHooverChainNVT`, the
  paper's Nosé-Hoover thermostat), ``"langevin"`` and ``"npt"`` (isotropic MTK barostat with
  Nosé-Hoover chains, :class:`~ase.md.nose_hoover_chain.IsotropicMTKNPT`).
* Start: Maxwell-Boltzmann velocities from ``seed``, total momentum zeroed (``Stationary``), so
  the centre of mass stays put. Then ``equil_steps`` of equilibration and ``steps`` of
  production.
* Output in ``workdir``: ``md.traj`` (ASE trajectory: positions, velocities, cell every
  ``write_every`` production steps; each frame has ``info["time_fs"]``, ``info["md_step"]``,
  ``info["epot_eV"]`` and ``info["temperature_k"]``) and the sidecar ``md.json`` (run metadata).
  While running, frames go to ``md.traj.part`` and the state to ``md.ckpt.npz``; ``md.traj``
  appears only when the run is complete.
* Resume: calling :func:`run_md` again on the same ``workdir`` continues from the last
  checkpoint. Frames written after that checkpoint are dropped and recomputed, so the final
  trajectory has no gap and no duplicate. The integrator state (thermostat/barostat variables,
  Langevin RNG) is checkpointed too, so a resumed run reproduces an uninterrupted one.
* Calculators: :func:`get_calculator` (``"chgnet"``, ``"sevenn"``, ``"ase:module:Class"``).

>>> from ase.build import bulk
>>> import tempfile
>>> atoms = bulk("Cu", cubic=True).repeat(2)
>>> s = MDSettings(temperature_k=300, dt_fs=2.0, steps=20, write_every=5, checkpoint_every=10,
...                calculator="ase:ase.calculators.emt:EMT")
>>> res = run_md(atoms, s, tempfile.mkdtemp())
>>> res.metadata["n_frames"], res.traj_path.name, res.metadata["alpha_dt_fs"]
(5, 'md.traj', 100.0)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import io
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from ramanscreen.tasks.common import InputError, atomic_path, atomic_write, save_figure
from ramanscreen.tasks.schema import check, setting

#: ``progress(step, total, ps_per_day)``: called during a run (step counts equilibration too).
ProgressCallback = Callable[[int, int, float], None]

ENSEMBLES = ("nvt-nhc", "langevin", "npt")
#: ``npt_equilibration`` modes.
NPT_MODES = ("auto", "on", "off")
#: ``npt_equilibration = "auto"`` turns the NPT equilibration on above this temperature (K): the
#: high-temperature phases (γ-Na3PS4 at 900 K), whose density differs from the built cell's.
NPT_AUTO_T_K = 600.0
#: The NVT production cell is the mean cell over this last fraction of the NPT equilibration.
NPT_AVERAGE_FRACTION = 0.5
#: Overlapping atoms: any pair closer than this (Å) is an input error.
MIN_PAIR_DISTANCE_A = 0.5
#: A time step above ``DT_WARN_FS_PER_SQRT_AMU * sqrt(lightest mass / amu)`` gets a warning
#: (H: 1.0 fs, Li: 2.6 fs, Na: 4.8 fs, Ag: 10.4 fs -- the paper's 10 fs for AgI passes).
DT_WARN_FS_PER_SQRT_AMU = 1.0
SCHEMA = "ramanscreen.md/1"


# ============================================================================================
# settings
# ============================================================================================
#: The MLFF a run uses unless told otherwise (CHGNet: its weights ship in the wheel).
DEFAULT_CALCULATOR = "chgnet"


@dataclass(frozen=True)
class MLFFSettings:
    """The force field (the campaign's ``[mlff]``): a registry name or ``ase:module:Class`` and
    its keyword options.

    >>> MLFFSettings().calculator
    'chgnet'
    """

    calculator: str = setting(DEFAULT_CALCULATOR, doc="MLFF: chgnet, sevenn or ase:module:Class (with distil: the "
                              "teacher)")
    options: Mapping[str, Any] = setting(default_factory=dict, doc="keyword options of the calculator")
    distil: bool = setting(False, doc="distil a SNAP from the calculator per material and run production MD with "
                           "it in LAMMPS (labelled not DFT); false: MD with the calculator itself")
    refuse_flagged: bool = setting(False, doc="with distil: stop a material whose potential is flagged (held-out "
                                   "force RMSE above tasks.mlff.FORCE_RMSE_LIMIT_EV_A) before its production MD")
    teacher_steps: int | None = setting(None, doc="with distil: teacher MD steps of the training data (none: "
                                        "TrainingSettings.md_steps)", ge=4)
    teacher_equil_steps: int | None = setting(None, doc="with distil: teacher equilibration steps (none: "
                                              "TrainingSettings.equil_steps)", ge=0)
    refine_rounds: int | None = setting(None, doc="with distil: on-the-fly refinement rounds during production "
                                        "(none: RefineSettings.max_rounds; 0: off)", ge=0)
    compare_dynamics: bool = setting(True, doc="with distil: validate D and VDOS of a distilled run against the "
                                     "teacher run (same cell, start, T and length)")

    def __post_init__(self) -> None:
        check(self)
        if not self.calculator.strip():
            raise InputError("calculator must be a name", field="calculator", fix="chgnet, sevenn or ase:module:Class")
        spec = self.calculator.strip()
        if spec.startswith("ase:") and len(spec.split(":")) == 3:
            _, module_name, class_name = spec.split(":")
            trusted_ase_class(module_name, class_name, spec)  # refused on load, not when MD starts
            refuse_command_options(self.options)

    @property
    def md_label(self) -> str:
        """What drove the MD, as every table labels it: the calculator, or the distilled SNAP.

        >>> MLFFSettings(distil=True).md_label
        'snap-distilled-from-chgnet (not DFT)'
        """
        if self.distil:
            from ramanscreen.tasks.mlff.data import teacher_name
            from ramanscreen.tasks.mlff.snap import method_label

            return method_label(teacher_name(self.calculator))
        return self.calculator


@dataclass(frozen=True)
class MDSettings:
    """What to run (the campaign's ``[md]`` and per-material keys). Units are in the names; all
    times in fs, temperatures in K. Checked on construction.

    ``steps`` counts production steps; frames are stored at production steps 0, k, 2k, …
    (k = ``write_every``), so a run stores ``steps // write_every + 1`` frames.
    ``alpha_stride``: α is predicted on every ``alpha_stride``-th stored frame (the paper: every
    10th MD frame); it is recorded with the run for the polarizability stage.

    >>> MDSettings(temperature_k=500, dt_fs=10).alpha_dt_fs
    100.0
    >>> MDSettings(temperature_k=-1)
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: temperature_k: must be > 0 K, got -1 (fix: MD temperature, a value > 0 K)
    """

    temperature_k: float = setting(300.0, doc="MD temperature", unit="K", gt=0, toml=False)
    dt_fs: float = setting(2.0, doc="MD time step (10 fs only for heavy atoms like AgI)", unit="fs", gt=0)
    steps: int = setting(1000, doc="production steps", ge=1)
    equil_steps: int = setting(0, doc="equilibration steps before production (not stored)", ge=0)
    ensemble: str = setting("nvt-nhc", doc="nvt-nhc (Nosé–Hoover chain, the paper), langevin or npt (MTK barostat)",
                            choices=ENSEMBLES)
    pressure_gpa: float = setting(0.0, doc="pressure of npt runs", unit="GPa")
    write_every: int = setting(1, doc="store every n-th production step in the trajectory", ge=1)
    alpha_stride: int = setting(10, doc="predict α on every n-th stored frame (the paper: every 10th MD step)", ge=1)
    checkpoint_every: int = setting(100, doc="checkpoint every n steps (a killed run resumes there)", ge=1)
    seed: int = setting(0, doc="seed of the initial velocities, disorder and Langevin noise")
    calculator: str = setting(DEFAULT_CALCULATOR, doc="MLFF: chgnet, sevenn or ase:module:Class", toml=False)
    calculator_kwargs: Mapping[str, Any] = setting(default_factory=dict, doc="keyword options of the calculator",
                                                   toml=False)
    num_threads: int | None = setting(None, doc="torch/BLAS threads of one MD run (none: the num_threads "
                                      "setting of ramanscreen.tasks.settings)", ge=1)
    tdamp_fs: float | None = setting(None, doc="Nosé–Hoover damping time (none: 100 × dt_fs)", unit="fs", gt=0)
    pdamp_fs: float | None = setting(None, doc="barostat damping time of npt runs (none: 1000 × dt_fs)", unit="fs",
                                     gt=0)
    friction_per_fs: float = setting(0.01, doc="Langevin friction", unit="1/fs", gt=0)
    npt_equilibration: str = setting("auto", doc="NPT at T and pressure_gpa before NVT production at the mean "
                                     "equilibrated cell: on, off, or auto (on above NPT_AUTO_T_K or at P ≠ 0)",
                                     choices=NPT_MODES)
    npt_steps: int = setting(2500, doc="steps of that NPT equilibration (its cell is averaged over the last "
                             "NPT_AVERAGE_FRACTION)", ge=10)
    store_labels: bool = setting(False, doc="store the calculator's energy (eV), forces (eV/Å) and, when the "
                                 "integrator computed it (NPT), stress with every stored frame, so a teacher "
                                 "MD's frames are training labels without a second evaluation", toml=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def npt_first(self) -> bool:
        """Whether this run equilibrates in NPT first, then runs NVT at the mean cell.

        >>> MDSettings(temperature_k=900).npt_first, MDSettings(temperature_k=300).npt_first
        (True, False)
        >>> MDSettings(temperature_k=300, pressure_gpa=1.0).npt_first
        True
        """
        if self.ensemble == "npt" or self.npt_equilibration == "off":
            return False
        return self.npt_equilibration == "on" or self.temperature_k > NPT_AUTO_T_K or self.pressure_gpa != 0.0

    @property
    def controls_pressure(self) -> bool:
        """The run (or its equilibration) holds ``pressure_gpa``: what the results record as P."""
        return self.ensemble == "npt" or self.npt_first

    @property
    def alpha_dt_fs(self) -> float:
        """Time between α samples (fs)."""
        return float(self.dt_fs * self.write_every * self.alpha_stride)

    @property
    def total_steps(self) -> int:
        return self.equil_steps + self.steps

    def validate(self) -> None:
        """Raise :class:`InputError` (naming the field) for settings that cannot run."""
        check(self)
        for name in ("temperature_k", "dt_fs", "pressure_gpa", "friction_per_fs", "tdamp_fs", "pdamp_fs"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InputError(f"must be finite, got {value!r}", field=name)
        if not self.calculator.strip():
            raise InputError("calculator must be a name", field="calculator", fix="chgnet, sevenn or ase:module:Class")

    def fingerprint(self) -> str:
        """Hash of everything that changes the trajectory (not threads or checkpoint interval)."""
        d = dataclasses.asdict(self)
        for k in ("num_threads", "checkpoint_every"):
            d.pop(k)
        if not d["store_labels"]:  # the runs written before the key existed keep their fingerprint
            d.pop("store_labels")
        d["calculator_kwargs"] = dict(self.calculator_kwargs)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["calculator_kwargs"] = dict(self.calculator_kwargs)
        return d


def check_time_step(atoms: Atoms, dt_fs: float) -> str | None:
    """A warning text if ``dt_fs`` is large for the lightest element in ``atoms``, else None.

    >>> from ase import Atoms
    >>> check_time_step(Atoms("AgI"), 10.0) is None
    True
    >>> print(check_time_step(Atoms("LiH"), 5.0))
    time step 5 fs is large for H (mass 1.008 amu); above ~1 fs the integration may be unstable
    """
    masses = atoms.get_masses()
    i = int(np.argmin(masses))
    limit = DT_WARN_FS_PER_SQRT_AMU * math.sqrt(masses[i])
    if dt_fs > limit:
        return (f"time step {dt_fs:g} fs is large for {atoms[i].symbol} (mass {masses[i]:.4g} amu); "
                f"above ~{limit:.2g} fs the integration may be unstable")
    return None


def check_overlaps(atoms: Atoms, min_distance_A: float = MIN_PAIR_DISTANCE_A, *, file: Any = None) -> None:
    """Raise :class:`InputError` if two atoms are closer than ``min_distance_A`` (periodic).

    >>> from ase import Atoms
    >>> check_overlaps(Atoms("Na2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[5, 5, 5], pbc=True))
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: structure: atoms 0 (Na) and 1 (Na) are 0.3 Å apart, below 0.5 Å (fix: check the structure file; overlapping atoms)
    """
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, min_distance_A)
    if len(d):
        k = int(np.argmin(d))
        a, b = sorted((int(i[k]), int(j[k])))
        raise InputError(
            f"atoms {a} ({atoms[a].symbol}) and {b} ({atoms[b].symbol}) are {d[k]:.3g} Å apart, "
            f"below {min_distance_A:g} Å",
            file=file, field="structure", fix="check the structure file; overlapping atoms",
        )


# ============================================================================================
# calculators
# ============================================================================================
def set_num_threads(n: int | None) -> int:
    """Set torch's intra-op threads (and the BLAS env for child processes); returns n used."""
    if n is None:
        from ramanscreen.tasks.settings import get_settings

        n = get_settings().num_threads
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch
    except ImportError:  # analysis-only installs have no torch
        return n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _chgnet_calculator(*, properties: Iterable[str] = ("energy", "forces"), model: str | None = None,
                       **kwargs: Any) -> Calculator:
    """CHGNet with the weights bundled in the wheel; only the requested properties are computed
    (``task="ef"`` in NVT: no stress, no magmoms)."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    props = set(properties)
    task = "e" + ("f" if "forces" in props else "") + ("s" if "stress" in props else "") + (
        "m" if "magmoms" in props else "")

    class _CHGNet(CHGNetCalculator):
        def calculate(self, atoms=None, properties=None, system_changes=None, task=task):
            wanted = set(properties or ())
            run_task = task
            if wanted - {"energy", "free_energy", "forces", "stress", "magmoms"} or (
                    "stress" in wanted and "s" not in task) or ("magmoms" in wanted and "m" not in task):
                run_task = "efsm"
            super().calculate(atoms, properties, system_changes, task=run_task)

    with contextlib.redirect_stdout(io.StringIO()):
        net = CHGNet.load(model_name=model or "0.3.0", verbose=False, use_device="cpu")
        calc = _CHGNet(model=net, use_device="cpu", **kwargs)
    return tag_calculator(calc, {"model": f"CHGNet {net.version}", "model_version": str(net.version),
                                 "package": "chgnet", "task": task,
                                 "elements_max_z": int(net.atom_embedding.embedding.num_embeddings)})


def tag_calculator(calc: Calculator, info: Mapping[str, Any]) -> Calculator:
    """Attach ``ramanscreen_info`` (model name, version, package, covered elements) to ``calc``;
    the run metadata and :func:`check_elements` read it."""
    vars(calc)["ramanscreen_info"] = dict(info)
    return calc


def _sevenn_calculator(*, properties: Iterable[str] = ("energy", "forces"), model: str = "7net-0",
                       **kwargs: Any) -> Calculator:
    """SevenNet-0 (bundled in the sevenn wheel)."""
    del properties
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = SevenNetCalculator(model=model, device="cpu", **kwargs)
    version = str(getattr(calc, "sevennet_config", {}).get("version", "?"))
    tag_calculator(calc, {"model": f"SevenNet {model}", "model_version": f"{model} (sevenn {version} checkpoint)",
                          "package": "sevenn", "elements_z": sorted(int(z) for z in getattr(calc, "type_map", {}))})
    return calc


#: Registered MLFFs: name -> factory(properties=..., **kwargs).
CALCULATORS: dict[str, Callable[..., Calculator]] = {"chgnet": _chgnet_calculator, "sevenn": _sevenn_calculator}


#: Entry-point group through which an installed package adds calculators to the registry
#: (``[project.entry-points."ramanscreen.calculators"] name = "pkg.module:factory"``).
CALCULATOR_ENTRY_POINTS = "ramanscreen.calculators"

#: Calculator keywords that name a program to run: refused for ``ase:`` specs, which come from
#: campaign files and deployment parameters (docs/security.md).
_COMMAND_KWARGS = frozenset({"command", "profile", "executable", "exe", "launcher"})


def refuse_command_options(options: Mapping[str, Any], field: str = "options") -> None:
    """Refuse calculator keywords that name a program to run (``command=...`` of an ASE
    file-based calculator): campaign files and deployment parameters must not run new code.

    >>> refuse_command_options({"command": "rm -rf ~"})
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: options: calculator keyword 'command' would name a program to run (fix: ...)
    """
    named = sorted(_COMMAND_KWARGS & {str(k).lower() for k in options})
    if named:
        raise InputError(f"calculator keyword {named[0]!r} would name a program to run", field=field,
                         fix="set the program in the calculator's own configuration (ASE_*_COMMAND, "
                             "~/.config/ase/config.ini), not in campaign or command-line keywords")


def calculator_registry() -> dict[str, Callable[..., Calculator]]:
    """The trusted calculators: the built-ins plus those installed packages declare under the
    :data:`CALCULATOR_ENTRY_POINTS` entry-point group (a built-in name is never replaced).

    >>> sorted(calculator_registry())[:2]
    ['chgnet', 'sevenn']
    """
    from importlib.metadata import entry_points

    registry = dict(CALCULATORS)
    for ep in entry_points(group=CALCULATOR_ENTRY_POINTS):
        key = ep.name.lower()
        if key not in registry:
            registry[key] = functools.partial(_load_entry_point, ep)
    return registry


def _load_entry_point(ep: Any, **kwargs: Any) -> Calculator:
    """Load a declared calculator factory only when it is used, and call it."""
    return ep.load()(**kwargs)


def trusted_ase_class(module_name: str, class_name: str, spec: str) -> type:
    """The class an ``ase:module:Class`` spec names, if it is an ASE calculator
    (a subclass of ``ase.calculators.calculator.BaseCalculator``); anything else — a function
    such as ``os:system``, a module attribute that is not a class — is refused before it is
    called.

    >>> trusted_ase_class("ase.calculators.emt", "EMT", "ase:ase.calculators.emt:EMT").__name__
    'EMT'
    >>> trusted_ase_class("os", "system", "ase:os:system")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: calculator: 'ase:os:system' does not name an ASE calculator (os.system is not a subclass of ase.calculators.calculator.BaseCalculator) (fix: ...)
    """
    from ase.calculators.calculator import BaseCalculator

    fix = ("name an ASE calculator class, e.g. ase:ase.calculators.emt:EMT, or a registered calculator "
           f"({', '.join(calculator_registry())})")
    if not all(part.isidentifier() for part in (*module_name.split("."), class_name)):
        raise InputError(f"bad calculator spec {spec!r}", field="calculator", fix=fix)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"calculator {spec!r} could not load offline: {type(exc).__name__}: {exc}",
                         field="calculator", fix="install the package that provides it, or " + fix) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseCalculator)):
        raise InputError(f"{spec!r} does not name an ASE calculator ({module_name}.{class_name} is not a subclass "
                         "of ase.calculators.calculator.BaseCalculator)", field="calculator", fix=fix)
    return cls


def get_calculator(spec: str = "chgnet", *, properties: Iterable[str] = ("energy", "forces"),
                   num_threads: int | None = None, **kwargs: Any) -> Calculator:
    """An ASE calculator from a registry name or ``ase:module:Class`` (``kwargs`` go to it).

    The calculator gets ``calc.ramanscreen_info`` (model name/version) for the run metadata.
    Anything that fails to load (e.g. weights that would need a download) raises
    :class:`InputError`: ramanscreen never downloads at run time.

    >>> calc = get_calculator("ase:ase.calculators.emt:EMT")
    >>> calc.ramanscreen_info["model"]
    'ase.calculators.emt:EMT'
    >>> get_calculator("nope")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: calculator: unknown calculator 'nope' (fix: use chgnet, sevenn or ase:module:Class)
    """
    set_num_threads(num_threads)
    name = spec.strip()
    registry = calculator_registry()
    try:
        if name.lower() in registry:
            calc = registry[name.lower()](properties=properties, **kwargs)
        elif name.startswith("ase:"):
            parts = name.split(":")
            if len(parts) != 3 or not all(parts[1:]):
                raise InputError(f"bad calculator spec {spec!r}", field="calculator",
                                 fix="write ase:module:Class, e.g. ase:ase.calculators.emt:EMT")
            cls = trusted_ase_class(parts[1], parts[2], spec)
            refuse_command_options(kwargs)
            calc = cls(**kwargs)
            module = importlib.import_module(parts[1])
            version = getattr(module, "__version__", None) or _package_version(parts[1].split(".")[0])
            tag_calculator(calc, {"model": f"{parts[1]}:{parts[2]}", "model_version": version,
                                  "package": parts[1].split(".")[0]})
        else:
            raise InputError(f"unknown calculator {spec!r}", field="calculator",
                             fix=f"use {', '.join(registry)} or ase:module:Class")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything that stops the model loading offline
        text = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise InputError(f"calculator {spec!r} could not load offline: {type(exc).__name__}: {text}",
                         field="calculator",
                         fix="install the model package with its bundled weights (pip install '.[md]') "
                             "or point the calculator at a local model file") from None
    return calc


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_elements(atoms: Atoms, calc: Calculator, spec: str) -> None:
    """Raise :class:`InputError` if the calculator's model does not cover every element."""
    info = getattr(calc, "ramanscreen_info", {})
    z = set(int(x) for x in atoms.numbers)
    from ase.data import chemical_symbols

    missing: set[int] = set()
    if "elements_max_z" in info:
        missing = {x for x in z if x > info["elements_max_z"]}
    elif info.get("elements_z"):
        missing = z - set(info["elements_z"])
    if missing:
        names = ", ".join(chemical_symbols[x] for x in sorted(missing))
        raise InputError(f"{info.get('model', spec)} does not cover {names}", field="calculator",
                         fix="choose another calculator (e.g. ase:module:Class with a model for these elements)")


def _first_forces(atoms: Atoms, calc: Calculator, spec: str) -> None:
    """One force call before anything is written: catches elements or cells the model rejects."""
    probe = atoms.copy()
    probe.calc = calc
    try:
        forces = probe.get_forces()
    except Exception as exc:  # noqa: BLE001 - a model that cannot evaluate this structure
        text = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise InputError(f"calculator {spec!r} cannot evaluate this structure: {type(exc).__name__}: {text}",
                         field="calculator", fix="check that the model covers every element") from None
    if not np.isfinite(forces).all():
        raise InputError(f"calculator {spec!r} returned non-finite forces for the structure",
                         field="structure", fix="check the structure (overlapping atoms?) and the model")


# ============================================================================================
# dynamics
# ============================================================================================
def _make_dynamics(atoms: Atoms, s: MDSettings, rng: np.random.Generator):
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT

    dt = s.dt_fs * units.fs
    tdamp = (s.tdamp_fs if s.tdamp_fs is not None else 100 * s.dt_fs) * units.fs
    if s.ensemble == "nvt-nhc":
        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=s.temperature_k, tdamp=tdamp)
    if s.ensemble == "langevin":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return Langevin(atoms, timestep=dt, temperature_K=s.temperature_k,
                            friction=s.friction_per_fs / units.fs, fixcm=True, rng=rng)
    pdamp = (s.pdamp_fs if s.pdamp_fs is not None else 1000 * s.dt_fs) * units.fs
    return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=s.temperature_k,
                           pressure_au=s.pressure_gpa * units.GPa, tdamp=tdamp, pdamp=pdamp)


def _owners(dyn) -> dict[str, Any]:
    out = {"dyn": dyn}
    for name in ("_thermostat", "_barostat"):
        if getattr(dyn, name, None) is not None:
            out[name.strip("_")] = getattr(dyn, name)
    return out


def _integrator_state(dyn) -> dict[str, np.ndarray]:
    """Every numeric private variable of the integrator and its thermostat/barostat."""
    state = {}
    for owner_name, owner in _owners(dyn).items():
        for key, value in vars(owner).items():
            if key.startswith("_") and not isinstance(value, bool) and isinstance(
                    value, (np.ndarray, float, int, np.floating, np.integer)):
                state[f"state:{owner_name}:{key}"] = np.array(value)
    return state


def _restore_integrator(dyn, arrays: Mapping[str, np.ndarray]) -> None:
    owners = _owners(dyn)
    for key, value in arrays.items():
        if not key.startswith("state:"):
            continue
        _, owner_name, attr = key.split(":", 2)
        owner = owners[owner_name]
        old = getattr(owner, attr)
        setattr(owner, attr, value.copy() if isinstance(old, np.ndarray) else type(old)(value))
    if hasattr(dyn, "_update_atoms"):
        dyn._update_atoms()


@dataclass
class MDResult:
    """Where a finished run put its output, and its metadata (also in ``metadata_path``)."""

    traj_path: Path
    metadata_path: Path
    metadata: dict[str, Any]

    def trajectory(self):
        """The run as a :class:`ramanscreen.tasks.trajectory.Trajectory`."""
        from ramanscreen.tasks.trajectory import Trajectory

        return Trajectory.from_file(self.traj_path)


@dataclass
class _Paths:
    workdir: Path
    name: str = "md"

    @property
    def traj(self) -> Path:
        return self.workdir / f"{self.name}.traj"

    @property
    def part(self) -> Path:
        return self.workdir / f"{self.name}.traj.part"

    @property
    def meta(self) -> Path:
        return self.workdir / f"{self.name}.json"

    @property
    def ckpt(self) -> Path:
        return self.workdir / f"{self.name}.ckpt.npz"

    @property
    def state(self) -> Path:
        return self.workdir / f"{self.name}.state.json"


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _save_checkpoint(paths: _Paths, atoms: Atoms, dyn, step: int, meta: Mapping[str, Any],
                     rng: np.random.Generator) -> None:
    arrays = {
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "cell": atoms.cell.array.copy(),
        "numbers": atoms.numbers.copy(),
        "masses": atoms.get_masses(),
        **_integrator_state(dyn),
    }
    meta = {**meta, "step": step, "rng_state": rng.bit_generator.state, "saved_utc": _now()}
    with atomic_write(paths.ckpt, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta, default=_json_default)), **arrays)


def _load_checkpoint(paths: _Paths) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(paths.ckpt) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint
        raise InputError(f"checkpoint is unreadable ({type(exc).__name__})", file=paths.ckpt,
                         fix="delete the run directory, or restart the run from scratch") from None
    return arrays, meta


def _frame_steps(s: MDSettings, upto_step: int) -> np.ndarray:
    """Production md_step of every frame written once the run has done ``upto_step`` steps."""
    last = upto_step - s.equil_steps
    if last < 0:
        return np.zeros(0, dtype=int)
    return np.arange(0, last + 1, s.write_every)


def _truncate_part(paths: _Paths, s: MDSettings, step: int) -> int:
    """Keep exactly the frames a run that stopped at ``step`` has written; returns their count."""
    from ase.io.trajectory import Trajectory as AseTrajectory

    expected = _frame_steps(s, step)
    if not paths.part.exists():
        if len(expected):
            raise InputError("checkpoint has frames but the partial trajectory is missing", file=paths.part,
                             fix="restart the run from scratch")
        return 0
    n_keep = len(expected)
    with AseTrajectory(str(paths.part), "r") as tr:
        n_have = len(tr)
        # frames are appended in order, so checking both ends of the kept block is enough
        ok = n_have >= n_keep and (n_keep == 0 or (tr[0].info.get("md_step") == 0
                                                   and tr[n_keep - 1].info.get("md_step") == expected[-1]))
        if not ok:
            raise InputError(
                f"partial trajectory holds {n_have} frames but the checkpoint at step {step} expects "
                f"at least {n_keep}", file=paths.part, fix="restart the run from scratch")
        if n_have > n_keep:  # drop frames written after the checkpoint, streaming
            with atomic_path(paths.part) as tmp, AseTrajectory(str(tmp), "w") as out:
                for k in range(n_keep):
                    out.write(tr[k])
    return n_keep


def _snapshot(atoms: Atoms, md_step: int, dt_fs: float, epot: float | None,
              labels_from: Calculator | None = None) -> Atoms:
    """The stored frame. ``labels_from``: the run's calculator, whose energy, forces (and stress)
    are attached when they belong to exactly these positions and cell (never a stale result)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    snap = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc,
                 momenta=atoms.get_momenta(), masses=atoms.get_masses())
    snap.info = {"md_step": int(md_step), "time_fs": float(md_step * dt_fs),
                 "temperature_k": float(atoms.get_temperature())}
    if epot is not None:
        snap.info["epot_eV"] = float(epot)
    if labels_from is not None and labels_from.atoms is not None and not labels_from.check_state(atoms):
        res = labels_from.results
        if "energy" in res and "forces" in res:
            keep = {k: np.array(res[k], float) for k in ("forces", "stress") if k in res}
            snap.calc = SinglePointCalculator(snap, energy=float(res["energy"]), **keep)
    return snap


def _clean_partial(paths: _Paths) -> None:
    for p in (paths.part, paths.ckpt, paths.state):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


class _TimedCalculator:
    """Counts the time and the calls spent inside a calculator's ``calculate`` (this session),
    so the run metadata can tell model time from integrator overhead."""

    def __init__(self, calc: Calculator) -> None:
        self.calc = calc
        self.seconds = 0.0
        self.calls = 0
        self._original = calc.calculate

    def __enter__(self) -> _TimedCalculator:
        original = self._original

        def timed(*args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            try:
                original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        self.calc.calculate = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.calc.calculate = self._original  # type: ignore[method-assign]


@dataclass
class _RunState:
    """What a run has done so far; checkpointed, so a resumed run continues its accounting."""

    step: int = 0
    n_frames: int = 0
    wall_time_s: float = 0.0
    calc_time_s: float = 0.0
    n_resumes: int = 0
    t_sum: float = 0.0
    t_sq: float = 0.0
    t_n: int = 0
    started_utc: str = field(default_factory=lambda: _now())
    equil_t_mean_k: float | None = None

    #: Keys carried over from a checkpoint (``step`` and ``n_frames`` are re-derived).
    CARRIED = ("wall_time_s", "calc_time_s", "n_resumes", "t_sum", "t_sq", "t_n", "started_utc", "equil_t_mean_k")

    def checkpoint_meta(self, fingerprint: str, session_wall_s: float, session_calc_s: float) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.CARRIED}, "fingerprint": fingerprint, "n_frames": self.n_frames,
                "wall_time_s": self.wall_time_s + session_wall_s, "calc_time_s": self.calc_time_s + session_calc_s}

    def temperature_stats(self) -> tuple[float, float]:
        n = max(self.t_n, 1)
        mean = self.t_sum / n
        return mean, math.sqrt(max(self.t_sq / n - mean**2, 0.0))


# ---- 1. the calculator


def _prepare_calculator(atoms: Atoms, settings: MDSettings, calculator: Calculator | None) -> tuple[Calculator, int]:
    """The run's calculator, checked on ``atoms`` (elements covered, finite first forces)."""
    props = ("energy", "forces", "stress") if settings.ensemble == "npt" else ("energy", "forces")
    n_threads = set_num_threads(settings.num_threads)
    calc = calculator or get_calculator(settings.calculator, properties=props, num_threads=n_threads,
                                        **dict(settings.calculator_kwargs))
    if not hasattr(calc, "ramanscreen_info"):
        tag_calculator(calc, {"model": type(calc).__name__, "model_version": None})
    check_elements(atoms, calc, settings.calculator)
    _first_forces(atoms, calc, settings.calculator)
    return calc, n_threads


# ---- 2. start or resume from the checkpoint


def _start_or_resume(atoms: Atoms, settings: MDSettings, paths: _Paths,
                     rng: np.random.Generator) -> tuple[_RunState, dict[str, np.ndarray] | None]:
    """A fresh state with Maxwell–Boltzmann velocities (total momentum zeroed), or the state,
    positions, momenta and integrator variables of the last checkpoint in ``paths``."""
    state = _RunState()
    if not paths.ckpt.exists():
        _clean_partial(paths)  # a run killed before its first checkpoint starts over
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature_k, rng=rng)
        Stationary(atoms)
        return state, None
    arrays, cmeta = _load_checkpoint(paths)
    if cmeta.get("fingerprint") != settings.fingerprint():
        raise InputError("a partial run with different settings is in this directory", file=paths.workdir,
                         fix="rerun with the same settings to resume, or restart the run from scratch")
    if not np.array_equal(arrays["numbers"], atoms.numbers):
        raise InputError("a partial run of a different structure is in this directory", file=paths.workdir,
                         fix="rerun with the same structure to resume, or restart the run from scratch")
    state.step = int(cmeta["step"])
    state.n_frames = _truncate_part(paths, settings, state.step)
    for key in _RunState.CARRIED:
        if key in cmeta:
            setattr(state, key, cmeta[key])
    state.n_resumes = int(state.n_resumes) + 1
    rng.bit_generator.state = cmeta["rng_state"]
    atoms.set_cell(arrays["cell"])
    atoms.set_masses(arrays["masses"])
    atoms.set_positions(arrays["positions"])
    atoms.set_momenta(arrays["momenta"])
    return state, arrays


# ---- 3. the integration loop


#: Seconds between two progress reports (callback and ``md.state.json``).
PROGRESS_EVERY_S = 1.0


def _integrate(atoms: Atoms, dyn: Any, settings: MDSettings, paths: _Paths, state: _RunState,
               rng: np.random.Generator, timer: _TimedCalculator, progress: ProgressCallback | None) -> None:
    """Step ``dyn`` from ``state.step`` to the end: store every ``write_every``-th production
    frame, checkpoint every ``checkpoint_every`` steps (and at the end), report progress."""
    from ase.io.trajectory import Trajectory as AseTrajectory

    total, equil, dt_fs = settings.total_steps, settings.equil_steps, settings.dt_fs
    t_start = time.perf_counter()
    steps_at_start = state.step
    last_report = -math.inf
    equil_t: list[float] = []

    def ps_per_day() -> float:
        elapsed = time.perf_counter() - t_start
        done = state.step - steps_at_start
        return done * dt_fs * 1e-3 / (elapsed / 86400.0) if elapsed > 0 and done > 0 else 0.0

    def energy() -> float | None:
        e = timer.calc.results.get("energy")
        return None if e is None else float(e)

    labels_from = timer.calc if settings.store_labels else None
    writer = AseTrajectory(str(paths.part), "a")
    try:
        if state.step == equil and state.n_frames == 0:  # no equilibration: frame 0 is the initial state
            writer.write(_snapshot(atoms, 0, dt_fs, energy(), labels_from))
            state.n_frames = 1
        while state.step < total:
            dyn.step()
            state.step += 1
            dyn.nsteps = state.step
            p = state.step - equil
            temp = float(atoms.get_temperature())
            if p >= 0:
                state.t_sum += temp
                state.t_sq += temp * temp
                state.t_n += 1
                if p % settings.write_every == 0:
                    writer.write(_snapshot(atoms, p, dt_fs, energy(), labels_from))
                    state.n_frames += 1
            else:
                equil_t.append(temp)
            if state.step == equil and equil_t:
                state.equil_t_mean_k = float(np.mean(equil_t))
            if state.step % settings.checkpoint_every == 0 or state.step == total:
                writer.backend.fd.flush()
                os.fsync(writer.backend.fd.fileno())
                meta = state.checkpoint_meta(settings.fingerprint(), time.perf_counter() - t_start, timer.seconds)
                _save_checkpoint(paths, atoms, dyn, state.step, meta, rng)
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_S or state.step == total:
                last_report = now
                rate = ps_per_day()
                _write_state(paths, "running", state.step, total, settings, ps_per_day=rate)
                if progress is not None:
                    progress(state.step, total, rate)
            if not np.isfinite(temp):
                raise InputError(f"MD blew up at step {state.step} (non-finite temperature)", field="dt_fs",
                                 fix="use a smaller time step or check the structure")
    finally:
        writer.close()
    state.wall_time_s += time.perf_counter() - t_start
    state.calc_time_s += timer.seconds


def _write_state(paths: _Paths, status: str, step: int, total: int, settings: MDSettings, *,
                 ps_per_day: float | None = None, reason: str | None = None) -> None:
    """``md.state.json``: how far the run is (read by progress displays; never needed to resume).
    ``status`` is running, failed (with ``reason``) or interrupted."""
    doc = {"status": status, "step": step, "total": total, "dt_fs": settings.dt_fs,
           "equil_steps": settings.equil_steps, "ps_per_day": ps_per_day,
           "updated_utc": _now(), "settings": settings.to_dict()}
    if reason is not None:
        doc["reason"] = reason
    _write_json(paths.state, doc)


# ---- 4. the finished run


def _finish(atoms: Atoms, settings: MDSettings, paths: _Paths, state: _RunState, calc: Calculator, n_threads: int,
            timer: _TimedCalculator, steps_at_start: int) -> MDResult:
    """Write the sidecar, then move the trajectory to its final name (the run is complete)."""
    dt_fs = settings.dt_fs
    total = settings.total_steps
    wall, calc_time = state.wall_time_s, state.calc_time_s
    t_mean, t_std = state.temperature_stats()
    info: dict[str, Any] = getattr(calc, "ramanscreen_info", {})
    meta = {
        "schema": SCHEMA,
        "traj": paths.traj.name,
        "fingerprint": settings.fingerprint(),
        "material": atoms.info.get("material"),
        "formula": atoms.get_chemical_formula(),
        "n_atoms": len(atoms),
        "calculator": settings.calculator,
        "calculator_kwargs": dict(settings.calculator_kwargs),
        "model": info.get("model"),
        "model_version": info.get("model_version"),
        "packages": {k: _package_version(k) for k in ("ase", "torch", "chgnet", "sevenn")
                     if k in ("ase", info.get("package")) or (k == "torch" and info.get("package") in ("chgnet", "sevenn"))},
        "ensemble": settings.ensemble,
        "temperature_k": settings.temperature_k,
        "pressure_gpa": settings.pressure_gpa if settings.ensemble == "npt" else None,
        "dt_fs": dt_fs,
        "steps": settings.steps,
        "equil_steps": settings.equil_steps,
        "seed": settings.seed,
        "write_every": settings.write_every,
        "frame_dt_fs": dt_fs * settings.write_every,
        "alpha_stride": settings.alpha_stride,
        "alpha_dt_fs": settings.alpha_dt_fs,
        "n_frames": state.n_frames,
        "duration_ps": settings.steps * dt_fs * 1e-3,
        "tdamp_fs": settings.tdamp_fs if settings.tdamp_fs is not None else 100 * dt_fs,
        "friction_per_fs": settings.friction_per_fs if settings.ensemble == "langevin" else None,
        "pdamp_fs": (settings.pdamp_fs or 1000 * dt_fs) if settings.ensemble == "npt" else None,
        "temperature_mean_k": t_mean,
        "temperature_std_k": t_std,
        "equil_temperature_mean_k": state.equil_t_mean_k,
        "wall_time_s": wall,
        "calc_time_s": calc_time,
        "overhead_fraction": (wall - calc_time) / calc_time if calc_time > 0 else None,
        "calc_calls_per_step": timer.calls / max(total - steps_at_start, 1),
        "ps_per_day": total * dt_fs * 1e-3 / (wall / 86400.0) if wall > 0 else None,
        "n_resumes": int(state.n_resumes),
        "num_threads": n_threads,
        "started_utc": state.started_utc,
        "finished_utc": _now(),
        "host": platform.node(),
        "settings": settings.to_dict(),
    }
    _write_json(paths.meta, meta)
    os.replace(paths.part, paths.traj)
    _write_state(paths, "complete", total, total, settings, ps_per_day=meta["ps_per_day"])
    with contextlib.suppress(FileNotFoundError):
        paths.ckpt.unlink()
    return MDResult(paths.traj, paths.meta, meta)


def run_md(
    atoms: Atoms,
    settings: MDSettings,
    workdir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    restart: bool = False,
    calculator: Calculator | None = None,
    name: str = "md",
) -> MDResult:
    """Run (or resume, or return the finished) MD of ``atoms`` in ``workdir``.

    Args:
        atoms: the starting structure (copied; its calculator is ignored).
        settings: :class:`MDSettings`.
        workdir: output directory; holds ``md.traj`` + ``md.json`` when done, and while running
            ``md.state.json`` (step, total, ps/day; updated about once a second).
        progress: optional plain callable ``progress(step, total, ps_per_day)``, called at most
            about once a second and once at the end (``step`` counts equilibration steps too).
        restart: discard a previous partial run in ``workdir`` instead of resuming it.
        calculator: an already-built ASE calculator to use instead of ``settings.calculator``
            (the spec string is still recorded).
        name: file stem of the outputs.

    The steps: the calculator (:func:`_prepare_calculator`), a fresh start or the checkpoint
    (:func:`_start_or_resume`), the integration loop (:func:`_integrate`), the sidecar and the
    final trajectory (:func:`_finish`). Bad input (temperature, time step, overlaps, elements,
    calculator) raises :class:`InputError` before anything is written.
    """
    settings.validate()
    atoms = atoms.copy()
    atoms.calc = None
    atoms.constraints = []
    if len(atoms) < 2:
        raise InputError("need at least 2 atoms for MD", field="structure")
    check_overlaps(atoms)
    warn = check_time_step(atoms, settings.dt_fs)
    if warn:
        warnings.warn(warn, stacklevel=2)
    workdir = Path(workdir)
    paths = _Paths(workdir, name)

    # ---- a finished run in this directory?
    if paths.traj.exists() and paths.meta.exists() and not restart:
        meta = json.loads(paths.meta.read_text())
        if meta.get("fingerprint") == settings.fingerprint() and meta.get("n_atoms") == len(atoms):
            if progress:
                progress(settings.total_steps, settings.total_steps, float(meta.get("ps_per_day") or 0.0))
            return MDResult(paths.traj, paths.meta, meta)
        raise InputError("directory already holds a finished run with other settings", file=workdir,
                         fix="choose another run directory, or restart the run from scratch to overwrite it")

    # ---- everything that can fail on bad input happens before the first file is written
    calc, n_threads = _prepare_calculator(atoms, settings, calculator)
    workdir.mkdir(parents=True, exist_ok=True)
    if restart:
        _clean_partial(paths)
        for p in (paths.traj, paths.meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    rng = np.random.default_rng(settings.seed)
    state, resumed_arrays = _start_or_resume(atoms, settings, paths, rng)
    steps_at_start = state.step
    _write_state(paths, "running", state.step, settings.total_steps, settings)

    atoms.calc = calc
    with _TimedCalculator(calc) as timer:
        dyn = _make_dynamics(atoms, settings, rng)
        if resumed_arrays is not None:
            _restore_integrator(dyn, resumed_arrays)
        try:
            _integrate(atoms, dyn, settings, paths, state, rng, timer, progress)
        except BaseException as exc:  # the state file must not keep saying "running"
            reason = " ".join(str(exc).split()) or type(exc).__name__
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            with contextlib.suppress(Exception):
                _write_state(paths, status, state.step, settings.total_steps, settings, reason=reason)
            raise
    return _finish(atoms, settings, paths, state, calc, n_threads, timer, steps_at_start)


# ============================================================================================
# progress bar
# ============================================================================================
class RichProgress:
    """A Rich progress bar usable as the ``progress`` callback (shows ps/day and an ETA).

    >>> with RichProgress("demo", dt_fs=2.0, disable=True) as bar:
    ...     bar(5, 10, 123.0)
    """

    def __init__(self, description: str = "MD", *, dt_fs: float | None = None, disable: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            disable=disable, transient=False,
        )
        self._description = description
        self._task: Any = None
        self._dt_fs = dt_fs

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, step: int, total: int, ps_per_day: float) -> None:
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=total, rate="")
        self._progress.update(self._task, completed=step, total=total, rate=f"{ps_per_day:8.1f} ps/day")


# ============================================================================================
# imports of users' own MD
# ============================================================================================
def import_md(
    path: str | os.PathLike[str],
    out_traj: str | os.PathLike[str],
    *,
    dt_fs: float | None = None,
    fmt: str | None = None,
    type_map: list[str] | None = None,
    temperature_k: float | None = None,
    alpha_stride: int = 10,
    source_calculator: str = "imported",
    index: str = ":",
) -> MDResult:
    """Convert a user's MD (vasprun.xml, XDATCAR, extxyz, LAMMPS dump, ASE .traj) into the
    ``.traj`` + sidecar ``.json`` that :func:`run_md` writes, so later stages cannot tell them
    apart.

    ``dt_fs`` is the time between the *stored* frames (MD step × output interval); the file
    must supply it unless its frames carry ``info["time_fs"]``. Velocities are kept when the
    file has them; ``temperature_k`` defaults to the mean kinetic temperature when it does.

    >>> import tempfile, pathlib
    >>> from ase.build import bulk
    >>> from ase.io import write
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> frames = [bulk("Ag", cubic=True) for _ in range(3)]
    >>> write(d / "run.xyz", frames)
    >>> res = import_md(d / "run.xyz", d / "run.traj", dt_fs=20.0, temperature_k=500)
    >>> res.metadata["n_frames"], res.metadata["frame_dt_fs"], res.metadata_path.name
    (3, 20.0, 'run.json')
    """
    from ramanscreen.tasks.trajectory import Trajectory

    path = Path(path)
    out_traj = Path(out_traj)
    if out_traj.suffix != ".traj":
        raise InputError("the imported trajectory is written as ASE .traj", file=out_traj, field="out_traj",
                         fix="use a .traj file name")
    if dt_fs is not None and not (math.isfinite(dt_fs) and dt_fs > 0):
        raise InputError(f"time step must be positive, got {dt_fs:g} fs", field="dt_fs", fix="e.g. 2 (fs)")
    if not isinstance(alpha_stride, int) or alpha_stride < 1:
        raise InputError(f"must be an integer >= 1, got {alpha_stride!r}", field="alpha_stride")
    traj = Trajectory.from_file(path, dt_fs=dt_fs, fmt=fmt, type_map=type_map, index=index)
    frame0 = traj.to_atoms(0)
    check_overlaps(frame0, file=path)
    if traj.md_step is None:
        traj = dataclasses.replace(traj, md_step=np.arange(len(traj), dtype=np.int64))
    t_kin = None
    if traj.velocities_A_fs is not None:
        v = traj.velocities_A_fs  # Å/fs
        ekin_eV = 0.5 * np.einsum("i,fij->f", traj.masses_amu, v**2) * units._amu * 1e10 / units._e
        t_kin = float(np.mean(2 * ekin_eV / (3 * traj.n_atoms * units.kB)))
    frame_dt = float(traj.dt_fs)
    meta = {
        "schema": SCHEMA,
        "traj": out_traj.name,
        "imported_from": str(path),
        "material": None,
        "formula": frame0.get_chemical_formula(),
        "n_atoms": int(traj.n_atoms),
        "calculator": source_calculator,
        "model": None,
        "model_version": None,
        "ensemble": None,
        "temperature_k": temperature_k if temperature_k is not None else t_kin,
        "temperature_mean_k": t_kin,
        "dt_fs": frame_dt,
        "write_every": 1,
        "frame_dt_fs": frame_dt,
        "steps": int(len(traj) - 1),
        "equil_steps": 0,
        "seed": None,
        "alpha_stride": alpha_stride,
        "alpha_dt_fs": frame_dt * alpha_stride,
        "n_frames": int(len(traj)),
        "duration_ps": (len(traj) - 1) * frame_dt * 1e-3,
        "has_velocities": traj.velocities_A_fs is not None,
        "wall_time_s": None,
        "finished_utc": _now(),
    }
    _write_json(out_traj.with_suffix(".json"), meta)
    traj.write(out_traj)
    return MDResult(out_traj, out_traj.with_suffix(".json"), meta)


# ============================================================================================
# force check (paper Fig. S1)
# ============================================================================================
@dataclass
class ForceCheckResult:
    """Force errors of an MLFF against reference (DFT) forces, in eV/Å."""

    rmse_eV_A: float
    mae_eV_A: float
    max_abs_eV_A: float
    rmse_by_element_eV_A: dict[str, float]
    n_frames: int
    n_atoms_total: int
    reference_forces_eV_A: np.ndarray  # (n_atoms_total, 3)
    predicted_forces_eV_A: np.ndarray
    symbols: np.ndarray
    plot_path: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {"rmse_eV_A": self.rmse_eV_A, "mae_eV_A": self.mae_eV_A, "max_abs_eV_A": self.max_abs_eV_A,
                "rmse_by_element_eV_A": self.rmse_by_element_eV_A, "n_frames": self.n_frames,
                "n_atoms_total": self.n_atoms_total, "plot": None if self.plot_path is None else str(self.plot_path)}


def read_reference_forces(paths: Iterable[str | os.PathLike[str]]) -> list[Atoms]:
    """Frames with reference forces from extxyz (``forces`` array), OUTCARs or vasprun.xml."""
    from ase.io import read

    frames: list[Atoms] = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError("no such reference file", file=p, fix="give extxyz/OUTCAR/vasprun.xml with forces")
        try:
            got = read(p, index=":")
        except Exception as exc:  # noqa: BLE001
            text = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise InputError(f"unreadable reference file ({text})", file=p,
                             fix="give extxyz with forces, a VASP OUTCAR or vasprun.xml") from None
        for k, a in enumerate(got):
            try:
                f = a.get_forces()
            except Exception:  # noqa: BLE001 - no calculator results in this frame
                f = a.arrays.get("forces")
            if f is None:
                raise InputError(f"frame {k} has no reference forces", file=p, field="forces",
                                 fix="write the DFT forces into the file (extxyz 'forces' column) or use OUTCARs")
            ref = a.copy()
            ref.calc = None
            ref.arrays["ref_forces"] = np.asarray(f, float)
            frames.append(ref)
    if not frames:
        raise InputError("no reference frames", field="reference", fix="give at least one file with forces")
    return frames


def force_check(
    reference: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    calculator: str | Calculator = "chgnet",
    *,
    plot_path: str | os.PathLike[str] | None = None,
    calculator_kwargs: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
    title: str | None = None,
) -> ForceCheckResult:
    """Force RMSE of ``calculator`` against reference forces and a parity plot (paper Fig. S1).

    >>> import tempfile, pathlib
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> from ase.io import write
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> a = bulk("Cu", cubic=True).repeat(2); a.rattle(0.05, seed=1); a.calc = EMT(); _ = a.get_forces()
    >>> write(d / "ref.xyz", a)
    >>> r = force_check(d / "ref.xyz", "ase:ase.calculators.emt:EMT")
    >>> r.rmse_eV_A < 1e-6, r.n_atoms_total
    (True, 32)
    """
    if isinstance(reference, (str, os.PathLike)):
        reference = [reference]
    frames = read_reference_forces(reference)
    if isinstance(calculator, str):
        spec = calculator
        calc = get_calculator(calculator, properties=("energy", "forces"), num_threads=num_threads,
                              **dict(calculator_kwargs or {}))
    else:
        spec, calc = type(calculator).__name__, calculator
    for a in frames:
        check_elements(a, calc, spec)
    ref, pred, sym = [], [], []
    for a in frames:  # one model call per reference structure
        probe = a.copy()
        probe.calc = calc
        pred.append(np.asarray(probe.get_forces(), float))
        ref.append(a.arrays["ref_forces"])
        sym.append(np.array(a.get_chemical_symbols()))
    ref_f, pred_f, symbols = np.vstack(ref), np.vstack(pred), np.concatenate(sym)
    err = pred_f - ref_f
    by_el = {el: float(np.sqrt(np.mean(err[symbols == el] ** 2))) for el in np.unique(symbols)}
    res = ForceCheckResult(
        rmse_eV_A=float(np.sqrt(np.mean(err**2))), mae_eV_A=float(np.mean(np.abs(err))),
        max_abs_eV_A=float(np.abs(err).max()), rmse_by_element_eV_A=by_el, n_frames=len(frames),
        n_atoms_total=len(symbols), reference_forces_eV_A=ref_f, predicted_forces_eV_A=pred_f, symbols=symbols,
    )
    if plot_path is not None:
        res.plot_path = parity_plot(res, plot_path, title=title or f"{spec} vs reference forces")
    return res


def parity_plot(res: ForceCheckResult, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Force-component parity plot, one colour per element, RMSE in the legend; written atomically."""
    from ramanscreen.tasks.common import new_figure

    path = Path(path)
    fig = new_figure(figsize=(4.6, 4.4), dpi=150)
    ax = fig.subplots()
    for el in np.unique(res.symbols):
        m = res.symbols == el
        ax.scatter(res.reference_forces_eV_A[m].ravel(), res.predicted_forces_eV_A[m].ravel(), s=4, alpha=0.5,
                   label=f"{el}: RMSE {res.rmse_by_element_eV_A[el]:.3f} eV/Å", rasterized=True)
    lim = float(max(np.abs(res.reference_forces_eV_A).max(), np.abs(res.predicted_forces_eV_A).max(), 1e-3)) * 1.05
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("MLFF force component (eV/Å)")
    ax.set_title(f"{title}\nRMSE {res.rmse_eV_A:.3f} eV/Å, {res.n_frames} frames", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", markerscale=3)
    fig.tight_layout()
    return save_figure(fig, path)


# ============================================================================================
# NPT equilibration, then NVT production at the mean cell
# ============================================================================================
#: ``run(atoms, settings, workdir, carry_velocities)`` -> MDResult: one engine's MD (ASE or LAMMPS).
MDRunner = Callable[[Atoms, "MDSettings", Path, bool], "MDResult"]


def npt_stage_settings(s: MDSettings) -> MDSettings:
    """The NPT equilibration of ``s``: ``npt_steps`` of NPT at its T and ``pressure_gpa`` (from
    the structure; about 100 stored frames, which only the cell average reads).

    >>> e = npt_stage_settings(MDSettings(temperature_k=900, npt_steps=500, equil_steps=50))
    >>> e.ensemble, e.steps, e.equil_steps, e.write_every
    ('npt', 500, 0, 5)
    """
    every = max(1, s.npt_steps // 100)
    return dataclasses.replace(s, ensemble="npt", steps=s.npt_steps, equil_steps=0, write_every=every, alpha_stride=1,
                               npt_equilibration="off", checkpoint_every=max(every, s.checkpoint_every))


def npt_handover(npt_traj: str | os.PathLike[str], average_fraction: float = NPT_AVERAGE_FRACTION
                 ) -> tuple[Atoms, dict[str, Any]]:
    """The start of NVT production after an NPT equilibration, and its record.

    The cell is the mean cell of the last ``average_fraction`` of the stored NPT frames; the
    atoms are the last NPT frame's, at the same fractional coordinates in that cell, with its
    velocities. The record holds the mean cell, its spread, the volume and the density.
    """
    from ase.io.trajectory import Trajectory as AseTrajectory

    with AseTrajectory(str(npt_traj)) as tr:
        n = len(tr)
        if n < 2:
            raise InputError(f"the NPT equilibration stored {n} frames, too few to average", file=npt_traj,
                             fix="raise npt_steps")
        first = tr[0]
        tail = [tr[k] for k in range(min(n - 1, int(n * (1.0 - average_fraction))), n)]
    cells = np.array([f.cell.array for f in tail])
    mean = cells.mean(axis=0)
    last = tail[-1]
    frac = np.linalg.solve(last.cell.array.T, last.positions.T).T
    start = Atoms(numbers=last.numbers, positions=frac @ mean, cell=mean, pbc=True, masses=last.get_masses(),
                  momenta=last.get_momenta())
    start.wrap()
    vol = float(abs(np.linalg.det(mean)))
    mass_g = float(last.get_masses().sum()) / units.mol
    lengths = np.linalg.norm(cells, axis=2)
    record = {
        "npt_traj": str(npt_traj), "n_frames_averaged": len(tail), "average_fraction": float(average_fraction),
        "first_averaged_md_step": int(tail[0].info.get("md_step", -1)),
        "last_npt_md_step": int(last.info.get("md_step", -1)),
        "mean_cell_A": mean.tolist(), "cell_lengths_A": np.linalg.norm(mean, axis=1).tolist(),
        "cell_lengths_std_A": lengths.std(axis=0).tolist(), "volume_A3": vol,
        "initial_volume_A3": float(abs(np.linalg.det(first.cell.array))),
        "density_g_cm3": mass_g / (vol * 1e-24),
    }
    return start, record


def density_g_cm3(atoms: Atoms) -> float:
    """Mass density of a cell (g/cm³).

    >>> from ase.build import bulk
    >>> round(density_g_cm3(bulk("Cu", "fcc", a=3.615)), 2)
    8.93
    """
    return float(atoms.get_masses().sum() / units.mol / (abs(atoms.get_volume()) * 1e-24))


def run_npt_then_nvt(atoms: Atoms, settings: MDSettings, workdir: str | os.PathLike[str], run: MDRunner
                     ) -> tuple[MDResult, dict[str, Any]]:
    """Production MD of ``settings`` in ``workdir`` with ``run`` (an engine), preceded, when
    ``settings.npt_first``, by the NPT equilibration in ``workdir/npt`` and the hand-over of
    :func:`npt_handover` (written to ``workdir/npt_handover.json``). Each run resumes as the
    engine does, so a killed call resumes where it stopped.

    Returns the production result and the record of the production cell: ``npt`` (whether it
    was equilibrated), ``pressure_gpa`` (None: not controlled), the cell, volume, density and,
    after NPT, the hand-over record.
    """
    workdir = Path(workdir)
    if not settings.npt_first:
        res = run(atoms, settings, workdir, False)
        record: dict[str, Any] = {"npt": False, "pressure_gpa": settings.pressure_gpa if settings.ensemble == "npt"
                                  else None}
    else:
        npt = run(atoms, npt_stage_settings(settings), workdir / "npt", False)
        start, hand = npt_handover(npt.traj_path)
        res = run(start, settings, workdir, True)
        hand["pressure_mean_gpa"] = npt.metadata.get("pressure_mean_gpa")
        _write_json(workdir / "npt_handover.json", hand)
        record = {"npt": True, "pressure_gpa": settings.pressure_gpa, "handover": hand}
    from ase.io.trajectory import Trajectory as AseTrajectory

    with AseTrajectory(str(res.traj_path)) as tr:
        first = tr[0]
    record.update({"cell_A": first.cell.array.tolist(), "cell_lengths_A": first.cell.lengths().tolist(),
                   "volume_A3": float(abs(first.get_volume())), "density_g_cm3": density_g_cm3(first)})
    return res, record

__all__ = [
    "CALCULATORS", "ENSEMBLES", "ForceCheckResult", "MDResult", "MDSettings", "RichProgress", "check_elements",
    "check_overlaps", "check_time_step", "force_check", "get_calculator", "import_md", "parity_plot",
    "read_reference_forces", "run_md", "run_npt_then_nvt", "npt_handover", "npt_stage_settings", "set_num_threads",
]
