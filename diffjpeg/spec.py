"""Parsing of build specs such as ``"median:kernel=3x3"`` or ``"pgd:eps=8/255,steps=50"``.

A spec is ``name`` or ``name:key=value,key=value,...``. Values are read as Python literals where
they are one (``3``, ``0.5``, ``true``/``false``, ``none``, ``(50, 90)``), as a fraction ``a/b`` of two
numbers, and otherwise kept as strings (``3x3``, ``2pass``). Commas inside parentheses or brackets
belong to the value. Shared by the defense and attack registries.
"""
from __future__ import annotations

import ast
import inspect
from typing import Any, Callable, Mapping

_WORDS = {"true": True, "false": False, "none": None}


def parse_value(text: str) -> Any:
    """One spec value: literal, fraction ``a/b``, ``true``/``false``/``none``, or the string itself."""
    text = text.strip()
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    if text.count("/") == 1:
        num, den = text.split("/")
        try:
            return float(ast.literal_eval(num.strip())) / float(ast.literal_eval(den.strip()))
        except (ValueError, SyntaxError, ZeroDivisionError, TypeError):
            return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside parentheses or brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([" and 1 or ch in ")]" and -1 or 0
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def parse_spec(spec: str, what: str = "spec") -> tuple[str, dict[str, Any]]:
    """``"name:key=value,..."`` -> ``(name, {key: value})``; ``what`` names the argument in errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"{what} must be a non-empty string like 'name' or 'name:key=value,...', got {spec!r}")
    name, _, rest = spec.partition(":")
    kwargs = {}
    for part in _split_top_level(rest):
        key, eq, value = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"{what} {spec!r}: expected key=value after ':', got {part.strip()!r}")
        kwargs[key.strip()] = parse_value(value)
    return name.strip().lower(), kwargs


class Registry:
    """Named constructors built from specs, with their parameters listed for ``available()``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None):
        """Register ``factory`` under ``name``; usable as a decorator."""
        def add(f):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = f
            return f
        return add(factory) if factory is not None else add

    def available(self) -> dict[str, str]:
        """``{name: "(param=default, ...)"}`` for every registered entry, sorted by name."""
        return {name: str(inspect.signature(f)) for name, f in sorted(self._entries.items())}

    def parameters(self, name: str) -> Mapping[str, inspect.Parameter]:
        """The parameters of the entry ``name`` (a ``ValueError`` listing the valid names if unknown)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}")
        return inspect.signature(self._entries[name]).parameters

    def build(self, spec: str, **overrides: Any) -> Any:
        """Construct from ``spec`` (see :func:`parse_spec`); keyword ``overrides`` win over the spec."""
        name, kwargs = parse_spec(spec, f"{self.kind} spec")
        params = self.parameters(name)
        factory = self._entries[name]
        kwargs.update(overrides)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params and not takes_any]
        if unknown:
            raise ValueError(f"{self.kind} {name!r} has no parameter(s) {unknown}; its parameters: "
                             f"{inspect.signature(factory)}")
        return factory(**kwargs)
