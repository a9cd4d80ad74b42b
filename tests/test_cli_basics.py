"""The CLI shell: help lists commands; errors are one line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

from ramanscreen.tasks.common import InputError, atomic_write


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command() -> None:
    from ramanscreen.flows import cli

    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    cli._load_commands()
    import typer

    names = typer.main.get_command(cli.app).commands.keys()
    assert names, "no commands registered"
    for name in names:
        assert name in out.stdout


def test_input_error_is_one_line() -> None:
    e = InputError("bad\nthing", file="a.toml", field="x", fix="do y")
    assert "\n" not in str(e)
    assert str(e) == "a.toml: x: bad thing (fix: do y)"


def test_atomic_write_leaves_no_partial_file(tmp_path) -> None:
    target = tmp_path / "out.bin"
    try:
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("crash mid-write")
    except RuntimeError:
        pass
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_have_ordinary_permissions(tmp_path) -> None:
    import os

    from ramanscreen.tasks.common import atomic_path

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("y")
    finally:
        os.umask(mask)
    for name in ("a.txt", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
