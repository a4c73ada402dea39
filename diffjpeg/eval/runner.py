""":func:`run_benchmark`: the benchmark's tasks cut into resumable units, shared out over ranks.

The work is cut into **units**, one per (batch of examples, task of :mod:`diffjpeg.eval.tasks`), and
every unit's per-example records are written atomically to ``OUT/units/`` as soon as it finishes; a
restarted run with the same configuration skips the units on disk (so a kill loses at most the unit
in flight), and a run with a changed configuration, or changed inputs (:func:`run_inputs`: the
checkpoint's, the model's and the data's content, library versions, torch's thread count), refuses
to mix results unless ``restart`` is set. A run holds an exclusive lock on ``OUT/.lock``, so a
second process on the same folder is refused (:class:`OutInUseError`).
Every unit seeds torch's global RNG from (seed, batch, task), so results depend neither on resuming
nor on the number of processes. Under ``torchrun`` the batches are shared out across ranks (batch
``b`` goes to rank ``b mod world_size``) and rank 0 merges everything into ``results.jsonl``,
``table.md``, ``summary.json`` and ``robust_accuracy.png`` (:mod:`diffjpeg.eval.tables`).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

from ..files import atomic_write, strict_json
from ..wrappers import predict
from .config import BenchConfig, Parsed, load_config, validate
from .tasks import Context, plan_rows, plan_tasks, seed

__all__ = ["USER_ERRORS", "OutInUseError", "prepare_out", "record_inputs", "run_benchmark", "run_inputs"]


def run_benchmark(config: BenchConfig | dict | str | os.PathLike | None = None) -> dict:
    """Run the benchmark described by ``config`` (a :class:`BenchConfig`, a dict of its keys, or a
    TOML file; ``None``: the embedded default) and return the summary, also written to
    ``out/summary.json``: a dict ``{"config", "examples", "eps", "rows"}`` whose ``rows`` hold one
    dict per table row (accuracies with their ``*_ci`` intervals, quality, time, ``checks``).

    Resumable: units already in ``out/units`` are skipped. Under ``torchrun`` each rank takes every
    ``world_size``-th batch and rank 0 writes the merged report (other ranks return it too).

    Example::

        summary = run_benchmark({"defenses": ["none", "jpeg:q=50"], "n": 4, "out": "runs/small"})
        summary["rows"][1]["robust"]  # robust accuracy per eps of jpeg:q=50 under gray-box transfer
    """
    cfg = _as_config(config)
    parsed = validate(cfg)
    rank, world, device, joined = _distributed(torch.device(cfg.device))
    try:
        return _run(cfg, parsed, rank, world, device)
    finally:
        if joined:  # a process group left alive can abort the interpreter at exit
            import torch.distributed as dist

            dist.destroy_process_group()


#: the keys of a unit file (``OUT/units/b00000-TASK.json``)
_UNIT_KEYS = {"batch", "task", "fingerprint", "examples", "seconds", "records"}


class OutInUseError(RuntimeError):
    """Another run holds the lock of the output folder."""


#: errors that mean "bad configuration or data, or a busy --out": one line on the command line, no traceback
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OutInUseError)


def _as_config(config: BenchConfig | dict | str | os.PathLike | None) -> BenchConfig:
    if config is None:
        return BenchConfig()
    if isinstance(config, BenchConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return BenchConfig.from_dict(load_config(config))
    if isinstance(config, dict):
        return BenchConfig.from_dict(config)
    raise TypeError(f"config must be a BenchConfig, a dict or a TOML file path, got {type(config).__name__}")


def return_freed_memory() -> None:
    """With glibc, hand the heap's free pages back to the system (``malloc_trim``; elsewhere: nothing).

    Called after every unit: the activations of a unit's gradient passes are freed at its end, but
    glibc keeps the freed heap, which fragments as the attacked batches change size, so the resident
    memory of a long run grows past what any one unit needs (BENCHMARKS.md, "Peak memory").
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _run(cfg: BenchConfig, parsed: Parsed, rank: int, world: int, device: torch.device) -> dict:
    out = Path(cfg.out)
    with contextlib.ExitStack() as held:  # rank 0 holds out's lock until the run ends
        _on_all_ranks(lambda: prepare_out(out, cfg, held), rank, world)
        return _run_locked(out, cfg, parsed, rank, world, device)


def _run_locked(out: Path, cfg: BenchConfig, parsed: Parsed, rank: int, world: int, device: torch.device) -> dict:
    from .datasets import load_dataset
    from .tables import merge, write_report
    from .zoo import load_model

    loaded = load_model(cfg.model, checkpoint=cfg.checkpoint, download=cfg.download, device=device)
    size = cfg.image_size or loaded.image_size
    data = load_dataset(cfg.data, n=cfg.n, image_size=size, download=cfg.download)
    if data.images.shape[1] != loaded.channels:
        raise ValueError(f"data {cfg.data!r} has {data.images.shape[1]} channel(s) but model {cfg.model!r} "
                         f"expects {loaded.channels}")
    ctx = Context(cfg, parsed, loaded.model, loaded.mean, loaded.std, data.images, data.labels, data.ids, device)
    _check_size(ctx, size, loaded.image_size)
    inputs = run_inputs(cfg, loaded.model, data)
    _on_all_ranks(lambda: record_inputs(out, cfg, inputs), rank, world)
    fingerprint = cfg.fingerprint(inputs)
    if data.labels is None:  # unlabelled photos: the undefended model's own predictions are the labels
        ctx.labels = predict(ctx.model(), data.images, batch=cfg.batch_size).cpu()
    rows = plan_rows(parsed, cfg.threat_models, ctx.model())
    tasks = plan_tasks(rows)
    names = list(tasks)
    batches = range((len(data.ids) + cfg.batch_size - 1) // cfg.batch_size)
    todo = [(b, t) for b in batches if b % world == rank for t in names if not _unit_path(out, b, t).is_file()]
    for b, task in tqdm(todo, desc=f"bench (rank {rank})" if world > 1 else "bench", disable=not cfg.progress,
                        unit="unit", dynamic_ncols=True):
        sl = slice(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(data.ids)))
        start = time.perf_counter()
        torch.manual_seed(seed(cfg.seed, b, names.index(task)))  # torchattacks' random starts use the global RNG
        recs = tasks[task](ctx, b, sl)
        unit = {"batch": b, "task": task, "fingerprint": fingerprint, "examples": sl.stop - sl.start,
                "seconds": time.perf_counter() - start, "records": recs}
        _write_json(_unit_path(out, b, task), unit)
        return_freed_memory()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    summary = _on_all_ranks(lambda: write_report(out, cfg, rows, merge(out, cfg, rows, names, batches)), rank, world)
    if world > 1:
        dist.barrier()  # every rank has its summary before any rank tears the group down
    return summary


def _check_size(ctx: Context, size: int, native: int | None) -> None:
    """The classifier must take ``size`` x ``size`` images (one forward pass of one image)."""
    try:
        with torch.no_grad():
            ctx.model()(ctx.images[:1].to(ctx.device))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ValueError(f"image_size {size}: model {ctx.cfg.model!r} cannot classify {size}x{size} images (its own "
                         f"size: {native}; {first})") from None


# ------------------------------------------------------------------------------------------ out and resume

#: what :func:`run_inputs` records, as a refusal names it
_INPUTS = {"checkpoint": "checkpoint content", "model": "model weights", "data": "data",
           "diffjpeg": "diffjpeg version", "torch": "torch version", "threads": "torch threads"}


def run_inputs(cfg: BenchConfig, model: torch.nn.Module, data) -> dict[str, Any]:
    """What the results depend on besides the config: sha256 digests of the checkpoint file's bytes
    (``None`` without one), of the model's weights and of the data (images, labels, ids), diffjpeg's
    and torch's versions and torch's intra-op thread count (reductions, hence a few verdicts, differ
    between thread counts)."""
    from .. import __version__

    checkpoint = None
    if cfg.checkpoint is not None:
        h = hashlib.sha256()
        with open(cfg.checkpoint, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        checkpoint = h.hexdigest()
    weights = [t for _, t in sorted(model.state_dict().items())]
    return {"checkpoint": checkpoint, "model": _digest(*weights), "data": _digest(data.images, data.labels, data.ids),
            "diffjpeg": __version__, "torch": torch.__version__, "threads": torch.get_num_threads()}


def _digest(*parts: Any) -> str:
    """sha256 over tensors (dtype, shape, bytes), ``None`` and JSON-able values."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.flatten().view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(p).encode())
    return h.hexdigest()


def prepare_out(out: Path, cfg: BenchConfig, held: contextlib.ExitStack) -> None:
    """Create ``out`` and take its lock (released when ``held`` closes); refuse a folder that another
    run holds, that is not writable, whose ``config.json`` is unreadable, or that holds another
    configuration's results (unless ``cfg.restart``: then discard them). Nothing is computed
    before this."""
    try:
        (out / "units").mkdir(parents=True, exist_ok=True)
        lock = held.enter_context(open(out / ".lock", "a"))
        tempfile.TemporaryFile(dir=out / "units").close()
    except OSError as e:
        raise ValueError(f"out {str(out)!r} is not a writable folder ({e.strerror or e}); choose another --out"
                         ) from None
    if fcntl is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutInUseError(f"out {str(out)!r} is in use: another run holds its lock ({out / '.lock'}); wait for "
                                f"it to finish or choose another --out") from None
    if cfg.restart:
        shutil.rmtree(out / "units")
        (out / "config.json").unlink(missing_ok=True)
        (out / "units").mkdir()
    for stale in (out / "units").glob(".*.tmp"):  # left by a killed run's write in flight
        stale.unlink(missing_ok=True)
    _refuse_changes(out, cfg, None)


def record_inputs(out: Path, cfg: BenchConfig, inputs: dict[str, Any]) -> None:
    """Refuse ``out`` if its results came from other inputs (:func:`run_inputs`) or it holds a unit
    file that is damaged or of another run; else record the inputs in ``out/config.json`` with the
    run's fingerprint."""
    known, fingerprint = _refuse_changes(out, cfg, inputs), cfg.fingerprint(inputs)
    for path in sorted((out / "units").glob("*.json")):
        unit = _read_json(path, "unit file")
        if not isinstance(unit, dict) or not _UNIT_KEYS <= set(unit) or not isinstance(unit["records"], list):
            raise ValueError(f"unit file {str(path)!r} is not a unit of results; delete it and rerun to recompute it")
        if unit["fingerprint"] != fingerprint:
            raise ValueError(f"unit file {str(path)!r} holds results of a different run (fingerprint "
                             f"{unit['fingerprint']}, this run's {fingerprint}); pass --restart (restart = true) to "
                             f"discard them, or delete it")
    if not known:
        _write_json(out / "config.json", {"fingerprint": fingerprint, "config": cfg.identity(), "inputs": inputs},
                    indent=1)


def _refuse_changes(out: Path, cfg: BenchConfig, inputs: dict[str, Any] | None) -> bool:
    """Whether ``out/config.json`` exists; raise if it holds other config keys (or other ``inputs``)."""
    stored = out / "config.json"
    if not stored.is_file():
        return False
    old = _read_json(stored, "run record")
    if not isinstance(old, dict):
        raise ValueError(f"run record {str(stored)!r} is not a run record; delete it or pass --restart")
    new, before = cfg.identity(), old.get("config", {})
    changed = sorted(k for k in set(before) | set(new) if before.get(k) != new.get(k))
    if inputs is not None:
        changed += [what for key, what in _INPUTS.items() if old.get("inputs", {}).get(key) != inputs[key]]
    if changed:
        raise ValueError(f"{str(out)!r} holds results of a different configuration (changed: {', '.join(changed)}); "
                         f"pass --restart (restart = true) to discard them, or choose another --out")
    return True


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} is corrupt (not JSON: {e}); delete it and rerun") from None


def _write_json(path: Path, value: Any, indent: int | None = None) -> None:
    atomic_write(path, lambda f: f.write(strict_json(value, indent=indent)), mode="w")


def _unit_path(out: Path, batch: int, task: str) -> Path:
    return out / "units" / f"b{batch:05d}-{task}.json"


# ------------------------------------------------------------------------------------------ distributed


def _distributed(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """``(rank, world_size, device, joined)``; joins the process group when started by torchrun
    (``joined``: this call created it, so the run must destroy it)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device, joined
    return 0, 1, device, joined


def _on_all_ranks(fn: Callable[[], Any], rank: int, world: int) -> Any:
    """Run ``fn`` on rank 0 only; every rank gets its result or raises its error (no rank left waiting)."""
    if world == 1:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 -- re-raised on every rank below
            box[0] = (type(e), str(e))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind != "ok":
        raise (kind if kind in USER_ERRORS else RuntimeError)(value)
    return value
