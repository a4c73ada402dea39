"""Learning JPEG quantisation tables by gradient descent, and exporting them to real JPEG files.

:func:`learn_qtables` optimises the luma and chroma tables of a learnable
:class:`~diffjpeg.jpeg.codec.DiffJPEG` (forward pass bit-identical to libjpeg-turbo, backward pass
the chosen rounding estimator) for a frozen classifier:

    loss = CE(defended clean) [+ CE(defended adversarial)] + lam * rate_proxy(images, tables)

where the adversarial examples are crafted on every step by a few L-inf PGD steps against the
*current* defended model, and :func:`~diffjpeg.learn.rate.rate_proxy` is the differentiable estimate
of the entropy-coded bits per pixel (without it the optimum is "no compression": all-ones tables).
The learned tables are integers in [1, 255], usable as ``JPEG(qtables=...)``, ``DiffJPEG(qtables=...)``
and Pillow's ``save(..., qtables=...)`` (:func:`export_jpeg`); :func:`save_tables` / :func:`load_tables`
keep them as JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import arguments
from ..jpeg import validate
from ..jpeg.codec import DiffJPEG
from ..attacks.core import pgd
from ..files import atomic_write
from ..jpeg.pillow import write_image
from ..wrappers import DefendedModel
from .rate import rate_proxy
from .training import Minibatches, resumable_loop

__all__ = ["LearnResult", "learn_qtables", "objective", "export_jpeg", "save_tables", "load_tables",
           "tables_tensor"]

_ADVERSARIAL_KEYS = {"eps", "steps", "alpha", "weight"}


@dataclass
class LearnResult:
    """What :func:`learn_qtables` returns.

    Attributes:
        tables: ``[luma, chroma]``, two lists of 64 ints in [1, 255], natural (row-major) order, as
            Pillow's ``save(..., qtables=...)`` takes them.
        layer: the learnable ``DiffJPEG`` holding the learned tables (its ``state_dict`` round-trips).
        history: per optimisation step, ``"ce"`` (clean cross-entropy), ``"ce_adv"`` (adversarial
            cross-entropy, 0 without ``adversarial``), ``"rate"`` (proxy bits per pixel) and
            ``"total"`` (the minimised objective).
    """

    tables: list[list[int]]
    layer: DiffJPEG
    history: dict[str, list[float]] = field(default_factory=dict)

    def qtables(self) -> Tensor:
        """The tables as a ``(2, 8, 8)`` float tensor, for ``JPEG(qtables=...)`` / ``DiffJPEG(qtables=...)``."""
        return tables_tensor(self.tables)


def tables_tensor(tables: object) -> Tensor:
    """``[luma, chroma]`` (two 64-entry lists, natural order) or any ``(2, 8, 8)``-shaped data -> ``(2, 8, 8)`` float32.

    Raises ``ValueError`` unless there are exactly two tables of 64 integers in [1, 255].
    """
    try:
        t = torch.as_tensor(np.asarray(tables, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tables must be two lists of 64 integers (luma, chroma), got {type(tables).__name__}: "
                        f"{exc}") from None
    if t.numel() != 128:
        raise ValueError(f"tables must hold two tables of 64 entries (luma, chroma), got {t.numel()} entries "
                         f"of shape {tuple(t.shape)}")
    t = t.reshape(2, 8, 8)
    validate.check_qtables(t, "tables")
    if not torch.equal(t, t.round()):
        raise ValueError("tables must be integers (a JPEG file stores integer tables), got non-integer entries")
    return t.float()


def objective(classifier: nn.Module, layer: DiffJPEG, images: Tensor, labels: Tensor, lam: float,
              adversarial_images: Tensor | None = None, mean=None, std=None, adversarial_weight: float = 1.0
              ) -> dict[str, Tensor]:
    """The loss :func:`learn_qtables` minimises, on one batch.

    Args:
        classifier: frozen classifier on normalised images -> logits.
        layer: the (learnable) ``DiffJPEG`` defense, used in its current mode (train mode: the
            estimator's forward pass, e.g. "noise"; eval mode: the exact codec).
        images: ``(B, C, H, W)`` in [0, 1]; labels: ``(B,)`` int64.
        lam: weight of the rate term (cross-entropy per bit per pixel), >= 0.
        adversarial_images: ``(B, C, H, W)`` adversarial versions of ``images``, or ``None``.
        mean, std: normalisation applied after the defense (as ``DefendedModel``).
        adversarial_weight: weight of the adversarial cross-entropy.

    Returns:
        ``{"ce", "ce_adv", "rate", "total"}`` scalar tensors (``total`` differentiable in the tables).
    """
    training = layer.training
    model = DefendedModel(classifier, layer, mean, std)
    layer.train(training)  # keep the layer's mode (DefendedModel starts in the classifier's)
    ce = F.cross_entropy(model(images), labels)
    ce_adv = F.cross_entropy(model(adversarial_images), labels) if adversarial_images is not None \
        else ce.new_zeros(())
    tables = layer.qtables if layer.qtables is not None else torch.as_tensor(layer.export_qtables(),
                                                                             dtype=images.dtype).reshape(2, 8, 8)
    rate = rate_proxy(images, tables, layer.subsampling)
    total = ce + adversarial_weight * ce_adv + lam * rate
    return {"ce": ce, "ce_adv": ce_adv, "rate": rate, "total": total}


def _check_adversarial(adversarial: object) -> dict | None:
    if adversarial is None:
        return None
    if not isinstance(adversarial, dict):
        raise TypeError(f"adversarial must be None or a dict with keys eps, steps[, alpha, weight], "
                        f"got {type(adversarial).__name__}")
    unknown = set(adversarial) - _ADVERSARIAL_KEYS
    if unknown or "eps" not in adversarial:
        raise ValueError(f"adversarial must have key 'eps' and optionally {sorted(_ADVERSARIAL_KEYS - {'eps'})}, "
                         f"got keys {sorted(adversarial)}")
    out = {"eps": arguments.check_real(adversarial["eps"], "adversarial['eps']", 0.0, 1.0, lo_open=True),
           "steps": arguments.check_int(adversarial.get("steps", 3), "adversarial['steps']", 1),
           "alpha": None, "weight": 1.0}
    if adversarial.get("alpha") is not None:
        out["alpha"] = arguments.check_real(adversarial["alpha"], "adversarial['alpha']", 0.0, 1.0, lo_open=True)
    if adversarial.get("weight") is not None:
        out["weight"] = arguments.check_real(adversarial["weight"], "adversarial['weight']", 0.0, float("inf"),
                                            hi_open=True)
    return out


def _digest(state: dict[str, Tensor]) -> str:
    """Short SHA-1 of a state dict's names and tensor bytes (identifies weights across processes)."""
    h = hashlib.sha1()
    for name, value in state.items():
        h.update(name.encode())
        if isinstance(value, Tensor):
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:  # a module's extra state: any picklable object
            h.update(repr(value).encode())
    return h.hexdigest()[:16]


def learn_qtables(classifier: nn.Module, images: Tensor, labels: Tensor, *, init_quality: float = 50,
                  init_tables: Tensor | None = None, lam: float = 0.1, adversarial: dict | None = None,
                  steps: int = 100, lr: float = 1.0, batch_size: int = 64, subsampling: str = "420",
                  rounding: str = "ste", generator: torch.Generator | None = None,
                  checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 20,
                  mean=None, std=None, progress: bool = True) -> LearnResult:
    """Learn JPEG quantisation tables that keep a frozen classifier accurate at a low bit rate.

    Args:
        classifier: ``nn.Module`` mapping normalised ``(B, C, H, W)`` images to ``(B, K)`` logits. It is
            frozen (eval mode, no parameter updates; its ``requires_grad`` flags are left as they were).
        images: ``(N, C, H, W)`` float in [0, 1], C in {1, 3}; labels: ``(N,)`` int64 in [0, K).
        init_quality: IJG quality in [1, 100] whose tables start the optimisation (unless ``init_tables``).
        init_tables: ``(2, 8, 8)`` starting tables in [1, 255], or ``None``.
        lam: weight of the rate proxy (cross-entropy per bit per pixel), >= 0.
        adversarial: ``None`` (clean images only) or ``dict(eps, steps=3, alpha=None, weight=1.0)``: on every
            step, L-inf PGD with a random start (:func:`diffjpeg.attacks.core.pgd`) against the current
            defended model, whose cross-entropy (times ``weight``) joins the loss.
        steps: optimisation steps (one minibatch each), >= 1.
        lr: Adam's learning rate in table units (entries are in [1, 255]), > 0.
        batch_size: images per step, >= 1.
        subsampling: "444", "422" or "420" (ignored for grayscale images).
        rounding: the layer's rounding estimator while the tables learn. "ste" (default): the loss's
            forward pass is the exact codec, and the gradient of a dequantised coefficient with respect
            to its table entry is the rounding error ``round(u) - u``; correlated with the classifier's
            gradient at the reconstruction, it carries (to second order) the cost of coarser steps.
            "noise": ``+ U(-1/2, 1/2)`` instead of rounding in the loss's forward pass, as learned image
            compression does (the same second-order signal from random instead of actual errors).
            "soft", "cubic", "fourier": their smooth forward pass. Adversarial examples are always
            crafted, and :meth:`DiffJPEG.eval` evaluation runs, on the exact codec.
        generator: source of minibatch order and PGD starts (default: seeded with 0).
        checkpoint: file written atomically every ``checkpoint_every`` steps and at the end; when it
            exists, training resumes from it (a ``ValueError`` when it was written with other settings,
            another classifier's weights or other starting tables).
        mean, std: normalisation applied after the defense, before the classifier.
        progress: show a tqdm bar.

    Returns:
        :class:`LearnResult` with the integer tables, the layer and the per-step history.
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
    validate.check_image(images, "images")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != images.shape[0] \
            or labels.dtype != torch.int64:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an int64 tensor of shape ({images.shape[0]},) (one per image), got {got}")
    validate.check_quality(init_quality, "init_quality")
    lam = arguments.check_real(lam, "lam", 0.0, float("inf"), hi_open=True)
    steps = arguments.check_int(steps, "steps", 1)
    lr = arguments.check_real(lr, "lr", 0.0, float("inf"), lo_open=True, hi_open=True)
    batch_size = arguments.check_int(batch_size, "batch_size", 1)
    checkpoint_every = arguments.check_int(checkpoint_every, "checkpoint_every", 1)
    adversarial = _check_adversarial(adversarial)
    generator = arguments.check_generator(generator)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    device = next(classifier.parameters()).device if any(True for _ in classifier.parameters()) \
        else images.device
    arguments.check_choice(rounding, ("ste", "noise", "soft", "cubic", "fourier"), "rounding")
    layer = DiffJPEG(init_quality, subsampling, rounding, qtables=init_tables, learnable=True,
                     generator=generator).to(device)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    # the classifier's weights and the starting tables too: resuming against others would mix two runs
    config = {"images": images.shape[0], "lam": lam, "adversarial": repr(adversarial), "lr": lr,
              "batch_size": batch_size, "subsampling": layer.subsampling, "rounding": rounding,
              "classifier": _digest(classifier.state_dict()), "start": _digest(layer.state_dict())}
    batches = Minibatches(images.shape[0], batch_size, generator)  # a fresh permutation per pass over the data
    was_training = classifier.training
    classifier.eval()
    frozen = [(p, p.requires_grad) for p in classifier.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    model = DefendedModel(classifier, layer, mean, std).to(device)
    model.eval()

    def step(i: int) -> dict[str, float]:
        idx = batches.next()
        x, y = images[idx].to(device), labels[idx].to(device)
        adv = None
        if adversarial is not None:
            layer.eval()  # attack the exact codec
            adv = pgd(model, x, y, adversarial["eps"], adversarial["steps"], adversarial["alpha"], generator=generator)
        layer.train()  # the estimator's forward pass ("noise": uniform noise) for the loss
        weight = adversarial["weight"] if adversarial is not None else 1.0
        terms = objective(classifier, layer, x, y, lam, adv, mean, std, weight)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        return {key: float(value.detach()) for key, value in terms.items()}

    parts = {"layer": layer, "optimizer": optimizer, "generator": generator, "batches": batches}
    try:
        records = resumable_loop(step, steps, parts=parts, kind="learn_qtables", checkpoint=checkpoint, config=config,
                                 unit="step", every=checkpoint_every, progress=progress, desc="learn qtables")
    finally:
        layer.eval()
        for p, flag in frozen:
            p.requires_grad_(flag)
        classifier.train(was_training)
    history = {key: [r[key] for r in records] for key in ("ce", "ce_adv", "rate", "total")}
    return LearnResult(tables=layer.export_qtables(), layer=layer, history=history)


def export_jpeg(path: str | os.PathLike, image: Tensor, tables: object, subsampling: str = "420") -> Path:
    """Write ``image`` as a real baseline .jpg with ``tables`` (Pillow / libjpeg-turbo).

    Args:
        path: destination file (its folder must exist).
        image: ``(C, H, W)`` or ``(1, C, H, W)`` float in [0, 1], C in {1, 3}; stored as
            ``floor(255 x + 1/2)``.
        tables: ``[luma, chroma]`` (two 64-int lists, natural order, e.g. ``LearnResult.tables``) or a
            ``(2, 8, 8)`` tensor of integers in [1, 255]. A grayscale image is written with the luma table.
        subsampling: chroma subsampling of a colour image: "444", "422" or "420".

    Returns:
        ``Path(path)``. ``Image.open(path).quantization`` gives the tables back.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: its folder {str(path.parent)!r} does not exist")
    if isinstance(image, Tensor) and image.ndim == 3:
        image = image.unsqueeze(0)
    validate.check_image(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image must be one image, (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    subsampling = validate.check_subsampling(subsampling)
    write_image(path, image, tables=tables_tensor(tables).to(torch.int64).numpy(), subsampling=subsampling)
    return path


def save_tables(path: str | os.PathLike, tables: object, **metadata) -> Path:
    """Write ``tables`` as JSON ``{"luma": [64 ints], "chroma": [64 ints], **metadata}`` (atomically).

    ``tables``: as :func:`tables_tensor` accepts. ``metadata``: JSON-serialisable extras (e.g. ``lam``).
    """
    t = tables_tensor(tables).to(torch.int64)
    payload = {"luma": t[0].reshape(64).tolist(), "chroma": t[1].reshape(64).tolist(), **metadata}
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in payload.items()) + "\n}\n"
    return atomic_write(path, lambda f: f.write(text), mode="w")


def load_tables(path: str | os.PathLike) -> Tensor:
    """Read tables written by :func:`save_tables` -> ``(2, 8, 8)`` float32 (integers in [1, 255])."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such tables file {str(path)!r}")
    try:
        payload = json.loads(path.read_text())
        luma, chroma = payload["luma"], payload["chroma"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} is not a tables JSON with 'luma' and 'chroma' lists of 64 ints: "
                         f"{exc}") from None
    return tables_tensor([luma, chroma])
