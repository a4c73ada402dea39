"""RandomResizePad: random resizing then random padding (Xie et al., ICLR 2018), the standard
target of EOT attacks (Athalye et al. 2018).

For an ``H x W`` input and ``pad = P``, each call draws, per image and from ``self.generator``:

* ``d`` uniform in {0, ..., P - 1}: the image is resized to ``(H + d) x (W + d)``;
* ``top``, ``left`` uniform in {0, ..., P - d} (independently): the resized image is placed with
  its top-left corner at ``(top, left)`` of a ``(H + P) x (W + P)`` canvas filled with ``fill``.

With ``H = W = 299`` and ``P = 32`` this is Xie et al.'s setting (resize to [299, 331), pad to
331 x 331); for 224 x 224 inputs ``pad=30`` gives sizes in [224, 254) on a 254 x 254 canvas.

**The output is larger than the input**: ``(B, C, H + P, W + P)``, a fixed size for a given input
size, so the classifier must accept it (global pooling, as in Xie et al.'s Inception networks).
``DefendedModel`` and ``EOT`` work unchanged; ``BPDA`` requires same-shape defenses and is not
needed here (the defense is differentiable and its own surrogate).

Resizing (``mode``), with source coordinates from output row ``u`` of the resized image
(columns alike), scale ``s = H / (H + d)``:

* ``"nearest"`` (Xie et al.'s choice): source row ``floor(u * H / (H + d))`` in exact integer
  arithmetic (torch's and TensorFlow 1's nearest rule);
* ``"bilinear"``: source position ``max((u + 1/2) s - 1/2, 0)``, linear interpolation between the
  two neighbouring rows, the upper one capped at ``H - 1`` (``F.interpolate(mode="bilinear",
  align_corners=False, antialias=False)``).

Both are evaluated for the whole batch at once as two gathers (rows, then columns) with per-image
indices and weights, so one call serves images of different drawn sizes on CPU or CUDA. The output
is differentiable in the input (``differentiable = True``); gradients of padding pixels are 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..contract import Defense, draw_device
from ..jpeg.validate import check_image
from ..arguments import check_choice, check_generator, check_int, check_real
from .registry import register

__all__ = ["RandomResizePad", "resize_pad", "RESIZE_MODES"]

RESIZE_MODES = ("nearest", "bilinear")


def _axis(n: int, pad: int, d: Tensor, offset: Tensor, mode: str, dtype: torch.dtype):
    """Per-image source indices and weights along one axis: ``lo, hi (B, n + pad)``, ``w, inside``."""
    u = torch.arange(n + pad, device=d.device)[None, :] - offset[:, None]  # row in the resized image
    size = n + d[:, None]
    inside = (u >= 0) & (u < size)
    u = u.clamp(min=0)
    if mode == "nearest":
        lo = torch.div(u * n, size, rounding_mode="floor").clamp(max=n - 1)
        return lo, lo, torch.zeros(lo.shape, dtype=dtype, device=d.device), inside
    src = ((u.double() + 0.5) * n / size - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    return lo, hi, (src - lo).to(dtype), inside


def _gather(x: Tensor, dim: int, lo: Tensor, hi: Tensor, w: Tensor, mode: str) -> Tensor:
    """Interpolate ``x`` along ``dim`` (2 or 3) at per-image indices ``(B, L)``."""
    shape, expand = [x.shape[0], 1, 1, 1], list(x.shape)
    shape[dim] = expand[dim] = lo.shape[1]
    a = x.gather(dim, lo.view(shape).expand(expand))
    if mode == "nearest":
        return a
    return torch.lerp(a, x.gather(dim, hi.view(shape).expand(expand)), w.view(shape))


def resize_pad(x: Tensor, d: Tensor, top: Tensor, left: Tensor, pad: int, mode: str = "nearest",
               fill: float = 0.0) -> Tensor:
    """Resize image ``i`` to ``(H + d_i) x (W + d_i)`` and place it at ``(top_i, left_i)`` of a
    ``(H + pad) x (W + pad)`` canvas of ``fill``.

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        d, top, left: ``(B,)`` integer tensors, ``0 <= d <= pad``, ``0 <= top, left <= pad - d``.
        pad: canvas size minus input size (>= 1).
        mode: "nearest" or "bilinear"; fill: canvas value in [0, 1].

    Returns:
        ``(B, C, H + pad, W + pad)``, same dtype and device, differentiable in ``x``.
    """
    check_image(x)
    pad = check_int(pad, "pad", 1)
    mode = check_choice(mode, RESIZE_MODES, "mode")
    fill = check_real(fill, "fill", 0.0, 1.0)
    b = x.shape[0]
    for name, t in (("d", d), ("top", top), ("left", left)):
        if not isinstance(t, Tensor) or t.shape != (b,) or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of shape ({b},), got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
                             f"{'' if not isinstance(t, Tensor) else ' ' + str(t.dtype)}")
    if ((d < 0) | (d > pad)).any():
        raise ValueError(f"d must be in [0, pad = {pad}], got {d.tolist()}")
    if ((top < 0) | (top > pad - d) | (left < 0) | (left > pad - d)).any():
        raise ValueError(f"top and left must be in [0, pad - d], got top={top.tolist()}, left={left.tolist()}, "
                         f"pad - d={(pad - d).tolist()}")
    return _resize_pad(x, d.to(x.device), top.to(x.device), left.to(x.device), pad, mode, fill)


def _resize_pad(x: Tensor, d: Tensor, top: Tensor, left: Tensor, pad: int, mode: str, fill: float) -> Tensor:
    h, w = x.shape[-2:]
    rlo, rhi, rw, rin = _axis(h, pad, d, top, mode, x.dtype)
    clo, chi, cw, cin = _axis(w, pad, d, left, mode, x.dtype)
    y = _gather(_gather(x, 2, rlo, rhi, rw, mode), 3, clo, chi, cw, mode)
    inside = (rin[:, None, :, None] & cin[:, None, None, :])
    return torch.where(inside, y, torch.full((), fill, dtype=x.dtype, device=x.device))


class RandomResizePad(Defense):
    """Random resize and random pad, drawn per image and per call (module docstring).

    Args:
        pad: ``P`` >= 1; sizes ``H + d``, ``d`` in [0, P), on an ``(H + P) x (W + P)`` canvas.
        mode: "nearest" (default, Xie et al.) or "bilinear".
        fill: value of the padding, in [0, 1] (Xie et al. pad with 0).
        generator: ``torch.Generator`` to draw from (torch's global RNG when ``None``).

    Every call draws ``d``, ``top``, ``left`` (``(B,)`` int64, kept in ``last_draw``) in train and
    eval mode alike. ``randomized = True``, ``differentiable = True``, ``surrogate()`` is the module.

    Shape:
        input ``(B, C, H, W)`` in [0, 1]; output ``(B, C, H + pad, W + pad)`` -- larger than the input.
    """

    differentiable = True
    randomized = True

    def __init__(self, pad: int = 32, mode: str = "nearest", fill: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.pad = check_int(pad, "pad", 1)
        self.mode = check_choice(mode, RESIZE_MODES, "mode")
        self.fill = check_real(fill, "fill", 0.0, 1.0)
        self.generator = check_generator(generator)
        self.last_draw: dict[str, Tensor] | None = None

    def sample(self, batch: int) -> dict[str, Tensor]:
        """Draw ``{"d", "top", "left"}``, each ``(batch,)`` int64 on the generator's device."""
        device = draw_device(self.generator)
        d = torch.randint(0, self.pad, (batch,), generator=self.generator, device=device)
        u = torch.rand((2, batch), generator=self.generator, device=device, dtype=torch.float64)
        room = (self.pad - d + 1).double()  # top, left uniform in {0, ..., pad - d}
        top, left = (u * room).floor().long().minimum(self.pad - d)  # u < 1; minimum guards float rounding
        return {"d": d, "top": top, "left": left}

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        draw = self.sample(x.shape[0])
        self.last_draw = draw
        return _resize_pad(x, *(draw[k].to(x.device) for k in ("d", "top", "left")), self.pad, self.mode, self.fill)

    def surrogate(self) -> "RandomResizePad":
        return self

    def extra_repr(self) -> str:
        return f"pad={self.pad}, mode={self.mode!r}, fill={self.fill}"


register("resize_pad", RandomResizePad)
