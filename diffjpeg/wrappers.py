"""Wrappers that turn any defense into something an attack can differentiate end to end.

* :class:`DefendedModel` -- defense, then normalisation, then classifier: an ordinary
  ``(B, C, H, W) -> (B, K)`` logits model that torchattacks (or any white-box attack) can attack.
* :class:`BPDA` -- run a defense exactly in the forward pass (also a non-differentiable one, e.g.
  Pillow's JPEG) and a differentiable surrogate's vector-Jacobian product in the backward pass.
* :class:`EOT` -- expectation over transformation: ``n`` draws of a randomised defense in one
  batched pass, averaged over logits or over the gradients of per-draw losses.
* :class:`RNGSnapshot` -- the one mechanism for replaying the draws of randomised defenses.

Replaying randomness
--------------------
Every randomised defense of the project draws *all* its randomness from a ``torch.Generator``
stored as an attribute of the module (conventionally ``self.generator``), or, when that attribute
is ``None``, from torch's global RNG. That convention is the whole replay mechanism:
:class:`RNGSnapshot` records the state of every generator found on a module and its submodules
plus the global CPU (and initialised CUDA) RNG, and ``with snapshot.replay(): ...`` runs code from
that recorded state and afterwards puts every RNG back where it was, so the world outside the
replayed call does not notice. EOT's ``fixed=True`` and BPDA's backward pass (which re-runs a
randomised surrogate with the forward pass's draws) both use it; a new randomised defense gets
replay for free by following the convention -- no per-defense code.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract import Defense
from .arguments import check_int

__all__ = ["DefendedModel", "BPDA", "EOT", "RNGSnapshot"]

REDUCTIONS = ("logits", "grad")


# --------------------------------------------------------------------------------------- helpers


class _Callable(nn.Module):
    """Wraps a plain callable ``x -> x'`` (e.g. a Pillow round trip) as a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def _as_module(obj: object, name: str) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if callable(obj):
        return _Callable(obj)
    raise TypeError(f"{name} must be an nn.Module or a callable x -> x', got {type(obj).__name__}")


def _module_device(module: nn.Module) -> torch.device | None:
    """Device of the first parameter or buffer, ``None`` for a module that holds neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch: int = 1024) -> Tensor:
    """Predicted labels ``(N,)`` of ``images`` ``(N, C, H, W)``, classified ``batch`` at a time.

    Each batch moves to the model's device (only one batch at a time is there); the labels stay on it.
    """
    device = _module_device(model)
    if images.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=device or images.device)
    return torch.cat([model(part if device is None else part.to(device)).argmax(1) for part in images.split(batch)])


def _generators(module: object) -> list[torch.Generator]:
    """Every distinct ``torch.Generator`` held as an attribute by ``module`` or its submodules."""
    found: dict[int, torch.Generator] = {}
    modules = module.modules() if isinstance(module, nn.Module) else [module]
    for m in modules:
        for value in vars(m).values():
            if isinstance(value, torch.Generator):
                found.setdefault(id(value), value)
    return list(found.values())


class RNGSnapshot:
    """The recorded state of every RNG a module draws from; replays it on demand.

    Covers each ``torch.Generator`` attribute of ``module`` and its submodules, torch's global CPU
    RNG and, when CUDA is initialised, the global CUDA RNGs. Randomness from elsewhere (numpy,
    Python's ``random``) is not covered.

    Example::

        snap = RNGSnapshot(defense)      # before the call whose draws you want again
        y1 = defense(x)
        with snap.replay():
            y2 = defense(x)              # same draws: torch.equal(y1, y2)
    """

    def __init__(self, module: object):
        self.generators = _generators(module)
        self.state = self._get()

    def _get(self):
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return torch.get_rng_state(), cuda, [g.get_state() for g in self.generators]

    def _set(self, state) -> None:
        cpu, cuda, gens = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for g, s in zip(self.generators, gens):
            g.set_state(s)

    @contextlib.contextmanager
    def replay(self):
        """Run the block from the recorded state; afterwards every RNG is back where it was."""
        current = self._get()
        self._set(self.state)
        try:
            yield
        finally:
            self._set(current)


# ---------------------------------------------------------------------------------------- BPDA


class _BPDAFunction(torch.autograd.Function):
    """forward: ``defense(x)`` without autograd; backward: VJP of ``surrogate`` at the same ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, bpda: "BPDA") -> Tensor:
        snapshot = RNGSnapshot(bpda) if bpda.randomized else None
        with torch.no_grad():
            y = bpda.defense(x)
        bpda._check_output(x, y)
        ctx.bpda, ctx.snapshot = bpda, snapshot
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        bpda = ctx.bpda
        if bpda.backward_module is None:  # identity surrogate: the VJP is the incoming gradient
            return grad, None
        (x,) = ctx.saved_tensors
        replay = ctx.snapshot.replay() if ctx.snapshot is not None else contextlib.nullcontext()
        with torch.enable_grad(), replay:
            xd = x.detach().requires_grad_(True)
            s = bpda.backward_module(xd)
            (gx,) = torch.autograd.grad(s, xd, grad, allow_unused=True)
        return (torch.zeros_like(x) if gx is None else gx), None


class BPDA(Defense):
    """Backward Pass Differentiable Approximation (Athalye et al., 2018).

    The forward pass runs ``defense`` exactly, under ``torch.no_grad()`` -- it may be
    non-differentiable or not even torch (a Pillow round trip, any callable on tensors). The
    backward pass returns the vector-Jacobian product of ``backward`` evaluated at the same input.

    Args:
        defense: module or callable ``(B, C, H, W) -> (B, C, H, W)``; its output must have the
            input's shape, dtype and device (checked on every call).
        backward: module or callable whose gradient is used. Default: ``defense.surrogate()`` when
            the defense has one, else the identity (straight-through; the incoming gradient is
            passed on unchanged, no extra pass).

    If the defense is randomised, the backward pass replays the forward pass's random draws
    (see :class:`RNGSnapshot`), so a surrogate drawing the same way (e.g. the defense itself)
    is differentiated at the draw that was actually applied.

    Shape:
        input ``(B, C, H, W)``, output ``(B, C, H, W)``.
    """

    differentiable = True

    def __init__(self, defense, backward=None):
        super().__init__()
        self.defense = _as_module(defense, "defense")
        if backward is None and hasattr(defense, "surrogate"):
            backward = defense.surrogate()
        if backward is None or isinstance(backward, nn.Identity):
            self.backward_module = None
        else:
            self.backward_module = _as_module(backward, "backward")
        self.randomized = bool(getattr(defense, "randomized", False))

    def surrogate(self) -> nn.Module:
        return nn.Identity() if self.backward_module is None else self.backward_module

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"BPDA: x must be a torch.Tensor, got {type(x).__name__}")
        return _BPDAFunction.apply(x, self)

    def _check_output(self, x: Tensor, y: object) -> None:
        name = type(self.defense).__name__
        if not isinstance(y, Tensor):
            raise TypeError(f"BPDA: the defense {name} must return a torch.Tensor, got {type(y).__name__}")
        for what, a, b in (("shape", tuple(y.shape), tuple(x.shape)), ("dtype", y.dtype, x.dtype),
                           ("device", y.device, x.device)):
            if a != b:
                raise ValueError(f"BPDA: the defense {name} returned {what} {a} for an input of {what} {b}; "
                                 f"a defense must keep the input's shape, dtype and device")


# ----------------------------------------------------------------------------------------- EOT


class EOT(nn.Module):
    """Expectation over transformation: ``n`` draws of a randomised module in one batched pass.

    ``module`` is a model ``(B, C, H, W) -> (B, K)`` (e.g. a :class:`DefendedModel` around a
    randomised defense) or a defense (then use it inside :class:`DefendedModel`, which moves the
    expectation outside the classifier; both spellings compute the same thing)::

        EOT(DefendedModel(clf, RandomJPEG((50, 90))), n=16)
        DefendedModel(clf, EOT(RandomJPEG((50, 90)), n=16))

    One forward call tiles the input ``n`` times along the batch (``x.repeat(n, 1, 1, 1)``: row
    ``j * B + i`` is draw ``j`` of image ``i``), makes **one** call of ``module`` on the
    ``(n * B, ...)`` batch (or a few cache-sized calls on the CPU, see ``max_batch``), and views
    the result as ``(n, B, ...)``.

    Args:
        module: module or callable to take the expectation of.
        n: number of draws (>= 1).
        reduce: where the average over draws is taken.

            * ``"logits"`` -- before the loss: ``forward`` returns the mean over draws, and the
              gradient of any loss ``L(forward(x))`` is the exact gradient of the loss of the mean
              logits. This is what every attack that computes its own loss on the model's output
              (all of torchattacks) gets.
            * ``"grad"`` -- after the loss: :meth:`loss` returns the mean of the ``n`` per-draw
              losses, so its gradient is exactly the mean of the ``n`` per-draw gradients (the
              estimator of Athalye et al. and torchattacks' ``EOTPGD``), from one batched pass.
              ``forward`` still returns the mean logits (``(B, K)``, what attacks need for
              predictions). An attack that only sees ``forward``'s output cannot get this
              estimator from any ``(B, K)`` tensor: its backward pass only receives the loss's
              gradient at that one tensor, not at each draw's logits.
        fixed: replay the same draws on every call (the masking check "does the attack succeed
            when the randomness is fixed?"). The RNG state is recorded at the first call (or
            after :meth:`reset`) and replayed on each later call, leaving every RNG outside the
            call untouched. Draws are the same for the same input batch size.
        max_batch: most images per call of ``module``. ``None``: all ``n * B`` in one call (best
            on GPUs). An int: whole draws are grouped into calls of at most
            ``max(1, max_batch // B)`` draws (same results up to float rounding, same gradients;
            the random draws themselves depend on the grouping). ``"auto"`` (default): ``None``
            on CUDA and other accelerators, ``128`` on the CPU, where activations of big batches
            fall out of the cache and one huge pass runs up to 2x slower than several
            cache-sized ones.

    Shape:
        input ``(B, ...)``; :meth:`draws` ``(n, B, ...)``; ``forward`` ``(B, ...)``.
    """

    def __init__(self, module, n: int = 16, reduce: str = "logits", fixed: bool = False,
                 max_batch: int | str | None = "auto"):
        super().__init__()
        check_int(n, "EOT: n", 1)
        if reduce not in REDUCTIONS:
            raise ValueError(f"EOT: reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if not (max_batch is None or max_batch == "auto"
                or (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 1)):
            raise ValueError(f"EOT: max_batch must be None, 'auto' or an int >= 1, got {max_batch!r}")
        self.module = _as_module(module, "module")
        self.n, self.reduce, self.fixed, self.max_batch = n, reduce, bool(fixed), max_batch
        self._snapshot: RNGSnapshot | None = None

    @property
    def randomized(self) -> bool:
        return not self.fixed and bool(getattr(self.module, "randomized", True))

    def reset(self) -> None:
        """Forget the recorded draws of ``fixed=True``; the next call records new ones."""
        self._snapshot = None

    def draws(self, x: Tensor, fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """All ``n`` draws, ``(n, B, ...)``, of ``fn`` (default: the wrapped module) on ``x``."""
        fn = self.module if fn is None else fn
        if self.fixed and self._snapshot is not None:
            with self._snapshot.replay():
                out = self._passes(fn, x)
        else:
            if self.fixed:  # record the draws of this first call; later calls replay them
                self._snapshot = RNGSnapshot(self.module)
            out = self._passes(fn, x)
        return out.view(self.n, x.shape[0], *out.shape[1:])

    def _passes(self, fn, x: Tensor) -> Tensor:
        """``fn`` on ``x`` tiled ``n`` times, in one call or in calls of whole draws."""
        b, n, limit = x.shape[0], self.n, self.max_batch
        if limit == "auto":
            limit = 128 if x.device.type == "cpu" else None
        per = n if limit is None else min(n, max(1, limit // b))
        tile = [1] * (x.ndim - 1)
        outs = [fn(x.repeat(min(per, n - start), *tile)) for start in range(0, n, per)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def forward(self, x: Tensor, fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Mean over the ``n`` draws, ``(B, ...)`` (both reductions; see the class docstring)."""
        return self.draws(x, fn).mean(0)

    def loss(self, x: Tensor, y: Tensor, loss_fn: Callable = F.cross_entropy,
             fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """The attacker's loss under the chosen reduction, from one batched pass.

        ``"logits"``: ``loss_fn(mean logits, y)``; ``"grad"``: mean over draws of
        ``loss_fn(logits of draw j, y)`` -- its gradient is exactly the mean of the per-draw
        gradients. ``loss_fn(logits (B, K), y (B,)) -> scalar``.
        """
        out = self.draws(x, fn)
        if self.reduce == "logits":
            return loss_fn(out.mean(0), y)
        return torch.stack([loss_fn(o, y) for o in out]).mean()

    def extra_repr(self) -> str:
        return f"n={self.n}, reduce={self.reduce!r}, fixed={self.fixed}, max_batch={self.max_batch!r}"


# -------------------------------------------------------------------------------- DefendedModel


def _channel_stats(value, name: str) -> Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
    if t.numel() not in (1, 3):
        raise ValueError(f"DefendedModel: {name} must have 1 or 3 entries (one per channel), got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"DefendedModel: {name} must be finite, got {t.tolist()}")
    return t.view(1, -1, 1, 1)


class DefendedModel(nn.Module):
    """``classifier(normalise(defense(x)))``: a defended classifier returning logits.

    Args:
        classifier: ``nn.Module`` mapping normalised ``(B, C, H, W)`` images to ``(B, K)`` logits.
        defense: a defense (module or callable ``x -> x'`` on images in [0, 1]), ``None`` for
            none, or an :class:`EOT` around a defense -- then the whole pipeline (defense,
            normalisation, classifier) is evaluated on the ``n`` draws in one batched pass and
            the logits are averaged (same as ``EOT(DefendedModel(classifier, defense), n)``).
            A non-differentiable defense (``differentiable = False``, e.g. ``JPEG``) should be
            wrapped in :class:`BPDA` to be attacked; a warning says so.
        mean, std: per-channel normalisation ``(x - mean) / std`` applied after the defense
            (1 or C entries each), or ``None`` for none.

    The model follows the classifier's device: ``.to(device)`` moves the classifier, the
    defense's parameters and the normalisation buffers together. An input on another device than
    the classifier's parameters raises a ``ValueError`` (no silent transfers). ``.eval()`` and
    ``.train()`` reach the classifier and the defense; a new DefendedModel starts in the
    classifier's mode (so wrapping an eval-mode classifier gives an eval-mode model).

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, K)`` logits.
    """

    def __init__(self, classifier: nn.Module, defense=None, mean: Sequence[float] | Tensor | None = None,
                 std: Sequence[float] | Tensor | None = None):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"DefendedModel: classifier must be an nn.Module, got {type(classifier).__name__}")
        self.classifier = classifier
        self.defense = nn.Identity() if defense is None else _as_module(defense, "defense")
        inner = self.defense.module if isinstance(self.defense, EOT) else self.defense
        if isinstance(inner, Defense) and not inner.differentiable:
            warnings.warn(f"DefendedModel: the defense {type(inner).__name__} is not differentiable, so gradient-based "
                          f"attacks get no gradient through it; attack BPDA({type(inner).__name__}(...)) instead",
                          stacklevel=2)
        std_t = _channel_stats(std, "std")
        if std_t is not None and (std_t <= 0).any():
            raise ValueError(f"DefendedModel: std must be > 0, got {std_t.flatten().tolist()}")
        self.register_buffer("mean", _channel_stats(mean, "mean"), persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        self.train(classifier.training)  # start in the classifier's mode (an eval classifier stays eval)

    def normalize(self, x: Tensor) -> Tensor:
        if self.mean is not None:
            x = x - self.mean.to(x.dtype)
        if self.std is not None:
            x = x / self.std.to(x.dtype)
        return x

    def _pipeline(self, x: Tensor) -> Tensor:
        defense = self.defense.module if isinstance(self.defense, EOT) else self.defense
        return self.classifier(self.normalize(defense(x)))

    def _check_device(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"DefendedModel: x must be a torch.Tensor, got {type(x).__name__}")
        device = _module_device(self.classifier)
        if device is not None and x.device != device:
            raise ValueError(f"DefendedModel: x is on {x.device} but the classifier is on {device}; "
                             f"move the input with x.to('{device}')")

    def forward(self, x: Tensor) -> Tensor:
        self._check_device(x)
        if isinstance(self.defense, EOT):
            return self.defense(x, self._pipeline)
        return self._pipeline(x)

    def loss(self, x: Tensor, y: Tensor, loss_fn: Callable = F.cross_entropy) -> Tensor:
        """``loss_fn(self(x), y)``; with an :class:`EOT` defense, :meth:`EOT.loss` (its reduction)."""
        self._check_device(x)
        if isinstance(self.defense, EOT):
            return self.defense.loss(x, y, loss_fn, self._pipeline)
        return loss_fn(self._pipeline(x), y)
