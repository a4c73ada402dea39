"""The one resumable training loop every checkpointed trainer of the library runs on.

:func:`resumable_loop` runs ``units`` units of work (epochs or optimisation steps) and writes a
checkpoint (atomically, :func:`diffjpeg.files.atomic_torch_save`) every ``every`` units and after
the last one. A run that finds its checkpoint resumes after the last unit written there: the
states of the named parts (model, optimiser, ``torch.Generator``, data order) are restored, so an
interrupted run continued from its checkpoint gives the results of an uninterrupted one. A
checkpoint of another kind of training, or written with other settings (``config``), is refused
with a ``ValueError`` that names the differing settings. Files are read with
``diffjpeg.files.load_checkpoint`` (archive CRC verified, weights only).

:func:`minibatches` (one shuffled pass over the data) and :class:`Minibatches` (an endless
stream, a fresh permutation per pass, resumable) are the data orders the trainers use.

Users of the loop: :func:`diffjpeg.learn.classifier.train_classifier`,
:func:`diffjpeg.learn.reconstruction.train_reconstruction` and
:func:`diffjpeg.learn.qtables.learn_qtables`.

Example::

    model, opt, g = ..., torch.optim.Adam(model.parameters()), torch.Generator().manual_seed(0)

    def epoch(i):
        for idx in minibatches(len(x), 64, g):
            ...                                   # one optimiser step on x[idx]
        return mean_loss                          # a float or a dict of floats: the history's entry

    history = resumable_loop(epoch, 10, parts={"model": model, "optimizer": opt, "generator": g},
                             kind="my_training", checkpoint="run.ckpt")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..files import atomic_torch_save, load_checkpoint

__all__ = ["Minibatches", "minibatches", "resumable_loop"]


def minibatches(n: int, batch_size: int, generator: torch.Generator, desc: str | None = None,
                progress: bool = False) -> Iterator[Tensor]:
    """One pass over ``n`` examples in a random order drawn from ``generator``: index tensors of ``batch_size``.

    The last batch holds the remainder. ``progress`` shows a tqdm bar named ``desc``.
    """
    order = torch.randperm(n, generator=generator)
    for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        yield order[i:i + batch_size]


class Minibatches:
    """An endless stream of ``batch_size`` indices out of ``n``: a fresh permutation when a pass runs out.

    Only whole batches are drawn (a pass's remainder is skipped). ``state_dict()`` /
    ``load_state_dict()`` hold the current order and position, so :func:`resumable_loop` resumes it.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.order, self.cursor = torch.randperm(n, generator=generator), 0

    def next(self) -> Tensor:
        if self.cursor + self.batch_size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        idx = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"order": self.order, "cursor": self.cursor}

    def load_state_dict(self, state: Mapping) -> None:
        self.order, self.cursor = state["order"], int(state["cursor"])


def _state(part: object) -> object:
    return part.get_state() if isinstance(part, torch.Generator) else part.state_dict()


def _restore(part: object, state: object) -> None:
    if isinstance(part, torch.Generator):
        part.set_state(state)
    else:
        part.load_state_dict(state)


def _differences(saved: Mapping, config: Mapping) -> str:
    keys = [k for k in dict.fromkeys([*saved, *config]) if saved.get(k) != config.get(k)]
    there = ", ".join(f"{k}={saved.get(k)!r}" for k in keys)
    here = ", ".join(f"{k}={config.get(k)!r}" for k in keys)
    return f"trained with {there}, this run asks for {here}"


def _resume(path: Path, parts: Mapping[str, object], kind: str, config: Mapping, unit: str) -> tuple[int, list]:
    """Load ``path`` into ``parts``; returns ``(units done, history)``."""
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # a truncated, corrupt or foreign file: say which, never unpickle it
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                         f"delete it or choose another path") from None
    if not isinstance(state, dict) or state.get("kind") != kind or set(state.get("state", {})) != set(parts):
        raise ValueError(f"checkpoint {str(path)!r} is not a {kind} checkpoint; delete it or choose another path")
    if state["config"] != config:
        raise ValueError(f"checkpoint {str(path)!r} was written with other settings: "
                         f"{_differences(state['config'], config)}; pass the same arguments to resume, "
                         f"or another checkpoint path to start afresh")
    for name, part in parts.items():
        _restore(part, state["state"][name])
    return int(state[unit]), list(state["history"])


def _postfix(record: object) -> dict:
    values = record.items() if isinstance(record, dict) else [("loss", record)]
    return {k: f"{v:.4g}" for k, v in values}


def resumable_loop(run: Callable[[int], object], units: int, *, parts: Mapping[str, object], kind: str,
                   checkpoint: str | os.PathLike | None = None, config: Mapping | None = None, unit: str = "epoch",
                   every: int = 1, progress: bool = False, desc: str | None = None) -> list:
    """Call ``run(i)`` for the units ``i`` not done yet, checkpointing; returns every unit's record.

    Args:
        run: ``run(i) -> record`` does unit ``i`` (0-based) and returns its history entry (a float
            or a dict of floats, anything ``torch.load(weights_only=True)`` reads back).
        units: total number of units (>= 0); a resumed run does ``units - done`` more.
        parts: ``{name: object}`` whose state the checkpoint holds: anything with
            ``state_dict()`` / ``load_state_dict()`` (modules, optimisers, :class:`Minibatches`)
            or a ``torch.Generator``.
        kind: what is trained (stored; a checkpoint of another kind is refused).
        checkpoint: the file (its folder must exist), or ``None`` for no checkpointing.
        config: settings a resume must match (plain values), e.g. ``{"levels": 4}``.
        unit: the checkpoint's key for the number of units done (``"epoch"``, ``"step"``).
        every: checkpoint every ``every`` units (and after the last one).
        progress, desc: a tqdm bar over the units.

    Returns:
        the records of all units, the resumed ones included (a list of length ``units``, or the
        checkpoint's length when it already holds more).
    """
    config = dict(config or {})
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a path (str or os.PathLike) or None, got {type(checkpoint).__name__}")
        checkpoint = Path(checkpoint)
        if not checkpoint.parent.is_dir():
            raise FileNotFoundError(f"checkpoint folder {str(checkpoint.parent)!r} does not exist")
    start, history = 0, []
    if checkpoint is not None and checkpoint.is_file():
        start, history = _resume(checkpoint, parts, kind, config, unit)
    bar = tqdm(range(start, units), desc=desc or kind, disable=not progress, initial=min(start, units), total=units)
    for i in bar:
        history.append(run(i))
        bar.set_postfix(_postfix(history[-1]))
        done = i + 1
        if checkpoint is not None and (done % every == 0 or done == units):
            atomic_torch_save({"kind": kind, unit: done, "config": config, "history": history,
                               "state": {name: _state(part) for name, part in parts.items()}}, checkpoint)
    return history
