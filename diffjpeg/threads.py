"""Threads on shared machines: ``diffjpeg.set_threads``.

torch runs each CPU operation on ``torch.get_num_threads()`` threads (default: every core) and
makes them meet at a barrier after each operation. When other processes keep some of those cores
busy, every operation waits for the thread the scheduler left out: on a loaded 2-core machine a
forward and backward pass of 16x3x32x32 through ``DiffJPEG`` took 360 ms with 2 threads and 4 ms
with 1. :func:`set_threads` ``("auto")`` uses only the cores nobody else is using, judged from the
load average, and never fewer than one.
"""
from __future__ import annotations

import os

import torch

from .arguments import check_int

__all__ = ["set_threads", "free_cores"]


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(load: float | None = None, cores: int | None = None) -> int:
    """Cores not used by other work: ``cores - round(load)``, at least 1.

    ``load`` defaults to the 1-minute load average (``os.getloadavg()``, runnable processes, this
    one included only while it computes), ``cores`` to the cores this process may run on.
    """
    cores = _usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - round(load)))


def set_threads(n: int | str = "auto") -> int:
    """Set torch's intra-op threads to ``n`` (an int >= 1) or, with ``"auto"``, to :func:`free_cores`;
    returns the number set.

    Call it once at the start of a job on a shared server (before heavy work, so that the load
    average shows the other jobs, not this one). The environment variable ``OMP_NUM_THREADS=1`` before
    starting Python has the same effect as ``set_threads(1)``.

    Example::

        import diffjpeg
        diffjpeg.set_threads("auto")    # 1 on a 2-core machine that another job keeps busy
    """
    if n == "auto":
        n = free_cores()
    n = check_int(n, "n", 1)
    torch.set_num_threads(n)
    return n
