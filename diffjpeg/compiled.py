"""``diffjpeg.compile(module)``: ``torch.compile`` for layers and defended models, without the
slowdowns of shapes that change.

``torch.compile`` specialises a graph to the shapes it sees. When a second shape arrives it
recompiles with symbolic ("dynamic") shapes, and that generic graph is often slower than eager
mode; every recompilation costs seconds to minutes on a CPU. :func:`compile` instead keeps one
static-shape graph per input shape, compiled only once a shape has been seen ``after`` times (a
one-off shape, such as the last partial batch of a data set, runs eagerly and costs nothing), for at
most ``max_shapes`` shapes; other shapes run eagerly. Values never cause a recompilation.

The input's value checks (finite, in [0, 1]; see :mod:`diffjpeg.jpeg.validate`) are skipped inside
compiled code, so the wrapper runs them once, eagerly, at its own boundary: compiled and eager
layers raise the same errors. The codec's C round trip is the exception: it checks the values it
reads, compiled or not. Where the last call at a shape saw it check the input itself (the layer's
"ste" forward pass, on the CPU), the wrapper leaves the values to it, and checks after the call
should the graph have stopped doing so (a recompilation).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .arguments import check_bool, check_int
from .contract import Defense
from .jpeg import native
from .jpeg.validate import check_image

__all__ = ["compile", "CompiledModule"]


class _PerShape:
    """``fn`` compiled once per input key (shape, dtype, device, modes), after ``after`` sightings."""

    def __init__(self, fn: Callable, after: int, max_shapes: int, options: dict):
        self.fn, self.after, self.max_shapes, self.options = fn, after, max_shapes, options
        self.seen: dict[tuple, int] = {}
        self.compiled: Callable | None = None
        self.shapes: set[tuple] = set()

    def __call__(self, key: tuple, *args):
        count = self.seen[key] = self.seen.get(key, 0) + 1
        if key not in self.shapes and (count < self.after or len(self.shapes) >= self.max_shapes):
            return self.fn(*args)
        if self.compiled is None:
            fn = self.fn  # a module is called from a plain function: one nn.Module call less per step (~15 us)
            self.compiled = torch.compile((lambda *a: fn(*a)) if isinstance(fn, nn.Module) else fn, dynamic=False,
                                          **self.options)
        self.shapes.add(key)
        return self.compiled(*args)


class CompiledModule(nn.Module):
    """``module`` with its ``forward`` (and ``loss``, when it has one) compiled per input shape.

    Made by :func:`compile`; parameters, buffers, ``.to()``, ``.train()``/``.eval()`` and every other
    attribute (the Defense facts ``differentiable``, ``randomized``, ``surrogate()``) are the wrapped
    module's. ``compiled_shapes`` lists the input keys that run compiled code.
    """

    def __init__(self, module: nn.Module, after: int, max_shapes: int, check: bool, options: dict):
        super().__init__()
        self.module = module
        self.check = check
        config = torch._dynamo.config  # one graph per shape must fit in dynamo's cache (torch < 2.6: cache_size_limit)
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), max_shapes))
        self._forward = _PerShape(module, after, max_shapes, options)
        self._checks_itself: set[tuple] = set()  # keys whose last call checked the input's values in C
        self._loss = _PerShape(module.loss, after, max_shapes, options) if callable(getattr(module, "loss", None)) \
            else None

    def __getattr__(self, name: str):
        if name == "loss" and self.__dict__.get("_loss") is not None:  # only when the module has a loss
            return self._compiled_loss
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)

    @property
    def compiled_shapes(self) -> list[tuple]:
        return sorted(self._forward.shapes | (self._loss.shapes if self._loss is not None else set()), key=str)

    def _key(self, x: Tensor, *rest) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, x.requires_grad, self.module.training, torch.is_grad_enabled(),
                *((tuple(t.shape), t.dtype) for t in rest if isinstance(t, Tensor)))

    def _checked(self, per_shape: _PerShape, x: Tensor, *rest) -> Tensor:
        """``per_shape(key, x, *rest)``, with ``x`` checked (when ``check``) before the call, or by the call."""
        if not self.check:
            return per_shape(self._key(x, *rest), x, *rest)
        if not isinstance(x, Tensor):
            check_image(x)  # its TypeError
        key = self._key(x, *rest)
        trusted = key in self._checks_itself
        if not trusted:
            check_image(x)
        with native.watching_value_checks() as checked:
            out = per_shape(key, x, *rest)
        if native.footprint(x) in checked:
            self._checks_itself.add(key)
        elif trusted:  # the graph no longer checks (recompiled, e.g. for a changed attribute): check now
            self._checks_itself.discard(key)
            check_image(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self._checked(self._forward, x)

    def _compiled_loss(self, x: Tensor, y: Tensor, *args, **kwargs) -> Tensor:
        """The wrapped module's ``loss`` (e.g. :meth:`DefendedModel.loss`), compiled per shape; ``loss``
        exists only when the wrapped module has one (attacks look for it)."""
        if args or kwargs:  # a custom loss function: run eagerly (it would be part of the graph's key)
            return self.module.loss(x, y, *args, **kwargs)
        return self._checked(self._loss, x, y)

    def extra_repr(self) -> str:
        return f"after={self._forward.after}, max_shapes={self._forward.max_shapes}"


def compile(module: nn.Module, *, after: int = 2, max_shapes: int = 8, check: bool | None = None,
            fullgraph: bool = False, mode: str | None = None) -> CompiledModule:
    """``module`` (a ``DiffJPEG``, any defense, a ``DefendedModel``, any model) compiled per input shape.

    Args:
        module: the ``nn.Module`` to compile; used as it is (not copied).
        after: compile a shape on its ``after``-th call (default 2: one-off shapes stay eager).
        max_shapes: most shapes with a compiled graph (default 8); further shapes run eagerly.
        check: run the input's value checks (``diffjpeg.jpeg.validate.check_image``) eagerly before
            the compiled call; default: for defenses and ``DefendedModel`` (image inputs in [0, 1]).
        fullgraph: ask ``torch.compile`` for one graph (an error at any graph break).
        mode: ``torch.compile``'s mode (``None``, ``"reduce-overhead"``, ``"max-autotune"``).

    Returns:
        a :class:`CompiledModule`, a drop-in replacement (same outputs as eager mode, same gradients).

    Example::

        import diffjpeg
        model = diffjpeg.compile(diffjpeg.DefendedModel(classifier, diffjpeg.DiffJPEG(q=50)))
        logits = model(images)          # eager; the second call at this shape compiles
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    check_int(after, "after", 1)
    check_int(max_shapes, "max_shapes", 1)
    if check is None:
        from .wrappers import DefendedModel  # wrappers sit above the codec; import on use
        check = isinstance(module, (Defense, DefendedModel))
    options = {"fullgraph": check_bool(fullgraph, "fullgraph")}
    if mode is not None:
        options["mode"] = mode
    return CompiledModule(module, after, max_shapes, check_bool(check, "check"), options)
