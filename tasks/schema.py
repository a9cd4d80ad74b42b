"""Settings dataclasses: fields that carry their own documentation, units and bounds, and one checker.

Every stage defines its settings once, as a frozen dataclass in its science module
(``MDSettings`` in :mod:`ramanscreen.tasks.md`, ``SpectrumSettings`` in
:mod:`ramanscreen.tasks.spectra`, ...), whose fields are made with :func:`setting`. The field's
metadata (``doc``, ``unit``, bounds, ``choices``) is what :func:`check` validates, what the
campaign file's sections are read with (:func:`from_mapping`: a TOML table *is* the dataclass),
and what the CLI options take their defaults and help from (:func:`default`, :func:`help_text`).
So a default, a bound or a unit exists in one place.

Errors name the *field* (``sigma_cm1``), never a CLI flag or a TOML key; the campaign layer
prefixes the section (``spectrum.sigma_cm1``) and the file, the CLI maps the field to its flag.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo:
...     dt_fs: float = setting(2.0, doc="time step", unit="fs", gt=0)
...     mode: str = setting("a", doc="how", choices=("a", "b"))
...     def __post_init__(self) -> None:
...         check(self)
>>> Demo(dt_fs=1).dt_fs                        # ints become floats
1.0
>>> Demo(dt_fs=-1)
Traceback (most recent call last):
...
ramanscreen.tasks.common.InputError: dt_fs: must be > 0 fs, got -1 (fix: time step, a value > 0 fs)
>>> from_mapping(Demo, {"mode": "c"})
Traceback (most recent call last):
...
ramanscreen.tasks.common.InputError: mode: 'c' is not one of a, b (fix: how: use one of a, b)
>>> from_mapping(Demo, {"dt": 1.0})
Traceback (most recent call last):
...
ramanscreen.tasks.common.InputError: dt: unknown key (fix: allowed keys: dt_fs, mode)
>>> help_text(Demo, "dt_fs")
'time step (fs; default 2).'
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, cast

import numpy as np

from ramanscreen.tasks.common import InputError

_MISSING: Any = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    doc: str,
    unit: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[Any] | None = None,
    default_factory: Any = _MISSING,
    toml: bool = True,
) -> Any:
    """A dataclass field with its documentation, unit, bounds and choices as metadata.

    ``toml=False`` marks a field a campaign section does not set (it comes from elsewhere,
    e.g. the MD temperature from the material).
    """
    meta = {"doc": doc, "unit": unit, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": tuple(choices) if choices is not None else None, "toml": toml}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)


def field_names(cls: type, *, toml_only: bool = False) -> list[str]:
    """The field names of a settings dataclass (``toml_only``: those a campaign section may set)."""
    return [f.name for f in _fields(cls) if not toml_only or f.metadata.get("toml", True)]


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` (a fresh copy for factory defaults).

    >>> from ramanscreen.tasks.spectra import SpectrumSettings
    >>> default(SpectrumSettings, "sigma_cm1")
    4.0
    """
    f = {f.name: f for f in _fields(cls)}[name]
    if f.default_factory is not _MISSING:
        return cast(Any, f.default_factory)()
    return f.default


def _bounds_text(meta: Mapping[str, Any]) -> str:
    parts = []
    for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{op} {meta[key]:g}")
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    return " and ".join(parts) + unit if parts else ""


def help_text(cls: type, name: str, *, extra: str = "", default_text: str | None = None) -> str:
    """CLI help for field ``name``: its doc, unit and default, from the dataclass
    (``default_text`` replaces the default's description)."""
    f = {f.name: f for f in _fields(cls)}[name]
    meta = f.metadata
    value = default(cls, name)
    if isinstance(value, tuple):
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    elif isinstance(value, float):
        shown = f"{value:g}"
    else:
        shown = "none" if value is None else str(value)
    unit = f"{meta['unit']}; " if meta.get("unit") else ""
    choices = f"; one of {', '.join(map(str, meta['choices']))}" if meta.get("choices") else ""
    shown = default_text.format(default=shown) if default_text is not None else f"default {shown}"
    return f"{meta.get('doc', '')}{extra} ({unit}{shown}{choices})."


# ----------------------------------------------------------------------------- type checks


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return False, tp


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` converted to ``tp`` (int → float, list → tuple), or InputError naming ``name``."""
    optional, tp = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise InputError(f"must be {_type_name(tp)}, got nothing", field=name)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise InputError(f"expected true or false, got {value!r}", field=name)
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise InputError(f"expected an integer, got {_describe(value)}", field=name)
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise InputError(f"expected a number, got {_describe(value)}", field=name)
    if tp is str:
        if isinstance(value, str):
            return value
        raise InputError(f"expected a string, got {_describe(value)}", field=name)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise InputError(f"expected {_type_name(tp)}, got {_describe(value)}", field=name)
        items = list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise InputError(f"expected {_type_name(tp)}, got {len(items)} values {items!r}", field=name)
        return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=True)))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise InputError(f"expected a table, got {_describe(value)}", field=name)
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_mapping(tp, value, prefix=name)
        raise InputError(f"expected a table, got {_describe(value)}", field=name)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise InputError(f"expected {_type_name(tp)}, got {_describe(value)}", field=name)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return f"{type(value).__name__} {value!r}"


def _check_value(value: Any, meta: Mapping[str, Any], name: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise InputError(f"{value!r} is not one of {', '.join(map(str, choices))}", field=name,
                         fix=f"{meta.get('doc', name)}: use one of {', '.join(map(str, choices))}")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            continue
        ok = all((
            meta.get("gt") is None or v > meta["gt"],
            meta.get("ge") is None or v >= meta["ge"],
            meta.get("lt") is None or v < meta["lt"],
            meta.get("le") is None or v <= meta["le"],
        ))
        if not ok:
            bounds = _bounds_text(meta)
            raise InputError(f"must be {bounds}, got {value!r}" if isinstance(value, tuple) else
                             f"must be {bounds}, got {v:g}", field=name,
                             fix=f"{meta.get('doc', name)}, a value {bounds}")


def check(obj: Any) -> None:
    """Validate (and normalise: int → float, list → tuple) every field of a settings dataclass
    instance against its annotation and metadata. Call it from ``__post_init__``.

    Raises :class:`InputError` whose ``field`` is the field name.
    """
    hints = _hints(cast(Any, type(obj)))
    for f in _fields(type(obj)):
        value = getattr(obj, f.name)
        new = _coerce(value, hints.get(f.name, Any), f.name)
        _check_value(new, f.metadata, f.name)
        if new is not value:
            object.__setattr__(obj, f.name, new)


def prefixed(err: InputError, prefix: str | None, *, file: Any = None, fields: Mapping[str, str] | None = None) -> InputError:
    """``err`` with its field prefixed (``spectrum.`` + ``sigma_cm1``) or mapped through ``fields``
    (field → the name the user wrote, e.g. a CLI flag), and ``file`` filled in when it had none."""
    field = err.field
    if fields is not None and field in fields:
        field = fields[field]
    elif prefix:
        field = f"{prefix}.{field}" if field else prefix
    return InputError(err.message, file=err.file or file, field=field, fix=err.fix)


def from_mapping(cls: type, data: Mapping[str, Any], *, prefix: str | None = None, allowed: Iterable[str] | None = None,
                 **extra: Any) -> Any:
    """Build settings ``cls`` from a mapping (a TOML table): unknown keys, types, bounds and the
    class's own cross-field checks, every error naming ``prefix.key``.

    ``allowed`` restricts the keys (default: the fields not marked ``toml=False``); ``extra``
    are further constructor arguments that do not come from the table.
    """
    if not isinstance(data, Mapping):
        raise InputError(f"expected a table, got {_describe(data)}", field=prefix,
                         fix=f"write it as [{prefix}]" if prefix else None)
    keys = list(allowed) if allowed is not None else field_names(cls, toml_only=True)
    for key in data:
        if key not in keys:
            raise prefixed(InputError("unknown key", field=str(key), fix=f"allowed keys: {', '.join(sorted(keys))}"),
                           prefix)
    try:
        return cls(**dict(data), **extra)
    except InputError as exc:
        raise prefixed(exc, prefix) from None


def describe(cls: type) -> list[dict[str, Any]]:
    """One dict per settable field (``key, type, default, unit, doc``), e.g. for documentation.

    >>> from ramanscreen.tasks.transport import TransportSettings
    >>> [d["key"] for d in describe(TransportSettings)][:2]
    ['method', 'drift']
    """
    hints = _hints(cls)
    out = []
    for f in _fields(cls):
        if not f.metadata.get("toml", True):
            continue
        out.append({"key": f.name, "type": _type_name(_is_optional(hints[f.name])[1]), "default": default(cls, f.name),
                    "unit": f.metadata.get("unit"), "doc": f.metadata.get("doc", "")})
    return out


__all__ = ["check", "default", "describe", "field_names", "from_mapping", "help_text", "prefixed", "setting"]
