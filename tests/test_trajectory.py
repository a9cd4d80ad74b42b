"""Trajectory container: round trips through the formats ASE reads, dt_fs rules, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.trajectory import Trajectory


def _frames(n_frames: int = 6, *, velocities: bool = False, time_fs: float | None = None, rng=None) -> list[Atoms]:
    rng = rng or np.random.default_rng(0)
    base = rng.uniform(0, 8, (4, 3))
    out = []
    for k in range(n_frames):
        a = Atoms("Na2PS", positions=base + 0.05 * k, cell=[[8, 0, 0], [0.5, 8, 0], [0, 0, 9]], pbc=True)
        if velocities:
            a.set_velocities(rng.normal(0, 0.01, (4, 3)))  # ASE units
        if time_fs is not None:
            a.info["time_fs"] = time_fs * k
            a.info["md_step"] = 5 * k
        out.append(a)
    return out


def _assert_same(traj: Trajectory, frames: list[Atoms], atol: float = 1e-6) -> None:
    assert len(traj) == len(frames)
    assert traj.symbols == frames[0].get_chemical_symbols()
    np.testing.assert_allclose(traj.positions_A, np.stack([a.positions for a in frames]), atol=atol)
    np.testing.assert_allclose(traj.cells_A, np.stack([a.cell.array for a in frames]), atol=atol)


def test_from_atoms_fields_and_units() -> None:
    frames = _frames(velocities=True)
    traj = Trajectory.from_atoms(frames, dt_fs=2.0)
    _assert_same(traj, frames)
    assert traj.dt_fs == 2.0
    np.testing.assert_allclose(traj.time_fs, 2.0 * np.arange(6))
    from ase import units

    # ASE velocity unit is Å per (ASE time unit); 1 fs = units.fs ASE time units
    np.testing.assert_allclose(traj.velocities_A_fs[3], frames[3].get_velocities() * units.fs)
    np.testing.assert_allclose(traj.masses_amu, frames[0].get_masses())


def test_traj_round_trip_infers_dt_and_keeps_velocities(tmp_path) -> None:
    frames = _frames(velocities=True, time_fs=10.0)
    traj = Trajectory.from_atoms(frames)
    assert traj.dt_fs == 10.0
    path = traj.write(tmp_path / "md.traj")
    back = Trajectory.from_file(path)
    _assert_same(back, frames)
    assert back.dt_fs == 10.0
    np.testing.assert_allclose(back.velocities_A_fs, traj.velocities_A_fs, rtol=1e-12)
    np.testing.assert_array_equal(back.md_step, 5 * np.arange(6))
    # a user dt that contradicts the file is refused, naming the field (the CLI maps it to --dt-fs)
    with pytest.raises(InputError, match=r"dt_fs: 2 fs contradicts the file's frame spacing of 10 fs") as exc:
        Trajectory.from_file(path, dt_fs=2.0)
    assert "--" not in str(exc.value)


def test_extxyz_round_trip_needs_dt(tmp_path) -> None:
    frames = _frames(velocities=True)
    path = tmp_path / "run.xyz"
    write(path, frames, format="extxyz")
    with pytest.raises(InputError) as exc:
        Trajectory.from_file(path)
    assert "run.xyz" in str(exc.value) and exc.value.field == "dt_fs" and "--" not in str(exc.value)
    traj = Trajectory.from_file(path, dt_fs=1.5)
    _assert_same(traj, frames)
    assert traj.velocities_A_fs is not None
    assert traj.every(2).dt_fs == 3.0 and len(traj.every(2)) == 3


def test_xdatcar_round_trip(tmp_path) -> None:
    frames = _frames()
    path = tmp_path / "XDATCAR"
    write(path, frames, format="vasp-xdatcar")
    traj = Trajectory.from_file(path, dt_fs=2.0)
    # XDATCAR stores wrapped fractional coordinates, grouped by element: equal modulo the lattice
    assert sorted(traj.symbols) == sorted(frames[0].get_chemical_symbols())
    order = np.argsort(frames[0].get_chemical_symbols(), kind="stable")
    diff = traj.positions_A - np.stack([a.positions[order] for a in frames])
    frac = diff @ np.linalg.inv(frames[0].cell.array)
    np.testing.assert_allclose(frac - np.round(frac), 0.0, atol=1e-6)
    np.testing.assert_allclose(traj.cells_A, np.stack([a.cell.array for a in frames]), atol=1e-6)
    assert traj.velocities_A_fs is None


LAMMPS_DUMP = """\
ITEM: TIMESTEP
{step}
ITEM: NUMBER OF ATOMS
3
ITEM: BOX BOUNDS pp pp pp
0.0 10.0
0.0 11.0
0.0 12.0
ITEM: ATOMS id type x y z vx vy vz
1 1 {x1:.4f} 2.0 3.0 1.5 0.0 0.0
3 2 5.0 5.0 5.0 0.0 -2.0 0.0
2 1 7.0 8.0 {z2:.4f} 0.0 0.0 3.0
"""


def _write_dump(path, n_frames: int = 4) -> None:
    text = "".join(LAMMPS_DUMP.format(step=100 * k, x1=1.0 + 0.1 * k, z2=9.0 + 0.2 * k) for k in range(n_frames))
    path.write_text(text)


def test_lammps_dump_with_type_map(tmp_path) -> None:
    path = tmp_path / "run.lammpstrj"
    _write_dump(path)
    traj = Trajectory.from_file(path, dt_fs=0.1, type_map=["Li", "Cl"])
    # ASE sorts atoms by id: 1 (type 1), 2 (type 1), 3 (type 2)
    assert traj.symbols == ["Li", "Li", "Cl"]
    np.testing.assert_allclose(traj.cells_A[0], np.diag([10.0, 11.0, 12.0]))
    np.testing.assert_allclose(traj.positions_A[:, 0, 0], 1.0 + 0.1 * np.arange(4), atol=1e-9)
    np.testing.assert_allclose(traj.positions_A[:, 1, 2], 9.0 + 0.2 * np.arange(4), atol=1e-9)
    # metal units: velocities in Å/ps -> Å/fs
    np.testing.assert_allclose(traj.velocities_A_fs[0], [[1.5e-3, 0, 0], [0, 0, 3e-3], [0, -2e-3, 0]], atol=1e-12)


def test_lammps_dump_without_elements_asks_for_type_map(tmp_path) -> None:
    path = tmp_path / "run.dump"
    _write_dump(path)
    with pytest.raises(InputError, match="type_map"):
        Trajectory.from_file(path, dt_fs=0.1)


def test_iter_chunks_streams_the_same_frames(tmp_path) -> None:
    frames = _frames(7, velocities=True, time_fs=4.0)
    full = Trajectory.from_atoms(frames)
    path = full.write(tmp_path / "long.traj")
    chunks = list(Trajectory.iter_chunks(path, 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert all(c.dt_fs == 4.0 for c in chunks)
    np.testing.assert_allclose(np.concatenate([c.positions_A for c in chunks]), full.positions_A)
    np.testing.assert_allclose(np.concatenate([c.time_fs for c in chunks]), full.time_fs)
    # without recorded time, dt_fs is required and time continues across chunks
    xyz = tmp_path / "long.xyz"
    write(xyz, _frames(5), format="extxyz")
    with pytest.raises(InputError, match="dt_fs"):
        next(Trajectory.iter_chunks(xyz, 2))
    times = np.concatenate([c.time_fs for c in Trajectory.iter_chunks(xyz, 2, dt_fs=2.0)])
    np.testing.assert_allclose(times, 2.0 * np.arange(5))


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage\xff" * 50, b"not a trajectory\n"])
def test_unreadable_file_is_one_input_error(tmp_path, content) -> None:
    path = tmp_path / "bad.xyz"
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        Trajectory.from_file(path, dt_fs=1.0)
    assert "bad.xyz" in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file_and_changing_atoms(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        Trajectory.from_file(tmp_path / "nope.traj")
    frames = _frames(3)
    frames[2] = frames[2][:3]
    with pytest.raises(InputError, match="frame 2"):
        Trajectory.from_atoms(frames, dt_fs=1.0)


def test_sidecar_json_gives_dt(tmp_path) -> None:
    path = tmp_path / "md.xyz"
    write(path, _frames(4), format="extxyz")
    (tmp_path / "md.json").write_text('{"dt_fs": 2.0, "write_every": 5}')
    assert Trajectory.from_file(path).dt_fs == 10.0
    (tmp_path / "md.json").write_text('{"dt_fs": 2.0, "write_every": 5, "frame_dt_fs": 10.0}')
    assert Trajectory.from_file(path).dt_fs == 10.0
