"""diffjpeg report's measurements: the peak extra memory of forward + backward, and its table."""
from __future__ import annotations

import time

import pytest
import torch

from diffjpeg.eval import report
from diffjpeg.eval.report import MemoryRow, markdown, memory, peak_extra_memory, speed

MB = 4_000_000  # bytes of a 1000 x 1000 float32 tensor


def test_peak_extra_memory_counts_what_forward_and_backward_hold_at_once():
    x = torch.rand(1000, 1000)
    # t * 2: its output (freed after the sum) or x's gradient, never both: one tensor's bytes
    assert MB <= peak_extra_memory(lambda t: t * 2, x) < MB + 1024
    # exp saves its output for the backward pass, which then allocates the gradient beside it
    assert 2 * MB <= peak_extra_memory(lambda t: (t * 2).exp(), x) < 2 * MB + 1024
    # a temporary that is freed before the next one is allocated does not add up
    assert MB <= peak_extra_memory(lambda t: (t * 2).sum() * t, x) < 3 * MB


def test_memory_rows_and_their_table():
    pytest.importorskip("kornia")
    rows = memory(((2, 3, 64, 64),))
    (row,) = rows
    assert row.input_bytes == 2 * 3 * 64 * 64 * 4 and row.peer_name == "kornia"
    assert 0 < row.ours < row.peer  # below kornia's, as BENCHMARKS.md reports at full size
    text = markdown([], [], "diffjpeg report", mem=rows)
    assert "## Peak extra memory of forward+backward" in text
    assert f"| 2x3x64x64 | cpu | 0.1 | {row.ours / row.input_bytes:.2f} | kornia |" in text


def test_memory_row_ratio():
    assert MemoryRow((1, 3, 8, 8), "cpu", 100, 200, "kornia", 500).ratio == 2.5


def test_speed_times_the_compiled_layer_and_asserts_pillow_pixels(eager_compile):
    """``diffjpeg report --compile``: a compiled row per shape beside the eager one, the same kornia time
    in both (dynamo's graph capture on its "eager" backend, see conftest; inductor: test_meta_compile)."""
    rows = speed(((2, 3, 32, 32),), repeats=1, exact=False, compiled=True)
    assert [r.task for r in rows] == ["forward+backward", "forward+backward, compiled"]
    assert rows[0].peer == rows[1].peer and all(r.ours > 0 for r in rows)
    assert eager_compile and all(options["fullgraph"] for _, options in eager_compile)


def test_speed_refuses_a_layer_that_is_not_pillow(monkeypatch):
    monkeypatch.setattr(report, "diff_jpeg", lambda x, **kwargs: x * 1.0)  # differentiable, not JPEG
    with pytest.raises(AssertionError, match="the layer differs from Pillow on the 2x3x32x32 timing batch at q=50"):
        speed(((2, 3, 32, 32),), repeats=1, exact=False)


def test_time_call_times_repeats_calls_and_more_until_min_seconds():
    calls = []
    report.time_call(lambda: calls.append(1), 3, min_seconds=0)
    assert len(calls) == 4  # a warm-up call, then the three timed ones
    calls.clear()
    best = report.time_call(lambda: (calls.append(1), time.sleep(0.002)), 3, min_seconds=0.05)
    assert len(calls) >= 15 and best >= 0.002  # 50 ms of 2 ms calls


def test_time_forward_backward_hands_the_layer_a_dense_gradient_in_its_output_layout():
    seen = []

    def layer(t):
        out = (t * 2).contiguous(memory_format=torch.channels_last)
        out.register_hook(lambda g: seen.append((g.stride(), out.stride(), bool((g == 1).all()))))
        return out

    report.time_forward_backward(layer, torch.rand(2, 3, 8, 8), 2, min_seconds=0)
    assert len(seen) == 3  # the warm-up and two timed calls; not the untimed call that made the gradient
    assert all(g == o and 0 not in g and ones for g, o, ones in seen)  # not .sum()'s stride-0 gradient
