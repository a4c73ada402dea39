"""The benchmark's configuration: defaults, the ``full`` grid, TOML files, and their validation.

A :class:`BenchConfig` says what to evaluate (model, data, defenses, threat models, attack, eps grid,
budgets and check tolerances) and where to write it (``out``). ``load_config`` reads a TOML file
(keys at the top level or under ``[bench]``); ``BenchConfig.from_dict`` builds one from a mapping and
rejects unknown keys; ``validate`` checks every value and names (one-line errors listing the valid
choices) before any model or data is loaded, and returns the defense and attack specs parsed, once,
into :class:`Spec` (name and keyword arguments, with the text as given for display).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..arguments import check_int, check_real
from ..spec import parse_spec, parse_value

__all__ = [
    "DEFAULT_DEFENSES",
    "FULL_DEFENSES",
    "GRIDS",
    "NO_DEFENSE",
    "BenchConfig",
    "Parsed",
    "Spec",
    "attack_name",
    "load_config",
    "validate",
]

#: the defense spec of the undefended model (its one row is the ``whitebox`` threat model)
NO_DEFENSE = "none"
#: the default grid; TVM is left out of it because under BPDA+EOT it alone took 5 of the run's 13 minutes
#: on 2 cores (its solver in every draw of every gradient): ``bench/anchors.py``'s ``athalye`` section runs it
DEFAULT_DEFENSES = ("none", "jpeg:q=75", "jpeg:q=50", "jpeg:q=20", "diffjpeg:q=75", "fd", "bit_depth:levels=16",
                    "median:kernel=3", "random_jpeg:q=(50, 90)")
FULL_DEFENSES = DEFAULT_DEFENSES[:-1] + ("median:kernel=5", "tvm:p=0.5", "random_jpeg:q=(50, 90)", "kmeans:k=8")

#: named grids: values a config starts from before its own keys are applied
GRIDS: dict[str, dict[str, Any]] = {
    "default": {},
    "full": {"defenses": list(FULL_DEFENSES),
             "threat_models": ["graybox", "bpda", "bpda_surrogate", "surrogate", "bpda_eot"],
             "eps": [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255], "steps": 50, "restarts": 2,
             "eot_samples": 16},
}
#: keys that do not change the numbers (so a resumed run may change them)
_RUN_KEYS = ("out", "device", "progress", "restart", "download")


@dataclass(frozen=True)
class Spec:
    """A build spec (``"jpeg:q=50"``) parsed once, at the config boundary.

    ``text`` is the spec as given: what tables and records show and what the runner keys defenses
    by; ``name`` and ``kwargs`` are :func:`diffjpeg.spec.parse_spec`'s reading of it.

    Example::

        >>> spec = Spec.parse("median:kernel=3", "defense spec")
        >>> spec.name, spec.kwargs
        ('median', {'kernel': 3})
        >>> median = spec.build(DEFENSES.build)  # DEFENSES.build("median", kernel=3)
    """

    text: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str, what: str) -> Spec:
        """``text`` read by :func:`~diffjpeg.spec.parse_spec`; ``what`` names the argument in errors."""
        name, kwargs = parse_spec(text, what)
        return cls(text, name, kwargs)

    def build(self, factory: Callable[..., Any], *args: Any, **overrides: Any) -> Any:
        """``factory(name, *args, **kwargs)``, keyword ``overrides`` winning over the spec's values."""
        return factory(self.name, *args, **{**self.kwargs, **overrides})


@dataclass(frozen=True)
class Parsed:
    """What :func:`validate` hands on: the config's defense specs (in order) and its attack specs, parsed
    (one attack, a named ensemble such as ``standard``, or a list run as an ensemble)."""

    defenses: tuple[Spec, ...]
    attacks: tuple[Spec, ...]


@dataclass
class BenchConfig:
    """Everything a benchmark run needs. Defaults: the embedded offline default (see README)."""

    model: str = "efficientnet_lite0"
    checkpoint: str | None = None
    data: str = "foolbox:imagenet"
    n: int | None = None
    image_size: int | None = None
    batch_size: int = 20
    defenses: list[str] = field(default_factory=lambda: list(DEFAULT_DEFENSES))
    threat_models: list[str] = field(default_factory=lambda: ["graybox", "adaptive", "bpda_surrogate"])
    # PGD (step 2.5 eps / steps, tuned for few steps), then on what it leaves AutoAttack's APGD-CE and APGD-T
    # on the 3 highest-scoring other classes (AutoAttack: 9, which costs 1.4x as much under check B's 4x
    # budget); at 5 steps APGD alone is weaker than PGD on some rows (BENCHMARKS.md)
    attack: list[str] = field(default_factory=lambda: ["pgd", "standard:targets=3"])
    eps: list[float] = field(default_factory=lambda: [2 / 255, 8 / 255])
    steps: int = 5
    restarts: int = 1
    eot_samples: int = 4
    large_eps: float = 64 / 255
    tolerance: float = 0.05
    max_large_eps_accuracy: float = 0.1
    max_zero_gradients: float = 0.1
    seed: int = 0
    grid: str = "default"
    out: str = "bench-results"
    device: str = "cpu"
    # attacked graphs compiled per input shape (diffjpeg.compile); pays where compiling is cheap against
    # the attack (a GPU, long attacks): on a 2-core CPU each shape's compilation takes 15-40 s
    compile: bool = False
    progress: bool = True
    restart: bool = False
    download: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BenchConfig:
        """A config from ``values``: the named ``grid`` first, then the given keys over it."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(names)}")
        grid = values.get("grid", "default")
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {sorted(GRIDS)}, got {grid!r}")
        merged = {**GRIDS[grid], **values}
        if isinstance(merged.get("eps"), (int, float, str)):
            merged["eps"] = [merged["eps"]]
        if "eps" in merged:  # "8/255" in TOML or on the command line
            merged["eps"] = [parse_value(e) if isinstance(e, str) else e for e in merged["eps"]]
        if isinstance(merged.get("large_eps"), str):
            merged["large_eps"] = parse_value(merged["large_eps"])
        for key in ("defenses", "threat_models", "attack"):
            if isinstance(merged.get(key), str):
                merged[key] = [merged[key]]
        return cls(**merged)

    def identity(self) -> dict[str, Any]:
        """The keys that determine the results (everything but where and how the run happens)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUN_KEYS}

    def fingerprint(self, inputs: dict[str, Any] | None = None) -> str:
        """A digest of :meth:`identity` and ``inputs`` (what the runner records about the checkpoint's
        and the data's content and the library versions, see :func:`diffjpeg.eval.runner.run_inputs`)."""
        both = {"config": self.identity(), "inputs": inputs or {}}
        return hashlib.sha256(json.dumps(both, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a TOML file (top-level keys, or the ``[bench]`` table)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    return dict(values.get("bench", values))


def validate(cfg: BenchConfig) -> Parsed:
    """Check every value and name of ``cfg`` and return its specs parsed; raise a one-line
    ``ValueError``/``TypeError`` otherwise."""
    from ..attacks.registry import ATTACKS
    from .threats import check_names

    for key in ("batch_size", "steps", "restarts", "eot_samples"):
        check_int(getattr(cfg, key), key, 1)
    for key, lo in (("n", 1), ("image_size", 8)):  # None: all examples / the model's size; 8: one JPEG block
        if getattr(cfg, key) is not None:
            check_int(getattr(cfg, key), key, lo)
    check_int(cfg.seed, "seed", 0)
    if not isinstance(cfg.eps, list) or not cfg.eps:
        raise ValueError(f"eps must be a non-empty list of numbers in [0, 1] such as [2/255, 8/255], got {cfg.eps!r}")
    for e in cfg.eps:
        try:
            check_real(e, "eps", 0.0, 1.0)
        except (TypeError, ValueError):
            raise ValueError(f"eps values must be numbers in [0, 1] (e.g. 8/255), got {e!r}") from None
    if sorted(cfg.eps) != cfg.eps or len(set(cfg.eps)) != len(cfg.eps):
        raise ValueError(f"eps must be strictly increasing, got {cfg.eps}")
    check_real(cfg.large_eps, "large_eps (>= max(eps))", max(cfg.eps), 1.0)
    for key in ("tolerance", "max_large_eps_accuracy", "max_zero_gradients"):
        check_real(getattr(cfg, key), key, 0.0, 1.0)
    _check_types(cfg)  # the other keys' types (the numbers' are checked above, with their ranges)
    _check_device(cfg.device)
    check_names(cfg.threat_models)
    if not cfg.defenses or len(set(cfg.defenses)) != len(cfg.defenses):
        raise ValueError(f"defenses must be a non-empty list without repeats, got {cfg.defenses!r}")
    defenses = tuple(_defense_spec(text) for text in cfg.defenses)
    texts = cfg.attack
    if not texts:
        raise ValueError(f"attack must be an attack spec or a non-empty list of them (run as an ensemble), e.g. "
                         f"'standard' or ['apgd:loss=ce', 'square'], got {cfg.attack!r}")
    attacks = tuple(Spec.parse(text, "attack spec") for text in texts)
    for attack in attacks:
        params = ATTACKS.parameters(attack.name)
        if "eps" not in params:
            raise ValueError(f"attack {attack.name!r} has no eps parameter; the benchmark needs L-inf attacks with a "
                             f"budget eps (e.g. standard, autoattack, apgd, pgd, square, fgsm)")
        if "eps" in attack.kwargs:
            raise ValueError(f"attack spec {attack.text!r} sets eps; give the eps grid with the eps key instead")
    return Parsed(defenses, attacks)


def _check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N``, and a CUDA device must exist here."""
    import torch

    kind, _, index = device.partition(":")
    if device != "cpu" and (kind != "cuda" or (index and not index.isdigit())):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if kind == "cuda" and torch.cuda.device_count() <= int(index or 0):
        found = torch.cuda.device_count()
        there = "no CUDA device is" if not found else f"only {found} CUDA device(s) are"
        raise ValueError(f"device {device!r}: {there} available here (torch {torch.__version__}); use --device cpu")


def _check_types(cfg: BenchConfig) -> None:
    """Every field of ``cfg`` must be of its annotated type (``restart = "false"`` is not a bool)."""
    hints = typing.get_type_hints(BenchConfig)
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints[f.name]
        if not _is(value, hint):
            raise TypeError(f"config key {f.name} must be {_describe(hint)}, got {type(value).__name__} {value!r}")


def _is(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is types.UnionType:
        return any(_is(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_is(v, typing.get_args(hint)[0]) for v in value)
    if hint in (int, float):  # a float field takes an int too; neither takes a bool
        return isinstance(value, (int, hint)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is types.UnionType:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "none (unset)"}[hint]


def attack_name(cfg: BenchConfig) -> str:
    """The configured attack as tables and plots name it: ``standard`` or ``apgd:loss=ce + square``."""
    return " + ".join(cfg.attack)


def _defense_spec(text: str) -> Spec:
    """One entry of ``defenses`` parsed, its name checked against the registry (``none``: no defense)."""
    from ..defenses.registry import DEFENSES

    if text == NO_DEFENSE:
        return Spec(NO_DEFENSE, NO_DEFENSE)
    spec = Spec.parse(text, "defense spec")
    if spec.name == NO_DEFENSE:
        raise ValueError(f"defense 'none' takes no parameters, got {text!r}")
    try:
        DEFENSES.parameters(spec.name)
    except ValueError as e:
        raise ValueError(f"{e}; and none (no defense)") from None
    return spec
