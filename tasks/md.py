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

#: ``progress(step, total, ps_per_day)``: called during a run (step counts equilibration too).
ProgressCallback = Callable[[int, int, float], None]

ENSEMBLES = ("nvt-nhc", "langevin", "npt")
#: Overlapping atoms: any pair closer than this (Å) is an input error.
MIN_PAIR_DISTANCE_A = 0.5
#: A time step above ``DT_WARN_FS_PER_SQRT_AMU * sqrt(lightest mass / amu)`` gets a warning
#: (H: 1.0 fs, Li: 2.6 fs, Na: 4.8 fs, Ag: 10.4 fs -- the paper's 10 fs for AgI passes).
DT_WARN_FS_PER_SQRT_AMU = 1.0
SCHEMA = "ramanscreen.md/1"


# ============================================================================================
# settings
# ============================================================================================
@dataclass(frozen=True)
class MDSettings:
    """What to run. Units are in the names; all times in fs, temperatures in K.

    ``steps`` counts production steps; frames are stored at production steps 0, k, 2k, …
    (k = ``write_every``), so a run stores ``steps // write_every + 1`` frames.
    ``alpha_stride``: α is predicted on every ``alpha_stride``-th stored frame (the paper: every
    10th MD frame); it is recorded with the run for the polarizability stage.

    >>> MDSettings(temperature_k=500, dt_fs=10).alpha_dt_fs
    100.0
    >>> MDSettings(temperature_k=-1).validate()
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: temperature_k: must be a positive number of kelvin, got -1 (fix: e.g. --temperature-k 300)
    """

    temperature_k: float = 300.0
    dt_fs: float = 2.0
    steps: int = 1000
    equil_steps: int = 0
    ensemble: str = "nvt-nhc"
    pressure_gpa: float = 0.0
    write_every: int = 1
    alpha_stride: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    calculator: str = "chgnet"
    calculator_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: torch/BLAS threads; ``None``: ``ramanscreen.tasks.settings.get_settings().num_threads``.
    num_threads: int | None = None
    #: Nosé-Hoover chain damping time (fs); ``None``: 100 × dt.
    tdamp_fs: float | None = None
    #: Barostat damping time for NPT (fs); ``None``: 1000 × dt.
    pdamp_fs: float | None = None
    #: Langevin friction (1/fs).
    friction_per_fs: float = 0.01

    @property
    def alpha_dt_fs(self) -> float:
        """Time between α samples (fs)."""
        return float(self.dt_fs * self.write_every * self.alpha_stride)

    @property
    def total_steps(self) -> int:
        return self.equil_steps + self.steps

    def validate(self) -> None:
        """Raise :class:`InputError` for settings that cannot run."""

        def number(name: str, value: Any) -> float:
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise InputError(f"must be a number, got {value!r}", field=name) from None
            return out

        t = number("temperature_k", self.temperature_k)
        if not math.isfinite(t) or t <= 0:
            raise InputError(f"must be a positive number of kelvin, got {self.temperature_k:g}",
                             field="temperature_k", fix="e.g. --temperature-k 300")
        dt = number("dt_fs", self.dt_fs)
        if not math.isfinite(dt) or dt <= 0:
            raise InputError(f"time step must be positive, got {self.dt_fs:g} fs", field="dt_fs",
                             fix="e.g. --dt-fs 2 (10 fs only for heavy atoms like AgI)")
        for name, low in (("steps", 1), ("equil_steps", 0), ("write_every", 1), ("alpha_stride", 1),
                          ("checkpoint_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise InputError(f"must be an integer >= {low}, got {value!r}", field=name)
        if self.ensemble not in ENSEMBLES:
            raise InputError(f"unknown ensemble {self.ensemble!r}", field="ensemble",
                             fix=f"use one of {', '.join(ENSEMBLES)}")
        if not math.isfinite(number("pressure_gpa", self.pressure_gpa)):
            raise InputError("pressure must be finite", field="pressure_gpa")
        for name in ("tdamp_fs", "pdamp_fs", "friction_per_fs"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(number(name, value)) and value > 0):
                raise InputError(f"must be positive, got {value!r}", field=name)
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise InputError(f"must be a positive integer, got {self.num_threads!r}", field="num_threads")
        if not isinstance(self.calculator, str) or not self.calculator:
            raise InputError("calculator must be a name", field="calculator", fix="chgnet, sevenn or ase:module:Class")

    def fingerprint(self) -> str:
        """Hash of everything that changes the trajectory (not threads or checkpoint interval)."""
        d = dataclasses.asdict(self)
        for k in ("num_threads", "checkpoint_every"):
            d.pop(k)
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
    calc.ramanscreen_info = {"model": f"CHGNet {net.version}", "model_version": str(net.version),
                             "package": "chgnet", "task": task,
                             "elements_max_z": int(net.atom_embedding.embedding.num_embeddings)}
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
    calc.ramanscreen_info = {"model": f"SevenNet {model}", "model_version": f"{model} (sevenn {version} checkpoint)",
                             "package": "sevenn",
                             "elements_z": sorted(int(z) for z in getattr(calc, "type_map", {}))}
    return calc


#: Registered MLFFs: name -> factory(properties=..., **kwargs).
CALCULATORS: dict[str, Callable[..., Calculator]] = {"chgnet": _chgnet_calculator, "sevenn": _sevenn_calculator}


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
    try:
        if name.lower() in CALCULATORS:
            calc = CALCULATORS[name.lower()](properties=properties, **kwargs)
        elif name.startswith("ase:"):
            parts = name.split(":")
            if len(parts) != 3 or not all(parts[1:]):
                raise InputError(f"bad calculator spec {spec!r}", field="calculator",
                                 fix="write ase:module:Class, e.g. ase:ase.calculators.emt:EMT")
            module = importlib.import_module(parts[1])
            cls = getattr(module, parts[2])
            calc = cls(**kwargs)
            version = getattr(module, "__version__", None) or _package_version(parts[1].split(".")[0])
            calc.ramanscreen_info = {"model": f"{parts[1]}:{parts[2]}", "model_version": version,
                                     "package": parts[1].split(".")[0]}
        else:
            raise InputError(f"unknown calculator {spec!r}", field="calculator",
                             fix="use chgnet, sevenn or ase:module:Class")
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
                         fix="choose another --calculator (e.g. ase:module:Class with a model for these elements)")


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
                         fix="delete the run directory or pass --restart to start over") from None
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
                             fix="pass --restart to start over")
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
                f"at least {n_keep}", file=paths.part, fix="pass --restart to start over")
        if n_have > n_keep:  # drop frames written after the checkpoint, streaming
            with atomic_path(paths.part) as tmp, AseTrajectory(str(tmp), "w") as out:
                for k in range(n_keep):
                    out.write(tr[k])
    return n_keep


def _snapshot(atoms: Atoms, md_step: int, dt_fs: float, epot: float | None) -> Atoms:
    snap = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc,
                 momenta=atoms.get_momenta(), masses=atoms.get_masses())
    snap.info = {"md_step": int(md_step), "time_fs": float(md_step * dt_fs),
                 "temperature_k": float(atoms.get_temperature())}
    if epot is not None:
        snap.info["epot_eV"] = float(epot)
    return snap


def _clean_partial(paths: _Paths) -> None:
    for p in (paths.part, paths.ckpt, paths.state):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


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
        workdir: output directory; holds ``md.traj`` + ``md.json`` when done.
        progress: optional plain callable ``progress(step, total, ps_per_day)``, called at most
            about once a second and once at the end (``step`` counts equilibration steps too).
        restart: discard a previous partial run in ``workdir`` instead of resuming it.
        calculator: an already-built ASE calculator to use instead of ``settings.calculator``
            (the spec string is still recorded).
        name: file stem of the outputs.

    Bad input (temperature, time step, overlaps, elements, calculator) raises
    :class:`InputError` before anything is written.
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
                         fix="choose another --out directory or pass --restart to overwrite it")

    # ---- everything that can fail on bad input happens before the first file is written
    props = ("energy", "forces", "stress") if settings.ensemble == "npt" else ("energy", "forces")
    n_threads = set_num_threads(settings.num_threads)
    calc = calculator or get_calculator(settings.calculator, properties=props, num_threads=n_threads,
                                        **dict(settings.calculator_kwargs))
    if not hasattr(calc, "ramanscreen_info"):
        calc.ramanscreen_info = {"model": type(calc).__name__, "model_version": None}
    check_elements(atoms, calc, settings.calculator)
    _first_forces(atoms, calc, settings.calculator)

    workdir.mkdir(parents=True, exist_ok=True)
    if restart:
        _clean_partial(paths)
        for p in (paths.traj, paths.meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    rng = np.random.default_rng(settings.seed)
    acc = {"wall_time_s": 0.0, "calc_time_s": 0.0, "n_resumes": 0, "t_sum": 0.0, "t_sq": 0.0, "t_n": 0,
           "started_utc": _now(), "equil_t_mean_k": None}
    step = 0
    resumed_arrays: dict[str, np.ndarray] | None = None
    if paths.ckpt.exists():
        arrays, cmeta = _load_checkpoint(paths)
        if cmeta.get("fingerprint") != settings.fingerprint():
            raise InputError("a partial run with different settings is in this directory", file=workdir,
                             fix="rerun with the same settings to resume, or pass --restart to start over")
        if not np.array_equal(arrays["numbers"], atoms.numbers):
            raise InputError("a partial run of a different structure is in this directory", file=workdir,
                             fix="rerun with the same structure to resume, or pass --restart to start over")
        step = int(cmeta["step"])
        n_frames = _truncate_part(paths, settings, step)
        for key in ("wall_time_s", "calc_time_s", "n_resumes", "t_sum", "t_sq", "t_n", "started_utc",
                    "equil_t_mean_k"):
            acc[key] = cmeta.get(key, acc[key])
        acc["n_resumes"] = int(acc["n_resumes"]) + 1
        rng.bit_generator.state = cmeta["rng_state"]
        atoms.set_cell(arrays["cell"])
        atoms.set_masses(arrays["masses"])
        atoms.set_positions(arrays["positions"])
        atoms.set_momenta(arrays["momenta"])
        resumed_arrays = arrays
    else:
        _clean_partial(paths)  # a run killed before its first checkpoint starts over
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature_k, rng=rng)
        Stationary(atoms)
        n_frames = 0

    _write_json(paths.state, {"status": "running", "step": step, "total": settings.total_steps,
                              "settings": settings.to_dict(), "updated_utc": _now()})

    atoms.calc = calc
    calc_timer = [0.0, 0]  # seconds inside the model, number of model calls (this session)
    original_calculate = calc.calculate

    def timed_calculate(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            original_calculate(*args, **kwargs)
        finally:
            calc_timer[0] += time.perf_counter() - t0
            calc_timer[1] += 1

    calc.calculate = timed_calculate  # type: ignore[method-assign]
    dyn = _make_dynamics(atoms, settings, rng)
    if resumed_arrays is not None:
        _restore_integrator(dyn, resumed_arrays)

    from ase.io.trajectory import Trajectory as AseTrajectory

    total = settings.total_steps
    equil = settings.equil_steps
    dt_fs = settings.dt_fs
    t_start = time.perf_counter()
    steps_at_start = step
    last_report = -math.inf
    equil_t: list[float] = []

    def ps_per_day() -> float:
        elapsed = time.perf_counter() - t_start
        done = step - steps_at_start
        return done * dt_fs * 1e-3 / (elapsed / 86400.0) if elapsed > 0 and done > 0 else 0.0

    def energy() -> float | None:
        e = calc.results.get("energy")
        return None if e is None else float(e)

    def checkpoint_meta() -> dict[str, Any]:
        now = time.perf_counter()
        return {**acc, "fingerprint": settings.fingerprint(), "n_frames": n_frames,
                "wall_time_s": acc["wall_time_s"] + (now - t_start), "calc_time_s": acc["calc_time_s"] + calc_timer[0]}

    writer = AseTrajectory(str(paths.part), "a")
    try:
        if step == equil and n_frames == 0:  # no equilibration: frame 0 is the initial state
            writer.write(_snapshot(atoms, 0, dt_fs, energy()))
            n_frames = 1
        while step < total:
            dyn.step()
            step += 1
            dyn.nsteps = step
            p = step - equil
            temp = float(atoms.get_temperature())
            if p >= 0:
                acc["t_sum"] += temp
                acc["t_sq"] += temp * temp
                acc["t_n"] += 1
                if p % settings.write_every == 0:
                    writer.write(_snapshot(atoms, p, dt_fs, energy()))
                    n_frames += 1
            else:
                equil_t.append(temp)
            if step == equil and equil_t:
                acc["equil_t_mean_k"] = float(np.mean(equil_t))
            if step % settings.checkpoint_every == 0 or step == total:
                writer.backend.fd.flush()
                os.fsync(writer.backend.fd.fileno())
                _save_checkpoint(paths, atoms, dyn, step, checkpoint_meta(), rng)
            if progress is not None:
                now = time.perf_counter()
                if now - last_report >= 1.0 or step == total:
                    last_report = now
                    progress(step, total, ps_per_day())
            if not np.isfinite(temp):
                raise InputError(f"MD blew up at step {step} (non-finite temperature)", field="dt_fs",
                                 fix="use a smaller --dt-fs or check the structure")
    finally:
        writer.close()
        calc.calculate = original_calculate  # type: ignore[method-assign]

    # ---- finalize: sidecar first, then the trajectory appears under its final name
    wall = acc["wall_time_s"] + (time.perf_counter() - t_start)
    calc_time = acc["calc_time_s"] + calc_timer[0]
    t_n = max(int(acc["t_n"]), 1)
    t_mean = acc["t_sum"] / t_n
    info = getattr(calc, "ramanscreen_info", {})
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
        "equil_steps": equil,
        "seed": settings.seed,
        "write_every": settings.write_every,
        "frame_dt_fs": dt_fs * settings.write_every,
        "alpha_stride": settings.alpha_stride,
        "alpha_dt_fs": settings.alpha_dt_fs,
        "n_frames": n_frames,
        "duration_ps": settings.steps * dt_fs * 1e-3,
        "tdamp_fs": settings.tdamp_fs if settings.tdamp_fs is not None else 100 * dt_fs,
        "friction_per_fs": settings.friction_per_fs if settings.ensemble == "langevin" else None,
        "pdamp_fs": (settings.pdamp_fs or 1000 * dt_fs) if settings.ensemble == "npt" else None,
        "temperature_mean_k": t_mean,
        "temperature_std_k": math.sqrt(max(acc["t_sq"] / t_n - t_mean**2, 0.0)),
        "equil_temperature_mean_k": acc["equil_t_mean_k"],
        "wall_time_s": wall,
        "calc_time_s": calc_time,
        "overhead_fraction": (wall - calc_time) / calc_time if calc_time > 0 else None,
        "calc_calls_per_step": calc_timer[1] / max(total - steps_at_start, 1),
        "ps_per_day": total * dt_fs * 1e-3 / (wall / 86400.0) if wall > 0 else None,
        "n_resumes": int(acc["n_resumes"]),
        "num_threads": n_threads,
        "started_utc": acc["started_utc"],
        "finished_utc": _now(),
        "host": platform.node(),
        "settings": settings.to_dict(),
    }
    _write_json(paths.meta, meta)
    os.replace(paths.part, paths.traj)
    _write_json(paths.state, {"status": "complete", "step": total, "total": total, "updated_utc": _now()})
    with contextlib.suppress(FileNotFoundError):
        paths.ckpt.unlink()
    return MDResult(paths.traj, paths.meta, meta)


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
        self._task = None
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
        raise InputError("the imported trajectory is written as ASE .traj", file=out_traj, field="out",
                         fix="use a .traj file name")
    if dt_fs is not None and not (math.isfinite(dt_fs) and dt_fs > 0):
        raise InputError(f"time step must be positive, got {dt_fs:g} fs", field="dt_fs", fix="e.g. --dt-fs 2")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=150)
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


__all__ = [
    "CALCULATORS", "ENSEMBLES", "ForceCheckResult", "MDResult", "MDSettings", "RichProgress", "check_elements",
    "check_overlaps", "check_time_step", "force_check", "get_calculator", "import_md", "parity_plot",
    "read_reference_forces", "run_md", "set_num_threads",
]
