"""Distilled SNAP in LAMMPS against its CHGNet teacher: speed per MD step and force RMSE.

For each of the paper's four materials, at the paper's temperature and time step, on a
~64-atom cell, one process:

1. distils a SNAP from CHGNet (:func:`ramanscreen.tasks.mlff.distil.distil`: teacher MD, rattled
   and strained frames, fit) and records the wall time of the whole distillation;
2. times ``--chgnet-steps`` steps of CHGNet MD (:func:`ramanscreen.tasks.md.run_md`, NVT,
   energy + forces, one thread) on that cell: the baseline;
3. times ``--snap-steps`` steps of LAMMPS MD with the distilled potential
   (:func:`ramanscreen.tasks.mlff.lammps_md.run_lammps_md`, NVT, storing frames at the default
   campaign's stride, as ``make demo`` runs it) on the same cell, and on ``paper.toml``'s cell;
4. reports the held-out force RMSE against CHGNet.

Goal: distilled ≥ 30× faster per step than CHGNet at a force RMSE ≤ 0.1 eV/Å (the
paper's criterion). Exits 1 when a material misses it. Also prints what the default campaign
could afford (ms/step → minutes for 40 ps of the sodium compounds, 60 ps of AgI) and the
paper's full settings (100–120 ps at 128/127/256 atoms).

    .venv/bin/python benchmarks/bench_mlff.py                         # all four, ~64 atoms
    .venv/bin/python benchmarks/bench_mlff.py --materials AgI --twojmax 8 --quadratic
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ramanscreen.flows.config import Material, load_campaign
from ramanscreen.tasks.md import MDSettings, run_md
from ramanscreen.tasks.mlff.data import TrainingSettings
from ramanscreen.tasks.mlff.distil import DistilSettings, distil
from ramanscreen.tasks.mlff.lammps_md import LammpsMDSettings, run_lammps_md
from ramanscreen.tasks.mlff.snap import FORCE_RMSE_LIMIT_EV_A, SnapSettings
from ramanscreen.tasks.structures import build_structure

CAMPAIGNS = Path(__file__).resolve().parents[1] / "deployments" / "campaigns"


def cases() -> dict[str, tuple[Material, Material]]:
    """Each material as the default campaign (``make demo``) and ``paper.toml`` run it: the
    structure builder, T, time step, output stride, cell size and production length come from
    there, not from numbers repeated here."""
    demo = {m.name: m for m in load_campaign(CAMPAIGNS / "default.toml").materials}
    paper = {m.name: m for m in load_campaign(CAMPAIGNS / "paper.toml").materials}
    return {name: (m, paper[name]) for name, m in demo.items()}


SPEEDUP_GOAL = 30.0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    known = cases()
    ap.add_argument("--materials", nargs="+", default=list(known), choices=list(known))
    ap.add_argument("--twojmax", type=int, default=6)
    ap.add_argument("--quadratic", action="store_true")
    ap.add_argument("--pair-cutoff-a", type=float, default=SnapSettings.pair_cutoff_A,
                    help="cutoff of the pair-spline term (Å); 0 = SNAP alone")
    ap.add_argument("--md-steps", type=int, default=TrainingSettings.md_steps,
                    help="teacher MD production steps for the training set (default: the campaign's)")
    ap.add_argument("--chgnet-steps", type=int, default=20)
    ap.add_argument("--snap-steps", type=int, default=2000)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the distillations here and reuse them (default: a temp dir); timings are always redone")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_start = _load()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_mlff_"))
    snap = SnapSettings(twojmax=args.twojmax, quadratic=args.quadratic, pair_cutoff_A=args.pair_cutoff_a)
    rows = []
    for name in args.materials:
        demo_m, paper_m = known[name]
        temperature_k, dt_fs = demo_m.temperature_k, demo_m.md.dt_fs
        demo_ps, paper_ps = demo_m.md.steps * dt_fs / 1e3, paper_m.md.steps * paper_m.md.dt_fs / 1e3
        # both engines store frames at the campaign's stride (every step for AgI at 10 fs, every 5th at 2 fs)
        every = demo_m.md.write_every
        atoms = build_structure(demo_m.structure, n_atoms=demo_m.n_atoms)
        work = root / name
        # the campaign's training set (TrainingSettings defaults), teacher on one thread
        ts = TrainingSettings(temperature_k=temperature_k, dt_fs=dt_fs, md_steps=args.md_steps, num_threads=1)
        t0 = time.perf_counter()
        res = distil(atoms, DistilSettings(training=ts, snap=snap), work)
        t_distil = time.perf_counter() - t0
        # baseline: CHGNet MD as the campaign runs it (NVT, energy + forces, one thread). CPU time of this
        # process is measured too: on a loaded machine it is the load-independent cost.
        c0 = time.process_time()
        base = run_md(atoms, MDSettings(temperature_k=temperature_k, dt_fs=dt_fs, steps=args.chgnet_steps,
                                        write_every=every, checkpoint_every=args.chgnet_steps, num_threads=1,
                                        calculator="chgnet"), work / "chgnet_timing", calculator=res.teacher,
                      restart=True)
        ms_chgnet = 1e3 * base.metadata["wall_time_s"] / args.chgnet_steps
        cpu_chgnet = 1e3 * (time.process_time() - c0) / args.chgnet_steps
        lmp = LammpsMDSettings(temperature_k=temperature_k, dt_fs=dt_fs, steps=args.snap_steps, write_every=every,
                               checkpoint_every=1000)
        c0 = time.process_time()
        snap_meta = run_lammps_md(atoms, res.potential, lmp, work / "snap_timing", restart=True).metadata
        cpu_snap = 1e3 * (time.process_time() - c0) / args.snap_steps
        # the run's whole wall time per step (LAMMPS + dump parsing + trajectory writing + checkpoints)
        ms_snap, ms_snap_lammps = snap_meta["wall_ms_per_step"], snap_meta["ms_per_step"]
        paper_atoms = build_structure(paper_m.structure, n_atoms=paper_m.n_atoms)
        c0 = time.process_time()
        paper_steps = max(args.snap_steps // 2, 100)
        ms_paper = run_lammps_md(paper_atoms, res.potential, LammpsMDSettings(
            temperature_k=temperature_k, dt_fs=dt_fs, steps=paper_steps, write_every=paper_m.md.write_every,
            checkpoint_every=1000), work / "snap_timing_paper", restart=True).metadata["wall_ms_per_step"]
        cpu_paper = 1e3 * (time.process_time() - c0) / paper_steps
        ho = res.potential.info["holdout_errors"]
        rmse = ho["force_rmse_eV_A"]
        speedup = ms_chgnet / ms_snap
        rows.append({
            "material": name, "T_K": temperature_k, "dt_fs": dt_fs, "atoms": len(atoms), "chgnet_ms": ms_chgnet,
            "snap_ms": ms_snap, "snap_ms_lammps_only": ms_snap_lammps, "speedup": speedup,
            "chgnet_cpu_ms": cpu_chgnet, "snap_cpu_ms": cpu_snap, "cpu_speedup": cpu_chgnet / cpu_snap, "force_rmse_eV_A": rmse,
            "force_mae_eV_A": ho["force_mae_eV_A"],
            "teacher_force_rms_eV_A": ho["force_rms_teacher_eV_A"], "energy_rmse_meV_atom": ho["energy_rmse_meV_atom"],
            "distil_s": t_distil, "paper_atoms": len(paper_atoms), "snap_ms_paper": ms_paper,
            "snap_cpu_ms_paper": cpu_paper, "twojmax": res.potential.settings.twojmax,
            "demo_md_min_cpu": demo_ps * 1e3 / dt_fs * cpu_snap / 6e4, "paper_md_min_cpu": paper_ps * 1e3 / dt_fs * cpu_paper / 6e4,
            "demo_ps": demo_ps, "demo_md_min": demo_ps * 1e3 / dt_fs * ms_snap / 6e4,
            "paper_ps": paper_ps, "paper_md_min": paper_ps * 1e3 / dt_fs * ms_paper / 6e4,
            "goal_met": bool(speedup >= SPEEDUP_GOAL and rmse <= FORCE_RMSE_LIMIT_EV_A),
            "potential": str(res.potential.path),
        })
        print(json.dumps(rows[-1]), flush=True)
    load_end = _load()
    console = Console(width=200)
    kind = (f"{'quadratic' if args.quadratic else 'linear'}, twojmax 4 or {args.twojmax} by held-out RMSE"
            if args.twojmax > 4 else f"twojmax {args.twojmax}")
    kind += f", pair spline to {args.pair_cutoff_a:g} Å" if args.pair_cutoff_a else ", no pair term"
    table = Table(title=f"Distilled SNAP ({kind}) vs CHGNet, one thread each; load average {load_start} → {load_end}")
    for col in ("material", "T (K)", "atoms", "CHGNet ms/step", "SNAP ms/step", "(LAMMPS only)", "speed-up",
                "CPU ms/step CHGNet", "CPU ms/step SNAP", "CPU speed-up", "force RMSE (eV/Å)",
                "teacher RMS (eV/Å)", "goal"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["material"], f"{r['T_K']:g}", str(r["atoms"]), f"{r['chgnet_ms']:.1f}", f"{r['snap_ms']:.2f}",
                      f"{r['snap_ms_lammps_only']:.2f}", f"{r['speedup']:.0f}×", f"{r['chgnet_cpu_ms']:.1f}",
                      f"{r['snap_cpu_ms']:.2f}", f"{r['cpu_speedup']:.0f}×", f"{r['force_rmse_eV_A']:.3f}",
                      f"{r['teacher_force_rms_eV_A']:.3f}",
                      "met" if r["goal_met"] else "[red]MISSED[/]")
    console.print(table)
    afford = Table(title="What a campaign can afford with the distilled potential (MD only, one core per material)")
    for col in ("material", "twojmax", "distillation (s, 0 = reused)", "demo target", "demo MD (min)", "(CPU-time based)",
                "paper cell", "SNAP ms/step", "paper length", "paper MD (min)", "(CPU-time based)"):
        afford.add_column(col, justify="right")
    for r in rows:
        afford.add_row(r["material"], str(r["twojmax"]), f"{r['distil_s']:.0f}", f"{r['demo_ps']:g} ps @ {r['atoms']}",
                       f"{r['demo_md_min']:.1f}", f"{r['demo_md_min_cpu']:.1f}", str(r["paper_atoms"]),
                       f"{r['snap_ms_paper']:.2f}", f"{r['paper_ps']:g} ps", f"{r['paper_md_min']:.1f}",
                       f"{r['paper_md_min_cpu']:.1f}")
    console.print(afford)
    console.print(f"goal: ≥ {SPEEDUP_GOAL:g}× faster per step at force RMSE ≤ {FORCE_RMSE_LIMIT_EV_A} eV/Å "
                  "(distilled potentials, not DFT; RMSE against the CHGNet teacher on held-out frames)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["goal_met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
