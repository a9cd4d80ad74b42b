"""Experimental Raman spectra: readers, baseline and normalisation, and the comparison with a
computed spectrum.

Readers (:func:`read_spectrum`, format from the suffix or ``fmt``):

* ``text`` (.csv .txt .dat .tsv .xy .asc): two columns, Raman shift (cm⁻¹) and intensity, any
  delimiter (comma, tab, semicolon, spaces; a semicolon file may use decimal commas), with or
  without a header, comment lines starting with ``#``, ``%``, ``;``, ``!`` or ``//``. A header
  naming ``freq_cm1`` and ``intensity`` (the project's own spectrum tables) picks those columns.
* ``parquet``: a table with ``freq_cm1`` and ``intensity`` (what ``tasks.spectra.write_spectrum``
  and ``import`` write).
* ``jcamp`` (.jdx .dx .jcamp): JCAMP-DX 4.24 ``##XYDATA=(X++(Y..Y))`` in AFFN or ASDF
  (SQZ/DIF/DUP, with the DIF Y-check) form, or ``##XYPOINTS=(XY..XY)``; ``##XFACTOR``/``##YFACTOR``
  applied; ``##XUNITS`` must be 1/CM.
* ``spc`` (.spc): Thermo-Galactic SPC, read with ``spc-io``; X must be Raman shift, wavenumber
  or unstated (taken as cm⁻¹).
* ``wdf`` (.wdf): Renishaw WiRE, read with ``renishawWiRE`` (the optional extra
  ``experiment-wdf``; without it the reader says how to install it).

Files with several spectra (SPC multifiles, WiRE maps) give their mean unless ``index`` picks one.
Every malformed file raises :class:`InputError` with one line naming the file and the problem.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "s.txt"
>>> _ = p.write_text("# Raman, 532 nm\\nshift;counts\\n100,5;1,0\\n101,5;2,0\\n102,5;4,0\\n103,5;2,0\\n104,5;1,0\\n")
>>> s = read_spectrum(p)
>>> s.freq_cm1[:2].tolist(), float(s.intensity.max())
([100.5, 101.5], 4.0)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError, write_table

FORMATS = ("text", "parquet", "jcamp", "spc", "wdf")
_SUFFIX = {
    ".csv": "text", ".txt": "text", ".dat": "text", ".tsv": "text", ".xy": "text", ".asc": "text",
    ".parquet": "parquet", ".jdx": "jcamp", ".dx": "jcamp", ".jcamp": "jcamp", ".jcm": "jcamp",
    ".spc": "spc", ".wdf": "wdf",
}
#: Fewest points a spectrum must have.
MIN_POINTS = 5
#: Defaults of ``experiment compare`` (range, grid, baseline, peak-matching tolerance).
COMPARE_RANGE_CM1 = (100.0, 1000.0)
COMPARE_GRID_CM1 = 1.0
COMPARE_BASELINE = "asls"
MATCH_TOLERANCE_CM1 = 30.0
NORMALIZATIONS = ("none", "max", "area")


@dataclasses.dataclass
class Spectrum:
    """A Raman spectrum on ascending ``freq_cm1`` (Raman shift, cm⁻¹)."""

    freq_cm1: np.ndarray
    intensity: np.ndarray
    source: str
    fmt: str
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}", file=path, field="--input-format", fix=f"use one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX:
        raise InputError(f"cannot tell the format from the suffix {suffix!r}", file=path, field="--input-format",
                         fix=f"pass --input-format ({', '.join(FORMATS)})")
    return _SUFFIX[suffix]


def read_spectrum(path: str | os.PathLike[str], fmt: str | None = None, *, index: int | None = None) -> Spectrum:
    """Read a spectrum file (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", file=path, fix="check the path")
    kind = detect_format(path, fmt)
    if kind == "spc":
        x, y, meta = _read_spc(path, index=index)
    elif kind == "wdf":
        x, y, meta = _read_wdf(path, index=index)
    else:
        x, y, meta = {"text": _read_text, "parquet": _read_parquet, "jcamp": read_jcamp}[kind](path)
    return _finish(path, kind, x, y, meta)


def _finish(path: Path, kind: str, x: Any, y: Any, meta: dict[str, str]) -> Spectrum:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if len(x) != len(y):
        raise InputError(f"{len(x)} Raman shifts but {len(y)} intensities", file=path, fix="the file is damaged")
    if len(x) < MIN_POINTS:
        raise InputError(f"only {len(x)} data points (need ≥ {MIN_POINTS})", file=path, fix="pass a whole spectrum")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise InputError(f"non-finite value at point {int(np.argmax(bad)) + 1}", file=path, fix="remove or repair that point")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    dup = np.flatnonzero(np.diff(x) == 0)
    if len(dup):
        raise InputError(f"Raman shift {x[dup[0]]:g} cm⁻¹ appears twice", file=path,
                         fix="one intensity per Raman shift (merge or drop repeated rows)")
    return Spectrum(x, y, str(path), kind, meta)


# --------------------------------------------------------------------------------------------
# Text and Parquet
# --------------------------------------------------------------------------------------------

_COMMENT = ("#", "%", ";", "!", "//")


def _split(line: str, delim: str | None) -> list[str]:
    return [t for t in (line.split(delim) if delim else line.split()) if t.strip()] if delim else line.split()


def _read_text(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="strict").splitlines()
    except UnicodeDecodeError:
        lines = path.read_text(encoding="latin-1").splitlines()
    body = [(i + 1, ln.strip()) for i, ln in enumerate(lines) if ln.strip() and not ln.strip().startswith(_COMMENT)]
    if not body:
        raise InputError("no data lines", file=path, fix="write two columns: Raman shift (cm-1) and intensity")
    sample = body[min(1, len(body) - 1)][1]
    delim: str | None = None
    for d in ("\t", ";", ","):
        if d in sample:
            delim = d
            break
    decimal_comma = delim == ";" and "," in sample or (delim == "\t" and re.search(r"\d,\d", sample) is not None)

    def tokens(line: str) -> list[str]:
        parts = [t.strip() for t in line.split(delim)] if delim else line.split()
        parts = [t for t in parts if t]
        return [t.replace(",", ".") for t in parts] if decimal_comma else parts

    header: list[str] | None = None
    xs: list[float] = []
    ys: list[float] = []
    xcol, ycol = 0, 1
    for lineno, line in body:
        parts = tokens(line)
        try:
            vals = [float(t) for t in parts]
        except ValueError:
            if not xs and header is None:
                header = [t.strip().strip('"').strip("'") for t in parts]
                if "freq_cm1" in header and "intensity" in header:
                    xcol, ycol = header.index("freq_cm1"), header.index("intensity")
                continue
            raise InputError(f"line {lineno}: cannot read numbers from {line[:60]!r}", file=path,
                             fix="every data line needs a Raman shift and an intensity") from None
        if len(vals) <= max(xcol, ycol):
            raise InputError(f"line {lineno}: {len(vals)} column(s), need at least {max(xcol, ycol) + 1}", file=path,
                             fix="write two columns: Raman shift (cm-1) and intensity")
        xs.append(vals[xcol])
        ys.append(vals[ycol])
    meta = {"columns": ",".join(header) if header else "(no header)", "delimiter": repr(delim or "whitespace")}
    return np.array(xs), np.array(ys), meta


def _read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read Parquet: {' '.join(str(exc).split())[:120]}", file=path, fix="pass a spectrum table") from None
    for col in ("freq_cm1", "intensity"):
        if col not in table.column_names:
            raise InputError(f"no '{col}' column (columns: {', '.join(table.column_names[:8])})", file=path, field=col,
                             fix="pass a spectrum table with freq_cm1 and intensity")
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if len(v) < 400}
    return np.asarray(table.column("freq_cm1")), np.asarray(table.column("intensity")), meta


# --------------------------------------------------------------------------------------------
# JCAMP-DX
# --------------------------------------------------------------------------------------------

_SQZ = {"@": 0, **{c: i + 1 for i, c in enumerate("ABCDEFGHI")}, **{c: -(i + 1) for i, c in enumerate("abcdefghi")}}
_DIF = {"%": 0, **{c: i + 1 for i, c in enumerate("JKLMNOPQR")}, **{c: -(i + 1) for i, c in enumerate("jklmnopqr")}}
_DUP = {**{c: i + 1 for i, c in enumerate("STUVWXYZ")}, "s": 9}
_AFFN_RE = re.compile(r"^[\s,;]*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[\s,;]*)+$")


def _label(raw: str) -> str:
    return re.sub(r"[\s\-/_]", "", raw).upper()


def decode_asdf_line(line: str) -> tuple[list[float], bool]:
    """Decode one JCAMP-DX data line (AFFN, PAC, SQZ, DIF, DUP) into numbers.

    Returns the values and whether the line ended in DIF form (then the next line repeats its
    last value as a Y-check). The JCAMP-DX 4.24 example: the ordinates 1 2 3 3 2 1 0 −1 −2 −3 as
    SQZ ``ABCCBA@abc``, DIF ``AJJ%jjjjjj`` and DIFDUP ``AJT%jX``:

    >>> decode_asdf_line("AJT%jX")
    ([1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0], True)
    >>> decode_asdf_line("ABCCBA@abc")[0] == decode_asdf_line("1 2 3 3 2 1 0 -1 -2 -3")[0]
    True
    """
    line = line.split("$$", 1)[0].strip()
    if _AFFN_RE.match(line):
        return [float(t) for t in re.split(r"[\s,;]+", line.strip(" ,;")) if t], False
    tokens: list[tuple[str, str]] = []  # (kind, digits) with kind abs | dif | dup
    for ch in line:
        if ch in " \t,;":
            tokens.append(("sep", ""))
        elif ch.isdigit() or ch == ".":
            if not tokens or tokens[-1][0] == "sep":
                tokens.append(("abs", ch))
            else:
                kind, text = tokens[-1]
                tokens[-1] = (kind, text + ch)
        elif ch in "+-":
            tokens.append(("abs", ch))
        elif ch in _SQZ:
            tokens.append(("abs", str(_SQZ[ch]) if _SQZ[ch] >= 0 else f"-{-_SQZ[ch]}"))
        elif ch in _DIF:
            tokens.append(("dif", str(_DIF[ch]) if _DIF[ch] >= 0 else f"-{-_DIF[ch]}"))
        elif ch in _DUP:
            tokens.append(("dup", str(_DUP[ch])))
        else:
            raise ValueError(f"unexpected character {ch!r}")
    values: list[float] = []
    last_kind, last_delta = "abs", 0.0
    for kind, text in tokens:
        if kind == "sep" or text in ("", "+", "-"):
            continue
        if kind == "abs":
            values.append(float(text))
            last_kind = "abs"
        elif kind == "dif":
            if not values:
                raise ValueError("a difference (DIF) value with nothing before it")
            last_delta = float(text)
            values.append(values[-1] + last_delta)
            last_kind = "dif"
        else:
            if not values:
                raise ValueError("a repeat (DUP) count with nothing before it")
            for _ in range(int(text) - 1):
                values.append(values[-1] + last_delta if last_kind == "dif" else values[-1])
    return values, last_kind == "dif"


def _jcamp_blocks(text: str) -> list[dict[str, Any]]:
    """LDRs of each block: {label: value}, with the data lines under '_data'/'_data_label'."""
    blocks: list[dict[str, Any]] = [{}]
    current: dict[str, Any] = blocks[0]
    data_label = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if line.startswith("##"):
            label, _, value = line[2:].partition("=")
            key = _label(label)
            value = value.split("$$", 1)[0].strip()
            if key == "TITLE" and current.get("TITLE") is not None and current.get("_data"):
                current = {}
                blocks.append(current)
            if key == "END":
                data_label = None
                continue
            current[key] = value
            if key in ("XYDATA", "XYPOINTS", "PEAKTABLE"):
                data_label = key
                current["_data_label"] = key
                current["_data"] = []
            else:
                data_label = None
        elif data_label is not None and line.strip():
            current["_data"].append((lineno, line))
    return [b for b in blocks if b]


def _float_ldr(block: dict[str, Any], key: str, path: Path, default: float | None = None) -> float:
    if key not in block:
        if default is not None:
            return default
        raise InputError(f"##{key}= is missing", file=path, field=key, fix="a JCAMP-DX XYDATA block needs it")
    try:
        return float(block[key])
    except ValueError:
        raise InputError(f"##{key}={block[key]!r} is not a number", file=path, field=key, fix="repair the header") from None


def read_jcamp(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Read the first spectrum of a JCAMP-DX file (see the module docstring)."""
    path = Path(path)
    text = path.read_text(encoding="latin-1")
    if "##" not in text:
        raise InputError("no JCAMP-DX labels (##...=) found", file=path, fix="pass a JCAMP-DX file or use --format text")
    blocks = [b for b in _jcamp_blocks(text) if b.get("_data")]
    if not blocks:
        raise InputError("no ##XYDATA= or ##XYPOINTS= data", file=path, fix="the file holds no spectrum")
    b = blocks[0]
    xunits = b.get("XUNITS", "").strip().upper()
    if xunits and xunits not in ("1/CM", "CM-1", "CM^-1", "RAMAN SHIFT", "WAVENUMBER"):
        raise InputError(f"##XUNITS={b['XUNITS']} (need Raman shift in 1/CM)", file=path, field="XUNITS",
                         fix="convert the X axis to Raman shift in cm-1")
    xfac = _float_ldr(b, "XFACTOR", path, 1.0)
    yfac = _float_ldr(b, "YFACTOR", path, 1.0)
    form = b[b["_data_label"]].replace(" ", "").upper()
    meta = {"title": b.get("TITLE", ""), "jcamp_version": b.get("JCAMPDX", ""), "data_type": b.get("DATATYPE", ""),
            "data_form": form, "xunits": xunits or "(not stated: taken as 1/CM)"}
    if not xunits:
        warnings.warn(f"{path}: ##XUNITS missing; the X axis is taken as Raman shift in cm-1", UserWarning, stacklevel=2)
    if b["_data_label"] == "XYDATA":
        if not form.startswith("(X++(Y..Y))"):
            raise InputError(f"unsupported ##XYDATA={b['XYDATA']}", file=path, field="XYDATA",
                             fix="only (X++(Y..Y)) is read; export XYPOINTS or XYDATA=(X++(Y..Y))")
        first = _float_ldr(b, "FIRSTX", path)
        last = _float_ldr(b, "LASTX", path)
        npts = int(_float_ldr(b, "NPOINTS", path))
        ys: list[float] = []
        prev_dif = False
        for lineno, line in b["_data"]:
            try:
                vals, ends_dif = decode_asdf_line(line)
            except ValueError as exc:
                raise InputError(f"line {lineno}: {exc}", file=path, field="XYDATA", fix="the data line is damaged") from None
            if not vals:
                continue
            yv = vals[1:]
            if prev_dif and ys and yv:
                if abs(yv[0] - ys[-1]) > 1e-9 * max(1.0, abs(ys[-1])):
                    raise InputError(f"line {lineno}: DIF Y-check failed ({yv[0]:g} vs {ys[-1]:g})", file=path,
                                     field="XYDATA", fix="the compressed data are damaged")
                yv = yv[1:]
            ys.extend(yv)
            prev_dif = ends_dif
        if len(ys) != npts:
            raise InputError(f"{len(ys)} ordinates but ##NPOINTS={npts}", file=path, field="NPOINTS",
                             fix="the file is truncated or damaged")
        x = np.linspace(first, last, npts) if npts > 1 else np.array([first])
        return x, np.asarray(ys) * yfac, meta
    # XYPOINTS / PEAK TABLE: (XY..XY) pairs
    nums: list[float] = []
    for lineno, line in b["_data"]:
        parts = [t for t in re.split(r"[\s,;]+", line.split("$$", 1)[0].strip()) if t]
        try:
            nums.extend(float(t) for t in parts)
        except ValueError:
            raise InputError(f"line {lineno}: cannot read {line[:40]!r}", file=path, field=b["_data_label"],
                             fix="XYPOINTS lines hold x,y pairs") from None
    if len(nums) % 2:
        raise InputError("an odd count of numbers in (XY..XY) data", file=path, field=b["_data_label"],
                         fix="the file is damaged")
    arr = np.asarray(nums).reshape(-1, 2)
    return arr[:, 0] * xfac, arr[:, 1] * yfac, meta


def write_jcamp(path: str | os.PathLike[str], freq_cm1: Any, intensity: Any, *, title: str = "Raman spectrum",
                form: str = "affn") -> Path:
    """Write a JCAMP-DX 4.24 file, evenly spaced X: ``##XYDATA=(X++(Y..Y))`` in AFFN or
    DIFDUP (ASDF) form, intensities as integers times ``##YFACTOR``."""
    from ramanscreen.tasks.common import atomic_write

    x = np.asarray(freq_cm1, dtype=float)
    y = np.asarray(intensity, dtype=float)
    step = float((x[-1] - x[0]) / (len(x) - 1))
    if not np.allclose(np.diff(x), step, rtol=1e-6, atol=1e-9):
        raise InputError("X is not evenly spaced", field="freq_cm1", fix="interpolate onto an even grid first")
    yfac = float(np.max(np.abs(y))) / 1e6 if np.any(y) else 1.0
    iy = np.rint(y / yfac).astype(np.int64)
    lines = ["##TITLE=" + title, "##JCAMP-DX=4.24", "##DATA TYPE=RAMAN SPECTRUM", "##XUNITS=1/CM",
             "##YUNITS=ARBITRARY UNITS", "##XFACTOR=1", f"##YFACTOR={yfac!r}", f"##FIRSTX={float(x[0])!r}",
             f"##LASTX={float(x[-1])!r}", f"##DELTAX={step!r}", f"##NPOINTS={len(x)}", f"##FIRSTY={float(y[0])!r}",
             "##XYDATA=(X++(Y..Y))"]
    per = 10
    for start in range(0, len(iy), per):
        chunk = iy[start:start + per]
        xv = x[start]
        if form == "affn":
            lines.append(f"{xv:.6f} " + " ".join(str(int(v)) for v in chunk))
        else:
            # DIFDUP with the Y-check: each line restarts from an absolute (SQZ) value
            vals = ([int(iy[start - 1])] if start else []) + [int(v) for v in chunk]
            lines.append(f"{xv - step if start else xv:.6f}" + _difdup(vals))
    lines.append("##END=")
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def _sqz(v: int) -> str:
    s = str(abs(v))
    lead = "@ABCDEFGHI"[int(s[0])] if v >= 0 else "@abcdefghi"[int(s[0])]
    return lead + s[1:]


def _dif(d: int) -> str:
    s = str(abs(d))
    lead = "%JKLMNOPQR"[int(s[0])] if d >= 0 else "%jklmnopqr"[int(s[0])]
    return lead + s[1:]


def _dup(n: int) -> str:
    s = str(n)
    return "STUVWXYZs"[int(s[0]) - 1] + s[1:]


def _difdup(vals: list[int]) -> str:
    out = [_sqz(vals[0])]
    diffs = [b - a for a, b in zip(vals[:-1], vals[1:], strict=True)]
    i = 0
    while i < len(diffs):
        j = i
        while j + 1 < len(diffs) and diffs[j + 1] == diffs[i]:
            j += 1
        out.append(_dif(diffs[i]))
        if j > i:
            out.append(_dup(j - i + 1))
        i = j + 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# SPC and WDF
# --------------------------------------------------------------------------------------------

_SPC_X_OK = {"XRAMANS": "Raman shift (cm-1)", "XWAVEN": "wavenumber (cm-1)", "XARB": "arbitrary (taken as cm-1)"}


def _pick(spectra: list[np.ndarray], index: int | None, path: Path, what: str) -> tuple[np.ndarray, str]:
    if index is None:
        if len(spectra) == 1:
            return spectra[0], "single spectrum"
        return np.mean(np.vstack(spectra), axis=0), f"mean of {len(spectra)} {what}"
    if not 0 <= index < len(spectra):
        raise InputError(f"index {index} out of range: the file holds {len(spectra)} {what}", file=path,
                         field="--index", fix=f"use 0–{len(spectra) - 1}")
    return spectra[index], f"{what} {index} of {len(spectra)}"


def _read_spc(path: Path, index: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    import logging

    from spc_io import SPC

    log = logging.getLogger("spc_io")
    level = log.level
    log.setLevel(logging.ERROR)  # spc-io logs a warning for every file without a valid date
    try:
        with open(path, "rb") as fh:
            spc = SPC.from_bytes_io(fh)
    except Exception as exc:  # noqa: BLE001 - spc-io raises struct/pydantic/value errors on damaged files
        raise InputError(f"cannot read SPC: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}", file=path,
                         fix="pass a Thermo-Galactic SPC file") from None
    finally:
        log.setLevel(level)
    xtype = str(spc.xtype)
    if xtype not in _SPC_X_OK:
        raise InputError(f"X axis type {xtype} (need Raman shift in cm-1)", file=path, field="fxtype",
                         fix="export the spectrum with a Raman-shift X axis")
    subs = list(spc)
    if not subs:
        raise InputError("no subfiles (spectra) in the SPC file", file=path, fix="the file is empty or damaged")
    xs = [np.asarray(s.xarray, dtype=float) for s in subs]
    if any(len(x) != len(xs[0]) or not np.allclose(x, xs[0]) for x in xs) and index is None:
        raise InputError("the subfiles have different X axes", file=path, field="--index", fix="pick one with --index")
    y, how = _pick([np.asarray(s.yarray, dtype=float) for s in subs], index, path, "subfiles")
    x = xs[0 if index is None else index]
    return x, y, {"spc_xtype": f"{xtype}: {_SPC_X_OK[xtype]}", "spc_ytype": str(spc.ytype), "selection": how}


def _check_wdf_blocks(path: Path) -> None:
    """Walk the block headers (name, uid, size) before renishawWiRE does: it loops forever on a
    zero-size block and reads garbage past a truncated one."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"WDF1":
        raise InputError("not a WiRE file (no WDF1 header)", file=path, fix="pass a Renishaw .wdf file")
    pos = 0
    while pos + 16 <= len(data):
        name = data[pos:pos + 4]
        size = struct.unpack_from("<q", data, pos + 8)[0]
        if size < 16 or pos + size > len(data):
            raise InputError(f"block {name!r} at byte {pos} has size {size} (file has {len(data)} bytes)", file=path,
                             fix="the file is truncated or damaged")
        pos += size


def _read_wdf(path: Path, index: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    try:
        from renishawWiRE import WDFReader
    except ImportError:
        raise InputError("reading .wdf needs the optional extra experiment-wdf", file=path,
                         fix="pip install 'ramanscreen[experiment-wdf]' (renishawWiRE), or export the spectrum as text/SPC") from None
    _check_wdf_blocks(path)
    try:
        reader = WDFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - the reader raises on damaged blocks in several ways
        raise InputError(f"cannot read WDF: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}", file=path,
                         fix="pass a Renishaw WiRE .wdf file") from None
    x = np.asarray(reader.xdata, dtype=float)
    spectra = np.asarray(reader.spectra, dtype=float).reshape(-1, len(x))
    unit_enum = getattr(reader, "xlist_unit", None)
    unit = getattr(unit_enum, "name", str(unit_enum))
    laser_nm = float(getattr(reader, "laser_length", 0.0) or 0.0)
    if unit in ("Nanometre", "Wavenumber"):
        if not laser_nm > 0 or not math.isfinite(laser_nm):
            raise InputError(f"X axis in {unit} and no laser wavelength in the file", file=path, field="xlist_unit",
                             fix="export the spectrum in Raman shift (cm-1)")
        # WiRE's "Wavenumber" unit is an absolute scale; both become Raman shift from the laser line
        x = 1e7 / laser_nm - (1e7 / x if unit == "Nanometre" else x)
    elif unit not in ("RamanShift", "Arbitrary"):
        raise InputError(f"X axis unit {unit} (need Raman shift)", file=path, field="xlist_unit",
                         fix="export the spectrum in Raman shift (cm-1)")
    y, how = _pick(list(spectra), index, path, "spectra")
    return x, y, {"wdf_title": str(getattr(reader, "title", "")), "wdf_xunit": unit,
                  "laser_nm": f"{laser_nm:.3f}", "selection": how}


# --------------------------------------------------------------------------------------------
# Processing, writing, comparison
# --------------------------------------------------------------------------------------------


def process(spec: Spectrum, *, baseline: str = "none", normalize: str = "none",
            range_cm1: tuple[float | None, float | None] = (None, None), baseline_lam: float = 1e5,
            baseline_p: float = 0.01) -> Spectrum:
    """Cut to ``range_cm1``, subtract a baseline (``tasks.peaks.estimate_baseline``: none, poly,
    asls, arpls) and normalise (``max``: peak 1; ``area``: unit trapezoid integral)."""
    from ramanscreen.tasks.peaks import BASELINES, estimate_baseline

    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}", field="--baseline", fix=f"use one of {', '.join(BASELINES)}")
    if normalize not in NORMALIZATIONS:
        raise InputError(f"unknown normalisation {normalize!r}", field="--normalize",
                         fix=f"use one of {', '.join(NORMALIZATIONS)}")
    x, y = spec.freq_cm1, spec.intensity
    lo = -np.inf if range_cm1[0] is None else range_cm1[0]
    hi = np.inf if range_cm1[1] is None else range_cm1[1]
    sel = (x >= lo) & (x <= hi)
    if sel.sum() < MIN_POINTS:
        raise InputError(f"only {int(sel.sum())} points in {lo:g}–{hi:g} cm⁻¹", file=spec.source, field="--range-cm1",
                         fix="widen the range")
    x, y = x[sel], y[sel]
    if baseline != "none":
        y = y - estimate_baseline(x, y, baseline, lam=baseline_lam, p=baseline_p)
    if normalize == "max":
        top = float(np.max(y))
        if not top > 0:
            raise InputError("the spectrum has no positive intensity to normalise by", file=spec.source,
                             field="--normalize", fix="use --normalize none")
        y = y / top
    elif normalize == "area":
        area = float(np.trapezoid(y, x))
        if not area > 0:
            raise InputError("the spectrum's area is not positive", file=spec.source, field="--normalize",
                             fix="use --normalize max or none")
        y = y / area
    meta = {**spec.metadata, "baseline": baseline, "normalize": normalize,
            "range_cm1": f"{x[0]:g}-{x[-1]:g}"}
    return Spectrum(x, y, spec.source, spec.fmt, meta)


def write_spectrum_table(spec: Spectrum, path: str | os.PathLike[str]) -> Path:
    """Write ``freq_cm1`` and ``intensity`` (CSV or Parquet by suffix; Parquet keeps the metadata)."""
    meta = {"ramanscreen.kind": "experimental_raman_spectrum", "source": spec.source, "source_format": spec.fmt,
            **{f"source.{k}": v for k, v in spec.metadata.items()},
            "provenance": "experimental spectrum (imported), not computed"}
    return write_table({"freq_cm1": spec.freq_cm1, "intensity": spec.intensity}, path, metadata=meta)


@dataclasses.dataclass
class Comparison:
    """Result of :func:`compare_spectra`."""

    pearson_r: float
    range_cm1: tuple[float, float]
    grid_step_cm1: float
    n_points: int
    grid_cm1: np.ndarray
    experimental: np.ndarray  # on the grid, baselined, max-normalised
    computed: np.ndarray
    matches: dict[str, list[Any]]
    settings: dict[str, Any]

    @property
    def mean_abs_shift_cm1(self) -> float:
        s = np.asarray([v for v in self.matches["shift_cm1"] if v is not None and not math.isnan(v)])
        return float(np.mean(np.abs(s))) if len(s) else float("nan")


def match_peaks(exp_pos: Any, comp_pos: Any, tolerance_cm1: float = MATCH_TOLERANCE_CM1) -> list[tuple[int | None, int | None]]:
    """One-to-one matching of peak positions, closest pairs first, within ``tolerance_cm1``.

    >>> match_peaks([100.0, 200.0, 400.0], [205.0, 98.0])
    [(0, 1), (1, 0), (2, None)]
    """
    e = np.asarray(exp_pos, dtype=float)
    c = np.asarray(comp_pos, dtype=float)
    pairs = sorted(((abs(a - b), i, j) for i, a in enumerate(e) for j, b in enumerate(c)), key=lambda t: t[0])
    used_e: dict[int, int] = {}
    used_c: set[int] = set()
    for d, i, j in pairs:
        if d > tolerance_cm1:
            break
        if i not in used_e and j not in used_c:
            used_e[i] = j
            used_c.add(j)
    out: list[tuple[int | None, int | None]] = [(i, used_e.get(i)) for i in range(len(e))]
    out += [(None, j) for j in range(len(c)) if j not in used_c]
    return out


def compare_spectra(experimental: Spectrum, computed: Spectrum, *, range_cm1: tuple[float, float] = COMPARE_RANGE_CM1,
                    grid_step_cm1: float = COMPARE_GRID_CM1, baseline: str = COMPARE_BASELINE,
                    computed_baseline: str = "none", tolerance_cm1: float = MATCH_TOLERANCE_CM1,
                    peak_settings=None) -> Comparison:
    """Pearson r of the two spectra on a common grid over ``range_cm1`` (after baseline removal
    and max-normalisation) and a peak-matching table with shifts (computed − experimental, cm⁻¹).

    The range is clipped to where both spectra have data; the experimental spectrum gets
    ``baseline`` (default asls), the computed one ``computed_baseline`` (default none: an MD
    spectrum has no fluorescence background).
    """
    from ramanscreen.tasks.peaks import PeakSettings, estimate_baseline, fit_peaks

    lo = max(range_cm1[0], float(experimental.freq_cm1[0]), float(computed.freq_cm1[0]))
    hi = min(range_cm1[1], float(experimental.freq_cm1[-1]), float(computed.freq_cm1[-1]))
    if not hi - lo > 10 * grid_step_cm1:
        raise InputError(f"the spectra overlap only in {lo:g}–{hi:g} cm⁻¹", field="--range-cm1",
                         fix="compare spectra that cover a common range")
    grid = np.arange(lo, hi + 0.5 * grid_step_cm1, grid_step_cm1)
    e = np.interp(grid, experimental.freq_cm1, experimental.intensity)
    c = np.interp(grid, computed.freq_cm1, computed.intensity)
    e = e - estimate_baseline(grid, e, baseline)
    if computed_baseline != "none":
        c = c - estimate_baseline(grid, c, computed_baseline)
    for name, arr, src in (("experimental", e, experimental.source), ("computed", c, computed.source)):
        if not np.max(arr) > 0:
            raise InputError(f"the {name} spectrum has no positive intensity in {lo:g}–{hi:g} cm⁻¹", file=src,
                             fix="check the range and the baseline")
    e = e / np.max(e)
    c = c / np.max(c)
    r = float(np.corrcoef(e, c)[0, 1])
    ps = peak_settings or PeakSettings(baseline="none")
    fe = fit_peaks(grid, e, ps)
    fc = fit_peaks(grid, c, ps)
    cols: dict[str, list[Any]] = {k: [] for k in ("experimental_position_cm1", "computed_position_cm1", "shift_cm1",
                                                  "experimental_fwhm_cm1", "computed_fwhm_cm1",
                                                  "experimental_height", "computed_height", "matched")}
    for i, j in match_peaks(fe.table["position_cm1"], fc.table["position_cm1"], tolerance_cm1):
        ep = fe.table["position_cm1"][i] if i is not None else float("nan")
        cp = fc.table["position_cm1"][j] if j is not None else float("nan")
        cols["experimental_position_cm1"].append(ep)
        cols["computed_position_cm1"].append(cp)
        cols["shift_cm1"].append(cp - ep if i is not None and j is not None else float("nan"))
        cols["experimental_fwhm_cm1"].append(fe.table["fwhm_cm1"][i] if i is not None else float("nan"))
        cols["computed_fwhm_cm1"].append(fc.table["fwhm_cm1"][j] if j is not None else float("nan"))
        cols["experimental_height"].append(fe.table["height"][i] if i is not None else float("nan"))
        cols["computed_height"].append(fc.table["height"][j] if j is not None else float("nan"))
        cols["matched"].append(i is not None and j is not None)
    settings = {"baseline": baseline, "computed_baseline": computed_baseline, "normalize": "max",
                "tolerance_cm1": tolerance_cm1, "profile": ps.profile, "prominence": ps.prominence}
    return Comparison(r, (float(grid[0]), float(grid[-1])), grid_step_cm1, len(grid), grid, e, c, cols, settings)


def plot_comparison(cmp: Comparison, path: str | os.PathLike[str], *, labels: tuple[str, str] = ("experiment", "computed")) -> Path:
    """Overlay of the two normalised spectra with matched peaks and their shifts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ramanscreen.tasks.common import save_figure

    fig = Figure(figsize=(8.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(cmp.grid_cm1, cmp.experimental, color="k", lw=1.0, label=f"{labels[0]} (baseline {cmp.settings['baseline']})")
    ax.plot(cmp.grid_cm1, cmp.computed, color="C3", lw=1.0, label=labels[1])
    for ep, cp, ok in zip(cmp.matches["experimental_position_cm1"], cmp.matches["computed_position_cm1"],
                          cmp.matches["matched"], strict=True):
        if ok:
            ax.annotate("", xy=(cp, 1.04), xytext=(ep, 1.04), arrowprops={"arrowstyle": "->", "color": "C0", "lw": 0.8})
            ax.text(0.5 * (ep + cp), 1.07, f"{cp - ep:+.0f}", ha="center", fontsize=7, color="C0")
    ax.set_xlim(*cmp.range_cm1)
    ax.set_ylim(min(-0.05, float(min(cmp.experimental.min(), cmp.computed.min()))), 1.15)
    ax.set_xlabel("Raman shift (cm$^{-1}$)")
    ax.set_ylabel("normalised intensity")
    ax.set_title(f"Pearson r = {cmp.pearson_r:.3f} over {cmp.range_cm1[0]:g}–{cmp.range_cm1[1]:g} cm$^{{-1}}$ "
                 f"({cmp.grid_step_cm1:g} cm$^{{-1}}$ grid); shifts computed − experiment", fontsize=9)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = [
    "COMPARE_BASELINE",
    "COMPARE_GRID_CM1",
    "COMPARE_RANGE_CM1",
    "FORMATS",
    "MATCH_TOLERANCE_CM1",
    "Comparison",
    "Spectrum",
    "compare_spectra",
    "decode_asdf_line",
    "detect_format",
    "match_peaks",
    "plot_comparison",
    "process",
    "read_jcamp",
    "read_spectrum",
    "write_jcamp",
    "write_spectrum_table",
]
