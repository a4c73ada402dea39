"""bench/learn_qtables.py's matched-bpp comparison: interpolation image by image and its paired standard error."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "learn_qtables.py"
    spec = importlib.util.spec_from_file_location("bench_learn_qtables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matched_difference_interpolates_between_the_neighbouring_qualities(bench):
    low = torch.tensor([1, 0, 0, 1, 0, 0, 1, 0], dtype=torch.bool)
    high = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    top = torch.ones(8, dtype=torch.bool)
    sweep = [(1.0, low), (2.0, high), (4.0, top)]
    learned = torch.tensor([1, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    diff, se = bench.matched_difference(1.25, learned, sweep)  # reference: 0.75 * low + 0.25 * high
    d = learned.double() - (0.75 * low.double() + 0.25 * high.double())
    assert diff == pytest.approx(100 * d.mean().item())
    assert se == pytest.approx(100 * d.std().item() / 8 ** 0.5)
    assert diff == pytest.approx(100 * (6 / 8 - (0.75 * 3 / 8 + 0.25 * 6 / 8)))  # the accuracies' interpolation
    # on a sweep point: the plain paired difference against that quality, wherever the search lands
    assert bench.matched_difference(2.0, learned, sweep)[0] == pytest.approx(100 * (6 - 6) / 8)
    assert bench.matched_difference(1.0, learned, sweep)[0] == pytest.approx(100 * (6 - 3) / 8)
    assert bench.matched_difference(4.0, learned, sweep)[0] == pytest.approx(100 * (6 - 8) / 8)
    # identical per-image results: zero difference, zero error
    assert bench.matched_difference(2.0, high, sweep) == (0.0, 0.0)


def test_matched_difference_is_none_outside_the_sweep(bench):
    hits = torch.ones(4, dtype=torch.bool)
    sweep = [(1.0, hits), (2.0, hits)]
    assert bench.matched_difference(0.99, hits, sweep) is None
    assert bench.matched_difference(2.01, hits, sweep) is None
