"""Benchmark: α prediction throughput for 128-atom frames at the default λ-SOAP hyperparameters.

Baseline (measured in the same run): the textbook path, featomic's
``EquivariantPowerSpectrum`` computed per structure, summed over atoms, dotted with the
ridge weights. Candidates: the same plain path batched over a chunk of frames, and the
fast path that ``AlphaModel.predict`` uses (ridge weights contracted into the spherical
expansion, no power spectrum), alone and with the whole bootstrap committee.

Accuracy is measured for every path on held-out frames against the embedded Thole
point-dipole reference (ramanscreen.tasks.reference), and the fast path is checked against the
plain one frame by frame.

    .venv/bin/python benchmarks/bench_alpha.py [--n-train 48] [--n-test 16] [--n-frames 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def _frames(n: int, seed: int):
    from ramanscreen.tasks.structures import build_structure

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = build_structure("AgI", seed=seed * 10_000 + k)  # 128 atoms, Ag disordered
        atoms.positions += rng.normal(0.0, 0.2, atoms.positions.shape)
        out.append(atoms)
    return out


def _time_per_frame(fn, frames, chunk: int, repeats: int) -> tuple[float, np.ndarray]:
    """Median over repeats of the wall time per frame (s), and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        parts = [fn(frames[i:i + chunk]) for i in range(0, len(frames), chunk)]
        times.append((time.perf_counter() - start) / len(frames))
        result = np.concatenate(parts, axis=-3)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=48, help="training frames (128 atoms)")
    parser.add_argument("--n-test", type=int, default=16, help="held-out frames for the accuracy columns")
    parser.add_argument("--n-frames", type=int, default=32, help="frames timed per path")
    parser.add_argument("--chunk", type=int, default=32, help="frames per batch for the batched paths")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median reported)")
    parser.add_argument("--n-committee", type=int, default=8)
    args = parser.parse_args()

    from ramanscreen.tasks.polarizability import AlphaModel, SOAPHypers, alpha_metrics, spherical_to_alpha
    from ramanscreen.tasks.reference import get_backend

    console = Console(width=200)
    hypers = SOAPHypers()
    backend = get_backend("dipole")
    with console.status("reference α (embedded Thole dipole model) and fit…"):
        train, test = _frames(args.n_train, 1), _frames(args.n_test, 2)
        alpha_train = np.array([backend.compute(a).alpha_A3 for a in train])
        alpha_test = np.array([backend.compute(a).alpha_A3 for a in test])
        model = AlphaModel.fit(train, alpha_train, hypers=hypers, n_committee=args.n_committee, seed=0,
                               method=backend.method)
    timed = _frames(args.n_frames, 3)
    featurizer = model.featurizer
    n_atoms = np.array([len(f) for f in timed[:1]], dtype=float)

    def plain(frames):
        """EquivariantPowerSpectrum → sum over atoms → ridge (weights of the full model)."""
        X0, X2 = featurizer.features(frames)
        y0 = X0 @ model.weights[0][0] + model._intercepts(frames)[0]
        return spherical_to_alpha(y0[:, None], X2 @ model.weights[2][0])

    paths = [
        ("plain EPS + ridge, 1 frame/call (baseline)", plain, 1),
        (f"plain EPS + ridge, {args.chunk} frames/call", plain, args.chunk),
        (f"fast = AlphaModel.predict, {args.chunk} frames/call", model.predict, args.chunk),
        ("fast, 1 frame/call", model.predict, 1),
        (f"fast + {args.n_committee} committee members, {args.chunk} frames/call",
         lambda fr: model.predict_with_committee(fr)[0], args.chunk),
    ]
    for _, fn, _ in paths:  # warm-up (splines, CG cache, BLAS)
        fn(timed[:2])
    rows = []
    with console.status("timing…"):
        for name, fn, chunk in paths:
            per_frame, result = _time_per_frame(fn, timed, chunk, args.repeats)
            pred_test = np.concatenate([fn(test[i:i + args.chunk]) for i in range(0, len(test), args.chunk)])
            rows.append((name, per_frame, result, alpha_metrics(alpha_test, pred_test)))
    base_time, base_result = rows[0][1], rows[0][2]

    table = Table(title=f"α prediction for {len(timed[0])}-atom α-AgI frames at the default {hypers}: "
                        f"{args.n_frames} frames timed, median of {args.repeats}; speed-up and deviation against "
                        f"the baseline row; R²/RMSE on {args.n_test} held-out frames")
    for col in ("path", "ms/frame", "frames/s", "speed-up", "max|Δα|/max|α|",
                "R² diag", "R² off", "RMSE diag Å³", "RMSE off Å³"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name, per_frame, result, m in rows:
        deviation = float(np.abs(result - base_result).max() / np.abs(base_result).max())
        table.add_row(
            name, f"{1e3 * per_frame:.2f}", f"{1 / per_frame:.1f}", f"{base_time / per_frame:.1f}×", f"{deviation:.1e}",
            f"{m['r2_diag']:.4f}", f"{m['r2_offdiag']:.4f}", f"{m['rmse_diag_A3']:.4g}", f"{m['rmse_offdiag_A3']:.4g}",
        )
    console.print(table)
    console.print(f"training: {args.n_train} frames of {int(n_atoms[0])} atoms, α from {model.meta['alpha_method']}; "
                  "all rows use the same fitted weights.")


if __name__ == "__main__":
    main()
