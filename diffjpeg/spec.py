"""Parsing of build specs such as ``"median:kernel=3x3"`` or ``"pgd:eps=8/255,steps=50"``.

A spec is ``name`` or ``name:key=value,key=value,...``. Values are read as Python literals where
they are one (``3``, ``0.5``, ``true``/``false``, ``none``, ``(50, 90)``), as a fraction ``a/b`` of two
numbers, and otherwise kept as strings (``3x3``, ``2pass``). Commas inside parentheses or brackets
belong to the value. Shared by the defense and attack registries.

A registry built with ``imports=True`` (the defense registry) also takes ``MODULE:FACTORY`` and
``MODULE:FACTORY:key=value,...``: ``FACTORY`` imported from ``MODULE`` and called with the values,
as ``--model`` takes ``MODULE:FACTORY``.

Limits: a spec (and a single value) is at most :data:`MAX_SPEC_LENGTH` characters, a key may be
given once, and a value nested too deeply for Python's parser (``------1``, a 200 000-term sum) is a
``ValueError`` naming it.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import re
from typing import Any, Callable, Mapping

_WORDS = {"true": True, "false": False, "none": None}
#: the longest spec (and value) accepted, in characters
MAX_SPEC_LENGTH = 1000
_MODULE_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class _TooDeep(ValueError):
    """A value Python's parser cannot take (recursion or memory exhausted)."""


def _literal(text: str, whole: str) -> Any:
    """``ast.literal_eval(text)``; a value too deep for the parser is a ValueError naming ``whole``."""
    try:
        return ast.literal_eval(text)
    except (RecursionError, MemoryError):
        shown = whole if len(whole) <= 40 else f"{whole[:30]}...({len(whole)} characters)"
        raise _TooDeep(f"spec value {shown!r} is nested too deeply to parse") from None


def parse_value(text: str) -> Any:
    """One spec value: literal, fraction ``a/b``, ``true``/``false``/``none``, or the string itself."""
    text = text.strip()
    if len(text) > MAX_SPEC_LENGTH:
        raise ValueError(f"spec value of {len(text)} characters; values are limited to {MAX_SPEC_LENGTH}")
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    if text.count("/") == 1:
        num, den = text.split("/")
        try:
            return float(_literal(num.strip(), text)) / float(_literal(den.strip(), text))
        except _TooDeep:
            raise
        except (ValueError, SyntaxError, ZeroDivisionError, TypeError):
            return text
    try:
        return _literal(text, text)
    except _TooDeep:
        raise
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


def _head(spec: str) -> tuple[str, str]:
    """``(name, rest)``: ``name`` is lower-cased, or ``MODULE:FACTORY`` (case kept) when the spec starts with one."""
    name, _, rest = spec.partition(":")
    factory, colon, tail = rest.partition(":")
    if "=" not in factory and _MODULE_FACTORY.fullmatch(f"{name.strip()}:{factory.strip()}"):
        return f"{name.strip()}:{factory.strip()}", tail if colon else ""
    return name.strip().lower(), rest


def parse_spec(spec: str, what: str = "spec") -> tuple[str, dict[str, Any]]:
    """``"name:key=value,..."`` -> ``(name, {key: value})``; ``what`` names the argument in errors.

    ``"MODULE:FACTORY[:key=value,...]"`` -> ``("MODULE:FACTORY", {key: value})``.

    Raises:
        TypeError: not a non-empty string.
        ValueError: longer than :data:`MAX_SPEC_LENGTH`, a part that is not ``key=value``, a key given
            twice, or a value too deeply nested to parse.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"{what} must be a non-empty string like 'name' or 'name:key=value,...', got {spec!r}")
    if len(spec) > MAX_SPEC_LENGTH:
        raise ValueError(f"{what} is {len(spec)} characters long; specs are limited to {MAX_SPEC_LENGTH} characters "
                         f"(it starts {spec[:40]!r})")
    name, rest = _head(spec)
    kwargs = {}
    for part in _split_top_level(rest):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"{what} {spec!r}: expected key=value after ':', got {part.strip()!r}")
        if key in kwargs:
            raise ValueError(f"{what} {spec!r}: {key!r} is given twice; give each parameter once")
        kwargs[key] = parse_value(value)
    return name, kwargs


class Registry:
    """Named constructors built from specs, with their parameters listed for ``available()``.

    Args:
        kind: what the entries are ("defense", "attack"), for messages.
        imports: also build ``MODULE:FACTORY`` specs (``FACTORY`` imported from ``MODULE``).
        check: ``check(obj, spec)`` is called on what an imported factory returns, to refuse
            objects that do not fit (it raises ``TypeError`` naming the spec).
    """

    def __init__(self, kind: str, imports: bool = False, check: Callable[[Any, str], None] | None = None):
        self.kind = kind
        self.imports = imports
        self.check = check
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

    def factory(self, name: str) -> Callable[..., Any]:
        """The constructor of ``name``: a registered entry, or (``imports=True``) an imported ``MODULE:FACTORY``."""
        if name in self._entries:
            return self._entries[name]
        if ":" not in name:
            also = " (or MODULE:FACTORY to import one)" if self.imports else ""
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}{also}")
        module_name, attr = name.split(":")
        if not self.imports or module_name.lower() in self._entries:
            raise ValueError(f"{self.kind} spec {name!r}: expected key=value after ':', got {attr!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"{self.kind} spec {name!r}: cannot import module {module_name!r} ({exc}); a spec is "
                             f"NAME[:key=value,...] with NAME one of {', '.join(sorted(self._entries))}, or "
                             f"MODULE:FACTORY[:key=value,...]") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ValueError(f"{self.kind} spec {name!r}: module {module_name!r} has no callable {attr!r}")
        return factory

    def parameters(self, name: str) -> Mapping[str, inspect.Parameter]:
        """The parameters of the entry ``name`` (a ``ValueError`` listing the valid names if unknown)."""
        return inspect.signature(self.factory(name)).parameters

    def build(self, spec: str, **overrides: Any) -> Any:
        """Construct from ``spec`` (see :func:`parse_spec`); keyword ``overrides`` win over the spec."""
        name, kwargs = parse_spec(spec, f"{self.kind} spec")
        factory = self.factory(name)
        params = inspect.signature(factory).parameters
        kwargs.update(overrides)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in kwargs if k not in params and not takes_any]
        if unknown:
            raise ValueError(f"{self.kind} {name!r} has no parameter(s) {unknown}; its parameters: "
                             f"{inspect.signature(factory)}")
        built = factory(**kwargs)
        if name not in self._entries and self.check is not None:
            self.check(built, spec)
        return built
