"""Wrappers that turn any defense into something an attack can differentiate end to end.

* :class:`DefendedModel` -- defense, then normalisation, then classifier: an ordinary
  ``(B, C, H, W) -> (B, K)`` logits model that torchattacks (or any white-box attack) can attack.
* :class:`BPDA` -- run a defense exactly in the forward pass (also a non-differentiable one, e.g.
  Pillow's JPEG) and a differentiable surrogate's vector-Jacobian product in the backward pass.
* :class:`EOT` -- expectation over transformation: ``n`` draws of a randomised defense in one
  batched pass, averaged over logits or over the gradients of per-draw losses; around a defense it
  is itself a :class:`~diffjpeg.contract.Defense`.
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
import functools
import os
import warnings
from numbers import Real
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract import Defense, as_defense, check_output
from .arguments import check_bool, check_int

__all__ = ["DefendedModel", "BPDA", "EOT", "MAX_DRAWS", "RNGSnapshot", "predict"]

REDUCTIONS = ("logits", "grad")


# --------------------------------------------------------------------------------------- helpers


def _as_module(obj: object, name: str) -> nn.Module:
    """A module as it is; a plain callable ``x -> x'`` (e.g. a Pillow round trip) wrapped as one."""
    return obj if isinstance(obj, nn.Module) else as_defense(obj, name)


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


def _check_surrogate(surrogate: nn.Module, x: Tensor, s: object) -> None:
    """BPDA's surrogate must return a tensor of the input's shape that autograd can differentiate."""
    name = type(surrogate).__name__
    if not isinstance(s, Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(f"BPDA: the surrogate {name} returned {got} for an input of shape {tuple(x.shape)}; "
                         f"a surrogate must keep the input's shape")
    if not s.requires_grad:
        raise ValueError(f"BPDA: the surrogate {name} returned a tensor with no gradient (detached, or computed "
                         f"under torch.no_grad()); a surrogate must be differentiable in its input")


class _BPDAFunction(torch.autograd.Function):
    """forward: ``defense(x)`` without autograd; backward: VJP of ``surrogate`` at the same ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, bpda: "BPDA") -> Tensor:
        snapshot = RNGSnapshot(bpda) if bpda.randomized else None
        with torch.no_grad():
            y = bpda.defense(x)
        check_output(bpda.defense, x, y, "BPDA")
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
            _check_surrogate(bpda.backward_module, xd, s)
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

    @torch.compiler.disable  # any code (Pillow); torch.compile breaks the graph here, compile the surrogate
    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"BPDA: x must be a torch.Tensor, got {type(x).__name__}")
        return _BPDAFunction.apply(x, self)


# ----------------------------------------------------------------------------------------- EOT


#: the most draws :class:`EOT` accepts (attacks use 10 to 1000; more is a typo or a memory accident)
MAX_DRAWS = 100_000


@functools.lru_cache(maxsize=None)
def _device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (CPU: physical RAM), ``None`` when unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[1]
        if device.type == "cpu":
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError, RuntimeError):
        pass
    return None


def _check_memory(need: int, device: torch.device, what: str) -> None:
    """Refuse a call whose tensors alone need more than the device's whole memory (not while
    ``torch.compile`` traces: the eager calls at the same shapes have checked it)."""
    if not torch.compiler.is_compiling():
        _refuse_oversized(need, device, what)


@torch.compiler.disable
def _refuse_oversized(need: int, device: torch.device, what: str) -> None:
    have = _device_memory(device)
    if have is not None and need > have:
        raise ValueError(f"EOT: {what} need {need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of "
                         f"memory of {device}; lower n or max_batch")


class EOT(Defense):
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

    Around a defense, EOT is itself a defense (the :class:`~diffjpeg.contract.Defense` contract):
    ``differentiable`` is the wrapped defense's, ``randomized`` is true unless ``fixed``,
    ``surrogate()`` is EOT over the defense's surrogate (identity when it has none), and
    :meth:`compose` / :meth:`compose_loss` run the rest of a model (normalisation, classifier) on
    every draw, which is how :class:`DefendedModel` moves the expectation outside the classifier.

    Sizes: ``n`` is at most :data:`MAX_DRAWS` (100 000), and a call whose tiled input alone (or,
    after the first group of draws, whose outputs) would need more than the device's whole memory
    (CPU: physical RAM) is refused with the figure, before it exhausts memory.

    Shape:
        input ``(B, ...)``; :meth:`draws` ``(n, B, ...)``; ``forward`` ``(B, ...)``.
    """

    def __init__(self, module, n: int = 16, reduce: str = "logits", fixed: bool = False,
                 max_batch: int | str | None = "auto"):
        super().__init__()
        check_int(n, "EOT: n", 1)
        if n > MAX_DRAWS:
            raise ValueError(f"EOT: n must be at most MAX_DRAWS = {MAX_DRAWS} draws, got {n}; the tiled batch of n "
                             f"copies of the input would not fit in memory or time")
        if reduce not in REDUCTIONS:
            raise ValueError(f"EOT: reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if not (max_batch is None or max_batch == "auto"
                or (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch >= 1)):
            raise ValueError(f"EOT: max_batch must be None, 'auto' or an int >= 1, got {max_batch!r}")
        self.module = _as_module(module, "module")
        self.n, self.reduce, self.fixed, self.max_batch = n, reduce, check_bool(fixed, "fixed"), max_batch
        self._snapshot: RNGSnapshot | None = None

    @property
    def randomized(self) -> bool:
        return not self.fixed and bool(getattr(self.module, "randomized", True))

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.module, "differentiable", True))

    def surrogate(self) -> nn.Module:
        inner = self.module.surrogate() if hasattr(self.module, "surrogate") else nn.Identity()
        if isinstance(inner, nn.Identity):
            return nn.Identity()
        return EOT(inner, self.n, self.reduce, max_batch=self.max_batch)

    def _then(self, rest: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """One draw of the wrapped defense, checked, then ``rest``."""
        return lambda t: rest(check_output(self.module, t, self.module(t), resize=True))

    def compose(self, x: Tensor, rest: Callable[[Tensor], Tensor]) -> Tensor:
        """Mean over the draws of ``rest(defense(x))`` (the expectation outside ``rest``)."""
        return self.forward(x, self._then(rest))

    def compose_loss(self, x: Tensor, y: Tensor, rest: Callable[[Tensor], Tensor],
                     loss_fn: Callable = F.cross_entropy) -> Tensor:
        """:meth:`loss` of ``rest(defense(x))`` over the draws, under the chosen reduction."""
        return self.loss(x, y, loss_fn, self._then(rest))

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
        _check_memory(per * x.numel() * x.element_size(), x.device, f"{per} draws of the input {tuple(x.shape)} "
                      f"{x.dtype} per call (n={n}, max_batch={self.max_batch!r})")
        tile = [1] * (x.ndim - 1)
        outs = [fn(x.repeat(per, *tile))]
        if per < n:
            _check_memory(outs[0].numel() * outs[0].element_size() // per * n, outs[0].device,
                          f"the outputs of n={n} draws {(n * b, *outs[0].shape[1:])}")
        outs += [fn(x.repeat(min(per, n - start), *tile)) for start in range(per, n, per)]
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
    if isinstance(value, (str, bytes)) or not isinstance(value, (Real, Sequence, Tensor, np.ndarray)):
        raise TypeError(f"DefendedModel: {name} must be a number, a sequence of 1 or 3 numbers (one per channel) or "
                        f"a tensor, got {type(value).__name__} {value!r}; e.g. ImageNet's "
                        f"mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)")
    try:
        t = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"DefendedModel: {name} must be numbers (one per channel), got {value!r}: {exc}") from None
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
    defense's parameters and the normalisation buffers together. ``.eval()`` and ``.train()``
    reach the classifier and the defense; a new DefendedModel starts in the classifier's mode (so
    wrapping an eval-mode classifier gives an eval-mode model).

    Every call checks, once, what crosses each boundary, with an error that names the culprit:
    the input (a tensor on the classifier's device, ``ValueError`` otherwise; as many channels as
    ``mean``/``std`` have entries when they have 3), the defense's output (a tensor of the input's
    batch size, channels, dtype and device: ``TypeError``/``ValueError`` naming the defense; the
    image size may change, as Xie et al.'s random resize and pad does) and the classifier's output
    (a ``(B, K)`` tensor: ``TypeError``/``ValueError`` naming the classifier).

    The defense is used through the :class:`~diffjpeg.contract.Defense` contract's ``compose``
    (a plain module or callable is wrapped as a defense), so an :class:`EOT` defense needs no
    special case here.

    Example::

        model = DefendedModel(classifier, BPDA(JPEG(q=50)), mean=(0.5,) * 3, std=(0.25,) * 3).eval()
        logits = model(images)                  # (B, K)
        loss = model.loss(images, labels)       # what diffjpeg.attacks.core ascends

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, K)`` logits.
    """

    def __init__(self, classifier: nn.Module, defense=None, mean: Sequence[float] | Tensor | None = None,
                 std: Sequence[float] | Tensor | None = None):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"DefendedModel: classifier must be an nn.Module, got {type(classifier).__name__}")
        self.classifier = classifier
        self.defense = as_defense(nn.Identity() if defense is None else defense, "defense")
        if not self.defense.differentiable:
            name = type(getattr(self.defense, "module", self.defense)).__name__
            warnings.warn(f"DefendedModel: the defense {name} is not differentiable, so gradient-based "
                          f"attacks get no gradient through it; attack BPDA({name}(...)) instead", stacklevel=2)
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

    def _rest(self, z: Tensor) -> Tensor:
        """Normalisation and classifier on the defense's output ``z``, the classifier's output checked."""
        out = self.classifier(self.normalize(z))
        if not isinstance(out, Tensor):
            raise TypeError(f"DefendedModel: the classifier {type(self.classifier).__name__} must return a logits "
                            f"tensor (B, K), got {type(out).__name__}; wrap it to return only the logits")
        if out.ndim != 2 or out.shape[0] != z.shape[0]:
            raise ValueError(f"DefendedModel: the classifier {type(self.classifier).__name__} returned shape "
                             f"{tuple(out.shape)} for {z.shape[0]} images; it must return logits (B, K) = "
                             f"({z.shape[0]}, classes)")
        return out

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"DefendedModel: x must be a torch.Tensor, got {type(x).__name__}")
        device = _module_device(self.classifier)
        if device is not None and x.device != device:
            raise ValueError(f"DefendedModel: x is on {x.device} but the classifier is on {device}; "
                             f"move the input with x.to('{device}')")
        for name in ("mean", "std"):
            stats = getattr(self, name)
            if stats is not None and stats.numel() > 1 and (x.ndim != 4 or x.shape[1] != stats.numel()):
                raise ValueError(f"DefendedModel: {name} has {stats.numel()} entries (one per channel) but x has "
                                 f"shape {tuple(x.shape)}; give images (B, {stats.numel()}, H, W) or 1 entry")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.defense.compose(x, self._rest)

    def loss(self, x: Tensor, y: Tensor, loss_fn: Callable = F.cross_entropy) -> Tensor:
        """The attacker's loss ``loss_fn(self(x), y)``; with an :class:`EOT` defense, its reduction's loss."""
        self._check_input(x)
        return self.defense.compose_loss(x, y, self._rest, loss_fn)
