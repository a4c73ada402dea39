"""Training the reconstruction network of :class:`~diffjpeg.defenses.reconstruction.PixelDepthReconstruction`.

:func:`train_reconstruction` teaches a network (e.g. :class:`~diffjpeg.defenses.reconstruction.EDSR`)
to map bit-depth compressed clean and FGSM images back to the clean originals with the mean squared
error (Zhang et al.); FGSM comes from the attack core (:func:`diffjpeg.attacks.core.fgsm`), the
epochs from the resumable loop (:func:`~.training.resumable_loop`).

Example::

    net = EDSR(channels=1)
    history = train_reconstruction(net, images, levels=4, classifier=clf, epochs=5, checkpoint="rec.ckpt")
    defense = PixelDepthReconstruction(levels=4, network=net)
"""
from __future__ import annotations

import os
from numbers import Real
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arguments import check_generator, check_int, check_range, check_real
from ..attacks.core import fgsm
from ..defenses.reconstruction import quantize_depth
from ..jpeg.validate import check_image
from .training import minibatches, resumable_loop

__all__ = ["train_reconstruction"]


def train_reconstruction(network: nn.Module, images: Tensor, levels: int = 4,
                         classifier: Callable[[Tensor], Tensor] | None = None, labels: Tensor | None = None,
                         fgsm_eps: float | Sequence[float] = (0.0, 0.1), adversarial_fraction: float = 0.5,
                         epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                         checkpoint: str | os.PathLike | None = None, generator: torch.Generator | None = None,
                         progress: bool = True) -> list[float]:
    """Train ``network`` to map ``quantize_depth(x_in, levels)`` back to the clean ``x`` (MSE).

    Each batch of clean images ``x`` is shuffled with ``generator``. Without a ``classifier`` the
    inputs are the clean images. With one, as in the paper, a share ``adversarial_fraction`` of
    each batch is replaced by FGSM examples crafted against ``classifier`` on the spot (the batch
    size stays the same), each image with its own ``eps`` drawn uniformly from ``fgsm_eps``
    (the paper: 0 to 0.1 on Fashion-MNIST); their targets are still the clean images.

    Progress is shown with tqdm. With ``checkpoint``, the network, the optimiser (Adam), the
    generator's state and the loss history are written there (atomically) after every epoch, and a
    run finding an existing checkpoint resumes after its last finished epoch (interrupt with
    Ctrl-C and run again); a checkpoint trained with other ``levels`` is refused. The network is
    trained on its own device; the data follow it per batch.

    Args:
        network: module ``(B, C, H, W) -> (B, C, H, W)`` (e.g. ``EDSR``), trained in place.
        images: clean training images ``(N, C, H, W)`` in [0, 1].
        levels: grey levels of the compression, >= 2.
        classifier: callable mapping images in [0, 1] to logits (include any normalisation, e.g.
            ``DefendedModel(clf, None, mean, std)``), or ``None`` for no adversarial examples.
        labels: ``(N,)`` int64 labels for FGSM; ``None`` uses the classifier's own predictions.
        fgsm_eps: FGSM step size, a number or a range ``(lo, hi)`` in [0, 1].
        adversarial_fraction: share of each batch replaced by FGSM examples, in [0, 1].
        epochs, batch_size, lr: number of passes over ``images``, images per step, Adam's rate.
        checkpoint: path of the per-epoch checkpoint (its folder must exist), or ``None``.
        generator: ``torch.Generator`` (CPU) for shuffling, eps and the adversarial subset.
        progress: show a tqdm bar.

    Returns:
        the mean training loss of every epoch (the resumed ones included), a list of floats.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be an nn.Module, got {type(network).__name__}")
    check_image(images, "images")
    levels = check_int(levels, "levels", 2, 65536)
    lo, hi = check_range(fgsm_eps, "fgsm_eps", 0.0, 1.0, integer=False)
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        check_int(value, name, low)
    check_real(lr, "lr", 0.0, lo_open=True)
    if isinstance(adversarial_fraction, bool) or not isinstance(adversarial_fraction, Real) \
            or not 0 <= adversarial_fraction <= 1:
        raise ValueError(f"adversarial_fraction must be a number in [0, 1], got {adversarial_fraction!r}")
    if classifier is not None and not callable(classifier):
        raise TypeError(f"classifier must be a callable returning logits or None, got {type(classifier).__name__}")
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ValueError(f"labels must be an integer tensor of shape ({images.shape[0]},), got "
                             f"{type(labels).__name__} {tuple(getattr(labels, 'shape', ()))}")
    check_generator(generator)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    p = next(network.parameters(), None)
    if p is None:
        raise ValueError(f"network {type(network).__name__} has no parameters to train")
    device, dtype = p.device, p.dtype
    optimizer = torch.optim.Adam(network.parameters(), lr=float(lr))
    n = images.shape[0]

    def inputs_for(clean: Tensor, idx: Tensor) -> Tensor:
        """``clean`` with a random share replaced by FGSM examples (each its own eps)."""
        b = clean.shape[0]
        adv = torch.rand(b, generator=generator) < adversarial_fraction
        eps = lo + (hi - lo) * torch.rand(b, generator=generator)
        if not adv.any():
            return clean
        sel = adv.nonzero().flatten().to(device)
        xs = clean[sel]
        if labels is not None:
            ys = labels[idx][adv].to(device)
        else:
            with torch.no_grad():
                ys = classifier(xs).argmax(1)
        inputs = clean.clone()
        inputs[sel] = fgsm(classifier, xs, ys, eps[adv].to(device=device, dtype=dtype))
        return inputs

    def epoch(i: int) -> float:
        total, count = 0.0, 0
        for idx in minibatches(n, batch_size, generator, f"reconstruction epoch {i + 1}/{epochs}", progress):
            clean = images[idx].to(device=device, dtype=dtype)
            inputs = inputs_for(clean, idx) if classifier is not None and adversarial_fraction > 0 else clean
            loss = F.mse_loss(network(quantize_depth(inputs, levels)), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * clean.shape[0]
            count += clean.shape[0]
        return total / max(count, 1)

    was_training = network.training
    network.train()
    clf_training = classifier.training if isinstance(classifier, nn.Module) else None
    if clf_training is not None:
        classifier.eval()  # FGSM against the deployed (eval-mode) classifier
    try:
        return resumable_loop(epoch, epochs, parts={"network": network, "optimizer": optimizer, "generator": generator},
                              kind="train_reconstruction", checkpoint=checkpoint, config={"levels": levels},
                              progress=progress, desc="reconstruction")
    finally:
        network.train(was_training)
        if clf_training is not None:
            classifier.train(clf_training)
