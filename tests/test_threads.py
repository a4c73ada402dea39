"""diffjpeg.set_threads: the cores other work leaves free, never fewer than one."""
from __future__ import annotations

import pytest
import torch

import diffjpeg
from diffjpeg.threads import free_cores


def test_free_cores_from_load():
    assert free_cores(load=0.0, cores=2) == 2
    assert free_cores(load=1.2, cores=2) == 1
    assert free_cores(load=7.0, cores=2) == 1  # never fewer than one
    assert free_cores(load=3.0, cores=16) == 13


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert diffjpeg.set_threads(1) == 1 and torch.get_num_threads() == 1
        n = diffjpeg.set_threads("auto")
        assert 1 <= n and torch.get_num_threads() == n
        with pytest.raises(ValueError, match="n must be"):
            diffjpeg.set_threads(0)
        with pytest.raises(TypeError, match="n must be"):
            diffjpeg.set_threads("all")
    finally:
        torch.set_num_threads(before)
