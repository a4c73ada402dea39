"""The straight-through round trip as one autograd node (``codec.straight_through_round_trip``).

Its forward pass must equal the recorded integer pipeline bit for bit and its hand-written backward
(the adjoint of the pipeline's linear part) must give autograd's gradient through the same stages, for
every image size (partial blocks and MCUs, one-pixel and two-sample-wide chroma), channel count,
subsampling, preset it serves and dtype.
"""
import contextlib
import itertools

import pytest
import torch
from conftest import rounding_bound

from diffjpeg import DiffJPEG
from diffjpeg.jpeg import native
from diffjpeg.jpeg.codec import (codec_round_trip, resolve_qtables, straight_through_round_trip,
                                 straight_through_supported)
from diffjpeg.jpeg.presets import PRESETS, resolve_preset
from diffjpeg.jpeg.rounding import round_ste

SIZES = [(16, 16), (13, 29), (1, 1), (3, 40), (37, 9), (8, 5), (2, 3)]
SERVED = [name for name, (options, _, _) in PRESETS.items() if straight_through_supported(options)]


def _both(x, tables, subsampling, options, grad):
    recorded = x.clone().requires_grad_()
    out_recorded = codec_round_trip(recorded, tables, subsampling, round_ste, True, options)
    out_recorded.backward(grad)
    fused = x.clone().requires_grad_()
    out_fused = straight_through_round_trip(fused, tables, subsampling, options)
    out_fused.backward(grad)
    return out_recorded, recorded.grad, out_fused, fused.grad


def test_presets_served():
    assert {"pillow", "libjpeg6b", "turbo-simple"} <= set(SERVED)
    assert not straight_through_supported(resolve_preset("turbo-fast"))  # the ifast DCTs keep the graph
    assert not straight_through_supported(resolve_preset("libjpeg9"))  # DCT-scaled chroma keeps the graph


@pytest.mark.parametrize("path", ["native", "tensor"])  # the CPU's compiled adjoint, and every other device's
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preset", SERVED)
def test_values_and_gradient_match_the_recorded_pipeline(preset, dtype, path):
    with native.disabled() if path == "tensor" else contextlib.nullcontext():
        _check_values_and_gradient(preset, dtype)


def _check_values_and_gradient(preset, dtype):
    torch.manual_seed(0)
    options = resolve_preset(preset)
    for (h, w), channels, subsampling in itertools.product(SIZES, [1, 3], ["420", "422", "444"]):
        x = torch.rand(2, channels, h, w, dtype=dtype)
        tables = resolve_qtables(torch.tensor([20.0, 80.0]), None, 2, "cpu", dtype)
        grad = torch.randn(2, channels, h, w, dtype=dtype)
        out_recorded, grad_recorded, out_fused, grad_fused = _both(x, tables, subsampling, options, grad)
        where = f"{preset} {dtype} {channels}x{h}x{w} {subsampling}"
        assert torch.equal(out_recorded, out_fused), where
        scale = grad_recorded.abs().max()
        assert scale > 0, where
        assert (grad_recorded - grad_fused).abs().max() <= rounding_bound(grad_recorded), where


def test_layer_uses_one_node_and_keeps_nothing_for_backward():
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    out = DiffJPEG(q=50)(x)
    assert type(out.grad_fn).__name__ == "_StraightThroughRoundTripBackward"
    assert out.grad_fn.saved_tensors == ()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_learnable_tables_keep_the_recorded_graph_and_get_gradients():
    layer = DiffJPEG(q=50, learnable=True)
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    out = layer(x)
    assert type(out.grad_fn).__name__ != "_StraightThroughRoundTripBackward"
    out.sum().backward()
    assert layer.parametrizations.qtables.original.grad.abs().sum() > 0
    # the input's gradient does not depend on which path computed it
    fixed = x.detach().clone().requires_grad_()
    DiffJPEG(qtables=layer.qtables.detach())(fixed).sum().backward()
    assert torch.allclose(x.grad, fixed.grad, rtol=0, atol=rounding_bound(x.grad))
