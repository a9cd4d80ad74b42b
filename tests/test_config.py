"""Campaign files: every shipped file validates, and every kind of mistake is one line naming
the file and the field (fast; no Prefect server, no MD)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ramanscreen.flows.config import deep_merge, load_campaign, n_alpha_frames, parse_campaign
from ramanscreen.tasks.common import InputError

REPO = Path(__file__).resolve().parents[1]
CAMPAIGNS = REPO / "deployments" / "campaigns"

GOOD = """
name = "t"
results_root = "out"
[mlff]
calculator = "chgnet"
[md]
dt_fs = 2.0
steps = 200
alpha_stride = 2
[reference]
n_train = 8
n_test = 2
[spectrum]
omega_min_cm1 = 200.0
omega_c_cm1 = 500.0
host_window_cm1 = [500.0, 1500.0]
[[materials]]
name = "A"
structure = "Na3PS4"
n_atoms = 16
temperature_k = 900
mobile = ["Na"]
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["default", "paper", "quick"])
def test_shipped_campaigns_validate(name: str) -> None:
    c = load_campaign(CAMPAIGNS / f"{name}.toml")
    assert c.name == name
    assert {m.name for m in c.materials} == {"AgI", "Na3SbS4", "Na3SbS4-W", "Na3PS4"}
    temps = {m.name: m.temperature_k for m in c.materials}
    assert temps == {"AgI": 500.0, "Na3SbS4": 300.0, "Na3SbS4-W": 300.0, "Na3PS4": 900.0}
    assert c.mlff["calculator"] == "chgnet" and c.reference["backend"] == "dipole"
    assert {m.mobile[0] for m in c.materials} == {"Ag", "Na"}


def test_paper_campaign_holds_the_paper_settings() -> None:
    c = load_campaign(CAMPAIGNS / "paper.toml")
    m = {x.name: x for x in c.materials}
    assert [m[k].n_atoms for k in ("AgI", "Na3SbS4", "Na3SbS4-W", "Na3PS4")] == [128, 128, 127, 256]
    assert m["AgI"].md["dt_fs"] == 10.0 and m["AgI"].md["steps"] * 10.0 / 1000 == 120.0
    for k in ("Na3SbS4", "Na3SbS4-W", "Na3PS4"):
        assert m[k].md["dt_fs"] == 2.0 and m[k].md["steps"] * 2.0 / 1000 == 100.0
    assert c.reference["n_train"] == 300
    assert all(x.md["alpha_stride"] == 10 for x in c.materials)


def test_quick_profile_is_a_deep_merge(tmp_path: Path) -> None:
    full = load_campaign(CAMPAIGNS / "default.toml")
    quick = load_campaign(CAMPAIGNS / "default.toml", quick=True)
    assert quick.name == "default-quick" and quick.quick
    q = {m.name: m for m in quick.materials}
    f = {m.name: m for m in full.materials}
    assert q["AgI"].n_atoms == 32 and q["AgI"].md["dt_fs"] == 10.0 and q["AgI"].md["steps"] == 60
    assert q["Na3PS4"].md["steps"] == 200 and f["Na3PS4"].md["steps"] == 2000
    assert quick.reference["backend"] == "dipole" and quick.reference["n_train"] == 8
    assert quick.cluster == full.cluster
    # the quick profile gives different run ids, so its results never overwrite the full ones
    assert q["AgI"].fingerprint(quick) != f["AgI"].fingerprint(full)
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_defaults_and_temperature_list(tmp_path: Path) -> None:
    text = GOOD.replace("temperature_k = 900", "temperatures_k = [600, 900]")
    c = load_campaign(write(tmp_path, text))
    assert [m.name for m in c.materials] == ["A-600K", "A-900K"]
    assert c.results_root == (Path.cwd() / "out").resolve()
    assert c.model["committee"] == 4 and c.transport["method"] == "kinisi"
    assert n_alpha_frames(c.materials[0].md) == 101
    # the run id changes with any setting that changes the results, and only then
    a = c.materials[0].fingerprint(c)
    c2 = load_campaign(write(tmp_path, text.replace("n_train = 8", "n_train = 9"), "d.toml"))
    assert c2.materials[0].fingerprint(c2) != a
    c3 = load_campaign(write(tmp_path, text.replace('name = "t"', 'name = "u"'), "e.toml"))
    assert c3.materials[0].fingerprint(c3) == a


def test_structure_file_relative_to_campaign(tmp_path: Path) -> None:
    from ramanscreen.tasks.structures import build_structure, write_structure

    write_structure(build_structure("Na3PS4", n_atoms=16), tmp_path / "cells" / "nps.cif")
    c = load_campaign(write(tmp_path, GOOD.replace('structure = "Na3PS4"', 'structure = "cells/nps.cif"')))
    assert c.materials[0].structure == str((tmp_path / "cells" / "nps.cif").resolve())


BAD = [
    # (replace this, with that, field named in the error)
    ('name = "t"', 'name = "t"\ncolour = "red"', "colour"),
    ('name = "t"', 'name = "a b"', "name"),
    ('calculator = "chgnet"', 'calculator = "chgnet"\ndevice = "cpu"', "mlff.device"),
    ("dt_fs = 2.0", "dt_fs = -2.0", "md.dt_fs"),
    ("dt_fs = 2.0", 'dt_fs = "2"', "md.dt_fs"),
    ("steps = 200", "steps = 200\nthermostat = 1", "md.thermostat"),
    ("n_train = 8", "n_train = 1", "reference.n_train"),
    ("n_train = 8", "n_train = 500", "materials[0].steps"),
    ("n_train = 8", "n_train = 8\nbackend = 3", "reference.backend"),
    ("omega_min_cm1 = 200.0", "omega_min_cm1 = 5.0", "materials[0].steps"),
    ("host_window_cm1 = [500.0, 1500.0]", "host_window_cm1 = [1500.0, 500.0]", "spectrum.host_window_cm1"),
    ("temperature_k = 900", "temperature_k = -5", "materials[0].temperature_k"),
    ("temperature_k = 900", "temperature_k = 900\ntemperatures_k = [300]", "materials[0].temperature_k"),
    ("temperature_k = 900", "", "materials[0].temperature_k"),
    ('mobile = ["Na"]', 'mobile = "Na"', "materials[0].mobile"),
    ('mobile = ["Na"]', "", "materials[0].mobile"),
    ("n_atoms = 16", "n_atoms = 16\nspin = 1", "materials[0].spin"),
    ("n_atoms = 16", "n_atoms = 0", "materials[0].n_atoms"),
    ('structure = "Na3PS4"', 'structure = "unobtainium.cif"', "materials[0].structure"),
    ("[[materials]]", '[cluster]\nkind = "cloud"\n[[materials]]', "cluster.kind"),
    ("[[materials]]", "[model]\nhypers = { cutof_A = 4.0 }\n[[materials]]", "model.hypers.cutof_A"),
    ("[[materials]]", '[transport]\nmethod = "magic"\n[[materials]]', "transport.method"),
]


@pytest.mark.parametrize(("old", "new", "field"), BAD, ids=[b[2] + ":" + b[1][:18] for b in BAD])
def test_malformed_campaign_names_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(InputError) as exc:
        load_campaign(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}: "), msg


def test_duplicate_materials_and_empty_list(tmp_path: Path) -> None:
    dup = GOOD + GOOD[GOOD.index("[[materials]]"):]
    with pytest.raises(InputError, match=r"materials\[1\]\.name: duplicate"):
        load_campaign(write(tmp_path, dup))
    with pytest.raises(InputError, match=r": materials: no materials"):
        parse_campaign({"name": "x"}, file="x.toml")


def test_quick_flag_without_profile_and_unknown_quick_material(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.toml: quick: this campaign has no \[quick\]"):
        load_campaign(write(tmp_path, GOOD), quick=True)
    bad = GOOD + "\n[quick.materials.B]\nn_atoms = 16\n"
    with pytest.raises(InputError, match=r"quick.materials.B: no material of that name"):
        load_campaign(write(tmp_path, bad), quick=True)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid TOML"):
        load_campaign(write(tmp_path, "name = \n"))
    with pytest.raises(InputError, match="no such campaign file"):
        load_campaign(tmp_path / "nope.toml")


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """`ramanscreen screen` rejects a bad file before starting a server or writing anything."""
    path = write(tmp_path, GOOD.replace("temperature_k = 900", "temperature_k = \"hot\""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "screen", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "materials[0].temperature_k" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "out").exists()  # no partial results
