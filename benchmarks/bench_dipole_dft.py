"""Benchmark: the embedded Thole dipole model against CP2K linear-response α (issue 13 item 8).

Baseline (measured in the same run): CP2K ``&LINRES &POLAR`` (PBE, DZVP-MOLOPT-SR-GTH, Γ point,
Berry-phase dipole, one process) on the *same* small cells as the candidate, the embedded
``thole-dipole-model (embedded, not DFPT)``. Per paper material (α-AgI 500 K, Na₃SbS₄ 300 K,
W-doped Na₃SbS₄ 300 K, β-Na₃PS₄ 300 K; 16-, 15- and 16-atom cells, 8 atoms for AgI):

* CHGNet MD snapshots (not DFT MD; the last 4, 3, 2, 2 of steps 200, 300, 400, 500 after 200
  of equilibration for Na₃PS₄, Na₃SbS₄, W-doped, AgI: as many as the hour of CP2K allowed):
  α RMSE over the 9 components (Å³), relative RMSE (over the mean DFT tr α/3), and the ratio
  and correlation of the frame-to-frame fluctuations (what a Raman spectrum sees);
* for the host tetrahedra (SbS₄ in Na₃SbS₄, PS₄ in Na₃PS₄) on the built equilibrium cell:
  dα/dQ of the ν1 breathing mode (every S moved radially from its Sb/P by ±0.02 Å), its a',
  γ' and Raman activity 45a'² + 7γ'², and the activity ratio dipole/DFT. α-AgI has no
  molecular unit and no first-order Raman mode in its bcc I⁻ lattice (its spectrum is
  disorder-induced), so it gets the snapshot metrics only; the W-doped cell's single SbS₄ is
  the pristine host's mode again, left out to keep CP2K within the hour.

Goal: the ν1 activity ratio dipole/DFT within a factor 2 (0.5–2) for every tetrahedral
material. Expected to MISS: the point-dipole model has no charge-flow (bond-polarizability)
term, which is what makes ν1 strong in DFT and in experiment. Exit code 1 on a miss.

Caveats printed with the table and stored in the summary: Γ-only CP2K in 15–16-atom cells
underestimates absolute α (Berry-phase Δk = 2π/L; docs/reference.md); PBE/DZVP is not
DFPT-quality for absolute α; snapshots come from CHGNet, not DFT MD.

    nice -n 19 .venv/bin/python benchmarks/bench_dipole_dft.py            # everything (~1 h CP2K)
    .venv/bin/python benchmarks/bench_dipole_dft.py --reuse               # metrics from the shipped data

The full run writes ``tasks/data/dipole_vs_dft/frames.extxyz`` and ``summary.json``; CP2K and MD
results are cached in ``--workdir`` so an interrupted run (or ``--materials X``) resumes.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Per material: cell size, MD temperature and step (the paper's), the tetrahedral centres of
#: the ν1 mode (None: no mode part), its label and the number of snapshots (the last ones of
#: the MD: fewer than planned, because the shared machine's load tripled CP2K's wall time).
MATERIALS: dict[str, dict[str, Any]] = {
    "Na3PS4": {"n_atoms": 16, "temperature_k": 300.0, "dt_fs": 2.0, "centres": ("P",), "mode": "PS4 nu1",
               "n_frames": 4},
    "Na3SbS4": {"n_atoms": 16, "temperature_k": 300.0, "dt_fs": 2.0, "centres": ("Sb",), "mode": "SbS4 nu1",
                "n_frames": 3},
    # its one SbS4 is the pristine host's mode again (the Na3SbS4 row); skipped for CP2K time
    "Na3SbS4-W": {"n_atoms": 15, "temperature_k": 300.0, "dt_fs": 2.0, "centres": None, "mode": None,
                  "n_frames": 2},
    "AgI": {"n_atoms": 8, "temperature_k": 500.0, "dt_fs": 10.0, "centres": None, "mode": None, "n_frames": 2},
}
#: CP2K settings of the shipped data (lower cutoff than the backend's 400 Ry default, for time).
CP2K_SETTINGS: dict[str, Any] = {"cutoff_ry": 300.0, "rel_cutoff_ry": 50.0, "linres_eps": 1e-7}
MD_EQUIL_STEPS = 200
MD_STEPS = 500
MD_WRITE_EVERY = 100
GOAL_FACTOR = 2.0
DFT_LABEL = "CP2K PBE"
CAVEATS = [
    "CP2K LINRES at the Γ point only: in 8-16-atom cells the Berry-phase finite difference "
    "(Δk = 2π/L) underestimates absolute α (Si: ε∞ 6.4 in 8 atoms vs 12.6 converged, docs/reference.md); "
    "dipole and DFT are compared on the same cells, and the derivative (mode) ratios are less sensitive",
    "PBE with DZVP-MOLOPT-SR-GTH (no diffuse functions) at 300 Ry: not DFPT-quality for absolute α",
    "snapshots are CHGNet MD snapshots (not DFT MD); β-Na3PS4 (cubic, 300 K), not the campaign's γ phase",
    "QE is not used: only a Si UPF pseudopotential is on this machine",
]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tasks" / "data" / "dipole_vs_dft"


def cp2k_backend(settings: dict[str, Any]):
    """The CP2K backend of the comparison: one process (no mpirun), OMP_NUM_THREADS=1."""
    from ramanscreen.tasks.reference import Cp2kBackend

    return Cp2kBackend(mpirun="", launcher="", **settings)


def _key(atoms) -> str:
    h = hashlib.sha1(np.round(atoms.positions, 6).tobytes() + np.round(atoms.cell.array, 6).tobytes())
    return h.hexdigest()[:16]


def _cp2k_alpha(backend, atoms, workdir: Path) -> tuple[np.ndarray, float]:
    """CP2K α of ``atoms`` (cached in ``workdir/result.json`` by positions and method)."""
    cache = workdir / "result.json"
    key = _key(atoms)
    if cache.is_file():
        got = json.loads(cache.read_text())
        if got.get("key") == key and got.get("settings") == CP2K_SETTINGS:
            return np.array(got["alpha_A3"]), float(got["wall_s"])
    res = backend.compute(atoms, workdir=workdir)
    cache.write_text(json.dumps({"key": key, "settings": CP2K_SETTINGS, "method": backend.method, "alpha_A3": res.alpha_A3.tolist(),
                                 "wall_s": res.meta["wall_s"]}))
    print(f"    CP2K {workdir.name}: α_iso {np.trace(res.alpha_A3) / 3:.3f} Å³, {res.meta['wall_s']:.0f} s",
          flush=True)
    return res.alpha_A3, float(res.meta["wall_s"])


def _md_frames(name: str, spec: dict[str, Any], workdir: Path, n_frames: int) -> list:
    import ase.io

    from ramanscreen.tasks.md import MDSettings, run_md
    from ramanscreen.tasks.structures import build_structure

    atoms = build_structure(name, n_atoms=spec["n_atoms"])
    s = MDSettings(calculator="chgnet", temperature_k=spec["temperature_k"], dt_fs=spec["dt_fs"], steps=MD_STEPS,
                   equil_steps=MD_EQUIL_STEPS, write_every=MD_WRITE_EVERY, seed=0, num_threads=1)
    t0 = time.perf_counter()
    res = run_md(atoms, s, workdir / f"md_{len(atoms)}")
    print(f"  {name}: CHGNet MD {MD_EQUIL_STEPS}+{MD_STEPS} steps at {spec['temperature_k']:g} K in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    traj = list(ase.io.read(res.traj_path, index=":"))
    return [f for f in traj if int(f.info.get("md_step", 0)) > 0][-n_frames:]


def _frame(atoms, material: str, kind: str, alpha_dft, alpha_dip, dft_method: str, dip_method: str,
           wall_s: float, **extra: Any):
    from ase import Atoms

    a = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)
    a.info.update(material=material, kind=kind, md_step=int(atoms.info.get("md_step", -1)),
                  polarizability=np.asarray(alpha_dft).reshape(9), alpha_method=dft_method,
                  alpha_dft_A3=np.asarray(alpha_dft).reshape(9), alpha_dipole_A3=np.asarray(alpha_dip).reshape(9),
                  dipole_method=dip_method, dft_wall_s=round(float(wall_s), 1), **extra)
    return a


def compute(materials: list[str], n_frames: int | None, workdir: Path, delta_A: float,
            save: Any = None) -> tuple[list, dict[str, float]]:
    """Every MD and mode frame of ``materials`` with both α; ``save(frames, walls)`` after each material."""
    from ramanscreen.tasks.reference import DipoleModel
    from ramanscreen.tasks.reference.compare import (
        MD_KIND,
        MODE_MINUS_KIND,
        MODE_PLUS_KIND,
        SNAPSHOT_LABEL,
        breathing_mode,
        displaced,
    )
    from ramanscreen.tasks.structures import build_structure

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    backend, dipole = cp2k_backend(CP2K_SETTINGS), DipoleModel()
    frames, walls = [], {}
    for name in materials:
        spec = MATERIALS[name]
        wd = workdir / name
        t0 = time.perf_counter()
        cp2k_s = 0.0
        if spec["centres"]:  # the mode first: it is the headline number
            eq = build_structure(name, n_atoms=spec["n_atoms"])
            mode = breathing_mode(eq, spec["centres"])
            for kind, sign in ((MODE_PLUS_KIND, 1.0), (MODE_MINUS_KIND, -1.0)):
                at = displaced(eq, mode, sign * delta_A)
                a_dft, w = _cp2k_alpha(backend, at, wd / kind)
                cp2k_s += w
                frames.append(_frame(at, name, kind, a_dft, dipole.compute(at).alpha_A3, backend.method,
                                     dipole.method, w, mode=spec["mode"], delta_A=delta_A,
                                     source="built equilibrium cell, S moved radially from its centre"))
        for snap in _md_frames(name, spec, wd, n_frames or spec["n_frames"]):
            a_dft, w = _cp2k_alpha(backend, snap, wd / f"step_{int(snap.info['md_step'])}")
            cp2k_s += w
            frames.append(_frame(snap, name, MD_KIND, a_dft, dipole.compute(snap).alpha_A3, backend.method,
                                 dipole.method, w, temperature_K=spec["temperature_k"], source=SNAPSHOT_LABEL))
        walls[name] = cp2k_s
        print(f"  {name}: done in {time.perf_counter() - t0:.0f} s ({cp2k_s:.0f} s of CP2K)", flush=True)
        if save is not None:
            save(frames, walls)
    return frames, walls


def make_summary(frames: list, walls: dict[str, float], command: str) -> dict[str, Any]:
    from ramanscreen.tasks.reference.compare import SNAPSHOT_LABEL, pooled_md_metrics, summarize

    materials = summarize(frames)
    for name, row in materials.items():
        spec = MATERIALS.get(name, {})
        row["temperature_K"] = spec.get("temperature_k")
        if name in walls:
            row["cp2k_wall_s"] = round(walls[name], 1)
    sizes = sorted({int(r["n_atoms"]) for r in materials.values()})
    pooled = {**pooled_md_metrics(frames), "n_frames": sum(int(r["n_frames"]) for r in materials.values())}
    return {
        "created": datetime.date.today().isoformat(),
        "command": command,
        "machine": "shared 2-core machine, one CP2K process (no MPI), OMP_NUM_THREADS=1, nice 19",
        "dft_label": DFT_LABEL,
        "dft_method": str(frames[0].info["alpha_method"]),
        "dipole_method": str(frames[0].info["dipole_method"]),
        "cp2k_settings": {**CP2K_SETTINGS, "xc": "PBE", "basis": "DZVP-MOLOPT-SR-GTH", "potential": "GTH-PBE",
                          "k_points": "Gamma only", "dipole": "Berry phase (PERIODIC_DIPOLE_OPERATOR T)",
                          "mpi_ranks": 1},
        "snapshots": SNAPSHOT_LABEL,
        "md": {"calculator": "chgnet", "equil_steps": MD_EQUIL_STEPS, "steps": MD_STEPS, "every": MD_WRITE_EVERY,
               "ensemble": "nvt-nhc", **{k: {"T_K": v["temperature_k"], "dt_fs": v["dt_fs"]} for k, v in MATERIALS.items()}},
        "cell_atoms": f"{sizes[0]}-{sizes[-1]}" if len(sizes) > 1 else str(sizes[0]),
        "goal": f"nu1 activity ratio dipole/DFT within a factor {GOAL_FACTOR:g} for every tetrahedral material",
        "caveats": CAVEATS,
        "definitions": {
            "alpha_rmse_A3": "RMSE over the 9 components of all MD frames (whole-cell α, Å³)",
            "alpha_rel_rmse": "alpha_rmse_A3 / mean DFT tr(α)/3",
            "fluct_rms_ratio": "RMS of α minus its per-method mean over the frames, dipole/DFT",
            "fluct_corr": "Pearson correlation of those fluctuations",
            "activity_ratio": "(45a'^2 + 7γ'^2) dipole/DFT of the ν1 breathing mode (dα/dQ by central differences)",
            "activity_ratio_norm": "the same with each activity divided by its method's α_iso^2",
        },
        "pooled": pooled,
        "bond_term": _bond_term(frames),
        "cp2k_wall_s_total": round(sum(walls.values()), 1),
        "materials": materials,
    }


def _bond_term(frames: list) -> dict[str, Any] | None:
    """The optional bond-polarizability term fitted to the ν1 modes, and its before/after."""
    from ramanscreen.tasks.reference.compare import bond_term_check, fit_bond_terms
    from ramanscreen.tasks.reference.dipole import DIPOLE_BOND_MODEL_METHOD

    fitted = fit_bond_terms(frames)
    if not fitted:
        return None
    return {"method": DIPOLE_BOND_MODEL_METHOD,
            "fitted_on": "the nu1 mode frames only (dα_iso/dQ of DFT); the MD snapshots are held out",
            "bond_terms": {k: list(v) for k, v in fitted.items()},
            "bond_terms_units": "(r0_A, dalpha_dr_A2)",
            "check": bond_term_check(frames, fitted)}


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def print_table(summary: dict[str, Any]) -> bool:
    """Print the table; True when the goal is met."""
    print(f"\nembedded dipole model vs {summary['dft_label']} ({summary['dft_method']}), {summary['snapshots']}")
    head = (f"{'material':<10} {'atoms':>5} {'n':>2} {'α_iso DFT':>9} {'α_iso dip':>9} {'RMSE Å³':>8} {'rel':>6} "
            f"{'fluct dip/DFT':>13} {'corr':>5}  {'mode':<24} {'a′ DFT':>7} {'a′ dip':>7} {'act. dip/DFT':>12} {'norm.':>6}")
    print(head)
    print("-" * len(head))
    ok = True
    for name, r in summary["materials"].items():
        ratio = r.get("activity_ratio")
        if ratio is not None:
            ok &= 1 / GOAL_FACTOR <= ratio <= GOAL_FACTOR
        print(f"{name:<10} {r['n_atoms']:>5} {r['n_frames']:>2} {_fmt(r.get('alpha_iso_dft_A3'), '9.2f')} "
              f"{_fmt(r.get('alpha_iso_dipole_A3'), '9.2f')} {_fmt(r.get('alpha_rmse_A3'), '8.2f')} "
              f"{_fmt(r.get('alpha_rel_rmse'), '6.1%')} {_fmt(r.get('fluct_rms_ratio'), '13.2f')} "
              f"{_fmt(r.get('fluct_corr'), '5.2f')}  {str(r.get('mode') or '— (no molecular mode)'):<24} "
              f"{_fmt((r.get('dft') or {}).get('a_prime_A2'), '7.2f')} {_fmt((r.get('dipole') or {}).get('a_prime_A2'), '7.2f')} "
              f"{_fmt(ratio, '12.3f')} {_fmt(r.get('activity_ratio_norm'), '6.3f')}")
    p = summary["pooled"]
    print(f"pooled over {p['n_frames']} MD frames: α RMSE {p['alpha_rmse_A3']:.2f} Å³ ({p['alpha_rel_rmse']:.1%})")
    bt = summary.get("bond_term")
    if bt:
        terms = ", ".join(f"{k}: r0 {v[0]:.3f} Å, dᾱ/dr {v[1]:.2f} Å²" for k, v in bt["bond_terms"].items())
        print(f"\noptional bond term ({bt['method']}; {terms}), fitted on {bt['fitted_on']}:")
        print(f"{'material':<10} {'RMSE before':>11} {'after':>7} {'fluct ratio before':>18} {'after':>6} "
              f"{'corr before':>11} {'after':>6} {'act. ratio before':>17} {'after':>6}")
        for name, c in bt["check"].items():
            print(f"{name:<10} {_fmt(c.get('alpha_rmse_A3_before'), '11.2f')} {_fmt(c.get('alpha_rmse_A3_after'), '7.2f')} "
                  f"{_fmt(c.get('fluct_rms_ratio_before'), '18.2f')} {_fmt(c.get('fluct_rms_ratio_after'), '6.2f')} "
                  f"{_fmt(c.get('fluct_corr_before'), '11.2f')} {_fmt(c.get('fluct_corr_after'), '6.2f')} "
                  f"{_fmt(c.get('activity_ratio_before'), '17.3f')} {_fmt(c.get('activity_ratio_after'), '6.3f')}")
    for c in summary["caveats"]:
        print(f"caveat: {c}")
    print(f"goal: {summary['goal']}: {'MET' if ok else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="recompute the metrics from the shipped frames, no CP2K")
    parser.add_argument("--materials", nargs="+", default=list(MATERIALS), choices=list(MATERIALS))
    parser.add_argument("--n-frames", type=int, default=None, help="MD snapshots per material (default: MATERIALS)")
    parser.add_argument("--delta-a", type=float, default=None, help="ν1 displacement per S (Å)")
    parser.add_argument("--workdir", type=Path, default=REPO / "results" / "bench_dipole_dft",
                        help="MD and CP2K runs (cached: a re-run resumes)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where frames.extxyz and summary.json go")
    args = parser.parse_args(argv)

    from ramanscreen.tasks.reference.compare import BREATHING_DELTA_A, FRAMES_FILE, SUMMARY_FILE, load_frames

    if args.reuse:
        frames = load_frames(args.out_dir / FRAMES_FILE)
        old = json.loads((args.out_dir / SUMMARY_FILE).read_text())
        summary = make_summary(frames, {}, old.get("command", ""))
        for key in ("created", "cp2k_wall_s_total"):
            summary[key] = old.get(key)
        for name, row in summary["materials"].items():
            row["cp2k_wall_s"] = old["materials"].get(name, {}).get("cp2k_wall_s")
        return 0 if print_table(summary) else 1

    delta = BREATHING_DELTA_A if args.delta_a is None else args.delta_a
    t0 = time.perf_counter()
    command = "nice -n 19 .venv/bin/python benchmarks/bench_dipole_dft.py " + " ".join(sys.argv[1:] if argv is None
                                                                                      else argv)

    def save(frames: list, walls: dict[str, float]) -> dict[str, Any]:
        import ase.io

        from ramanscreen.tasks.common import atomic_path

        summary = make_summary(frames, walls, command.strip())
        args.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out_dir / FRAMES_FILE) as tmp:
            ase.io.write(tmp, frames, format="extxyz")
        (args.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        return summary

    frames, walls = compute(args.materials, args.n_frames, args.workdir, delta, save)
    summary = save(frames, walls)
    print(f"wrote {args.out_dir / FRAMES_FILE} and {SUMMARY_FILE} in {time.perf_counter() - t0:.0f} s "
          f"({summary['cp2k_wall_s_total']:.0f} s of CP2K)")
    return 0 if print_table(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
