"""The compiled round trip (``diffjpeg.jpeg.native``) against the tensor code it replaces on the CPU.

Both must give the same values bit for bit, for every subsampling, channel count, partial block,
quality, per-image and custom table, dtype, memory layout and preset it serves; it must stay out of
recorded graphs and other devices, stay in ``torch.compile``'s graph, and without a compiler the codec
must fall back, with a warning, to the tensor code.
"""
import itertools
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import rounding_bound

from diffjpeg import DiffJPEG, diff_jpeg
from diffjpeg.eval.report import photo_batch
from diffjpeg.jpeg import native
from diffjpeg.jpeg.codec import _round_trip_adjoint, codec_round_trip, resolve_qtables
from diffjpeg.jpeg.presets import PILLOW, PRESETS, resolve_preset
from diffjpeg.jpeg.real import real_jpeg
from diffjpeg.jpeg.rounding import round_ste
from diffjpeg.jpeg.validate import value_checks as validate_mode

HAS_COMPILER = shutil.which("cc") is not None or shutil.which("gcc") is not None
SERVED = [name for name, (options, _, _) in PRESETS.items() if native.serves(torch.zeros(1), torch.zeros(1), options)]
# partial blocks and MCUs, one-pixel and two-sample-wide chroma, both channel counts, dtypes, subsamplings
SIZES = [(1, 1), (1, 7), (2, 3), (8, 8), (13, 29), (37, 9), (40, 2), (3, 50), (64, 48)]
CASES = list(itertools.product(SIZES, [1, 3], ["420", "422", "444"], [torch.float32, torch.float64]))
pytestmark = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the codec runs the tensor code")


def _both(fn):
    """``fn()`` with the compiled round trip and with the tensor code."""
    with torch.no_grad():
        compiled = fn()
        with native.disabled():
            tensors = fn()
    return compiled, tensors


def test_served_presets_include_pillow_and_simple_upsampling():
    assert {"pillow", "turbo-simple"} <= set(SERVED)
    assert "turbo-fast" not in SERVED and "libjpeg9" not in SERVED  # ifast DCT, DCT-domain chroma: tensor code


def test_the_compiled_round_trip_is_used(monkeypatch):
    assert native.available()
    calls = []
    original = native._library.integer_round_trip
    monkeypatch.setattr(native._library, "integer_round_trip", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        diff_jpeg(torch.rand(2, 3, 16, 16), q=50, exact=True)
    assert calls == [1]
    with native.disabled(), torch.no_grad():
        diff_jpeg(torch.rand(2, 3, 16, 16), q=50, exact=True)
    assert calls == [1]


@pytest.mark.parametrize("preset", SERVED)
def test_same_values_as_the_tensor_code(preset):
    torch.manual_seed(0)
    options = resolve_preset(preset)
    for (h, w), channels, subsampling, dtype in CASES:
        x = torch.rand(5, channels, h, w, dtype=dtype)
        tables = resolve_qtables(torch.tensor([1.0, 12.0, 50.0, 97.0, 100.0]), None, 5, "cpu", dtype, options)
        compiled, tensors = _both(lambda: codec_round_trip(x, tables, subsampling, round_ste, True, options))
        assert compiled.dtype == dtype
        assert torch.equal(compiled, tensors), (preset, channels, h, w, subsampling, dtype)


def test_same_values_on_photos_with_per_image_and_custom_tables():
    x = photo_batch((6, 3, 64, 80))
    q = torch.tensor([3.0, 20.0, 49.0, 50.0, 75.0, 100.0])
    compiled, tensors = _both(lambda: diff_jpeg(x, q=q))
    assert torch.equal(compiled, tensors)
    assert torch.equal(compiled, real_jpeg(x, q=q, backend="pillow"))
    tables = torch.randint(1, 256, (2, 8, 8), generator=torch.Generator().manual_seed(1)).float()
    for subsampling in ("444", "422", "420"):
        compiled, tensors = _both(lambda: diff_jpeg(x, qtables=tables, subsampling=subsampling))
        assert torch.equal(compiled, tensors), subsampling


def _quotient_edge_cases():
    """Noise blocks and flat tables (41, 47, 55, 61) where (|s| + 4 Q) / (8 Q) is an exact integer that the
    float estimate of the quantiser falls just short of (found by search): its correction must fire."""
    pixels = torch.randint(0, 256, (24, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    return [(pixels / 255.0, torch.full((2, 8, 8), float(t))) for t in (41, 47, 55, 61)]


def test_quantiser_is_exact_where_its_float_estimate_falls_short():
    for x, tables in _quotient_edge_cases():
        compiled, tensors = _both(lambda: diff_jpeg(x, qtables=tables))
        assert torch.equal(compiled, tensors), tables[0, 0, 0].item()


def test_any_memory_layout_and_inputs_on_the_rounding_boundaries():
    base = photo_batch((4, 3, 40, 56))  # a channels-last view: read in place, no copy
    # values whose 255 x + 1/2 lies on or next to an integer, where a fused and an unfused multiply-add
    # could differ
    k = torch.arange(256, dtype=torch.float32)
    edges = torch.cat([(k + 0.5) / 255, torch.nextafter((k + 0.5) / 255, torch.tensor(0.0)), k / 255]).clamp(0, 1)
    boundary = edges[torch.randint(len(edges), (2, 3, 24, 32), generator=torch.Generator().manual_seed(0))]
    for x in (base, base.contiguous(), base[:, :, 3:, ::2], base.permute(0, 1, 3, 2), boundary, boundary.double()):
        compiled, tensors = _both(lambda: diff_jpeg(x, q=60))
        assert torch.equal(compiled, tensors)


def test_nan_passes_on_and_infinities_saturate_as_in_the_tensor_code():
    """Value checks are skipped in compiled code: unchecked NaN must not come out as a plausible JPEG."""
    x = torch.rand(3, 3, 16, 24)
    x[1, 0, 3, 3] = float("nan")
    x[2, 1, 5, 7], x[2, 2, 0, 0] = float("inf"), -float("inf")
    tables = resolve_qtables(50.0, None, 3, "cpu", torch.float32, PILLOW)
    for images in (x, x.contiguous(memory_format=torch.channels_last)):  # planes, and interleaved rows
        compiled, tensors = _both(lambda: codec_round_trip(images, tables, "420", round_ste, True))
        assert compiled[1].isnan().all() and tensors[1].isnan().any()  # the tensor code: NaN around the pixel
        assert torch.equal(compiled[[0, 2]], tensors[[0, 2]])


def test_the_value_check_in_the_c_pass_decides_and_says_what_check_image_does():
    """The layer's value check rides on the C pass's load: it must refuse exactly what check_image refuses,
    values on either side of [-tolerance, 1 + tolerance] in each dtype and layout, with the same message."""
    from diffjpeg.jpeg.validate import RANGE_TOLERANCE, check_image

    def neighbours(v, dtype):
        t = torch.tensor(v, dtype=dtype)
        return [torch.nextafter(t, torch.tensor(-9.0, dtype=dtype)).item(), t.item(),
                torch.nextafter(t, torch.tensor(9.0, dtype=dtype)).item()]

    def error(fn):
        try:
            fn()
        except ValueError as e:
            return str(e)
        return None

    calls = []
    original = native._library.integer_round_trip
    native._library.integer_round_trip = lambda *a: calls.append(1) or original(*a)
    try:
        for dtype in (torch.float32, torch.float64):
            values = neighbours(-RANGE_TOLERANCE, dtype) + neighbours(1 + RANGE_TOLERANCE, dtype) + [
                float("nan"), float("inf"), -float("inf"), 2.0]
            for value, layout in itertools.product(values, (torch.contiguous_format, torch.channels_last)):
                x = torch.rand(2, 3, 8, 8, dtype=dtype).contiguous(memory_format=layout)
                x[1, 2, 5, 6] = value
                expected = error(lambda: check_image(x))
                assert error(lambda: DiffJPEG(q=50)(x)) == expected, (dtype, value, layout)
                with native.disabled():
                    assert error(lambda: DiffJPEG(q=50)(x)) == expected, (dtype, value, layout)
            for bound in (values[:3], values[3:6]):  # each bound's neighbours straddle it
                refused = [error(lambda v=v: check_image(torch.full((1, 3, 8, 8), v, dtype=dtype))) is not None
                           for v in bound]
                assert refused[0] != refused[2], (dtype, bound)
    finally:
        native._library.integer_round_trip = original
    assert calls  # the C pass ran
    x = torch.rand(1, 3, 8, 8)
    x[0, 0, 0, 0] = 3.0
    with validate_mode("off"):
        assert DiffJPEG(q=50)(x).shape == x.shape  # value checks switched off: the C pass does not raise


def test_same_values_on_one_and_several_threads():
    x = photo_batch((5, 3, 48, 48))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = diff_jpeg(x, q=40)
        torch.set_num_threads(3)
        with torch.no_grad():
            several = diff_jpeg(x, q=40)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, several)


@pytest.mark.parametrize("preset", SERVED)
def test_adjoint_matches_the_tensor_adjoint(preset):
    """The C adjoint computes in double: within float rounding of the tensor adjoint in both dtypes (the
    straight-through tests compare both with autograd's gradient)."""
    torch.manual_seed(0)
    options = resolve_preset(preset)
    for (h, w), channels, subsampling, dtype in CASES:
        grad = torch.randn(3, channels, h, w, dtype=dtype)
        ours = native.integer_round_trip_adjoint(grad, subsampling, options)
        reference = _round_trip_adjoint(grad.double(), subsampling, options)
        assert ours.dtype == dtype
        where = (preset, channels, h, w, subsampling, dtype)
        assert (ours.double() - reference).abs().max() <= rounding_bound(ours), where
    strided = torch.randn(2, 3, 40, 24).transpose(-1, -2)  # any memory layout
    assert torch.equal(native.integer_round_trip_adjoint(strided, "420", options),
                       native.integer_round_trip_adjoint(strided.contiguous(), "420", options))


def test_output_and_gradient_come_in_the_inputs_layout():
    """A channels-last batch stays channels-last both ways, so autograd need not copy a leaf's gradient."""
    x = photo_batch((2, 3, 16, 24)).requires_grad_()  # channels-last (a permuted HWC array)
    out = DiffJPEG(q=50)(x)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))  # the layer's own gradient, not accumulated
    assert out.stride() == grad.stride() == x.stride() != x.contiguous().stride()
    with native.disabled():
        (reference,) = torch.autograd.grad(DiffJPEG(q=50)(x), x, torch.ones_like(out))
    assert torch.allclose(grad, reference, rtol=0, atol=rounding_bound(reference))


def test_fake_kernels_give_the_outputs_layouts():
    """torch.compile plans its buffers from the fake kernels: they must describe the real outputs (a wrong
    one fails at run time in inductor's graphs, or worse)."""
    x = photo_batch((2, 3, 16, 24))
    tables = resolve_qtables(50.0, None, 2, "cpu", torch.float32, PILLOW)
    for images in (x, x.contiguous(), x[:, :, :, ::2], x.double()):
        torch.library.opcheck(torch.ops.diffjpeg.integer_round_trip.default, (images, tables, "420", "fancy", "jfif5"),
                              test_utils=("test_schema", "test_faketensor"))
        layout = list(torch.empty_like(images).stride())
        torch.library.opcheck(torch.ops.diffjpeg.integer_round_trip_adjoint.default,
                              (torch.randn(images.shape, dtype=images.dtype), layout, "420", "fancy", "jfif5"),
                              test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(ValueError, match=r"tables must be \(1 or B, 2, 8, 8\) for B = 2, got \(3, 2, 8, 8\)"):
        torch.ops.diffjpeg.integer_round_trip(x, tables[:1].expand(3, 2, 8, 8), "420", "fancy", "jfif5")


def test_layer_gradient_from_the_compiled_pass_and_kept_for_second_derivatives():
    x = photo_batch((2, 3, 24, 40)).requires_grad_()
    grad = torch.randn(2, 3, 24, 40)
    out = DiffJPEG(q=30)(x)
    out.backward(grad)
    with native.disabled():
        y = x.detach().clone().requires_grad_()
        ref = DiffJPEG(q=30)(y)
        ref.backward(grad)
    assert torch.equal(out, ref)
    assert torch.allclose(x.grad, y.grad, rtol=0, atol=rounding_bound(y.grad))
    assert not torch.equal(x.grad, y.grad)  # computed in C (in double), not by the tensor adjoint
    z = x.detach().clone().requires_grad_()
    (first,) = torch.autograd.grad(DiffJPEG(q=30)(z), z, grad.requires_grad_(), create_graph=True)
    assert first.requires_grad  # a recorded backward keeps the tensor adjoint, itself differentiable
    assert torch.allclose(first, y.grad, rtol=0, atol=rounding_bound(y.grad))


def test_kept_out_of_graphs_other_dtypes_devices_and_presets():
    x, tables = torch.zeros(1, 3, 8, 8), torch.ones(1, 2, 8, 8)
    assert native.serves(x, tables, PILLOW)
    assert native.serves(x.double(), tables, PILLOW)
    assert not native.serves(x.half(), tables, PILLOW)
    assert not native.serves(x.to("meta"), tables.to("meta"), PILLOW)
    assert not native.serves(x.requires_grad_(), tables, PILLOW)
    with torch.no_grad():
        assert native.serves(x, tables, PILLOW)
    assert not native.serves(torch.zeros(1, 3, 8, 8), tables, resolve_preset("turbo-ifast"))
    learnable = torch.full((1, 2, 8, 8), 10.0, requires_grad=True)
    assert not native.serves(torch.zeros(1, 3, 8, 8), learnable, PILLOW)
    out = codec_round_trip(torch.rand(1, 3, 16, 16), learnable, "420", round_ste, True)
    assert out.requires_grad  # the recorded tensor code, whose gradient reaches the tables


def test_compiles_into_one_graph_with_the_same_values():
    x = photo_batch((2, 3, 24, 24))
    tables = resolve_qtables(50.0, None, 2, "cpu", torch.float32, PILLOW)
    fn = torch.compile(lambda x: codec_round_trip(x, tables, "420", round_ste, True), fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.equal(fn(x), codec_round_trip(x, tables, "420", round_ste, True))
    meta = torch.ops.diffjpeg.integer_round_trip(x.to("meta"), tables.to("meta"), "420", "fancy", "jfif5")
    assert meta.shape == x.shape and meta.device.type == "meta"


def test_the_portable_build_gives_the_same_values(monkeypatch, tmp_path):
    """Without AVX2 (other processors) the block loops are plain C: built here with AVX2 switched off."""
    if "-march=native" not in native._FLAGS:
        pytest.skip("the build flags changed")
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setenv("DIFFJPEG_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_FLAGS", (*native._FLAGS, "-mno-avx2"))
    assert native.available()
    x, q = torch.cat([photo_batch((2, 3, 37, 45)), torch.rand(2, 3, 37, 45)]), torch.tensor([1.0, 30.0, 75.0, 100.0])
    for subsampling in ("420", "422", "444"):
        compiled, tensors = _both(lambda: diff_jpeg(x, q=q, subsampling=subsampling))
        assert torch.equal(compiled, tensors), subsampling
        grad = torch.randn(x.shape, dtype=torch.float64)
        ours = native.integer_round_trip_adjoint(grad, subsampling, PILLOW)
        assert (ours - _round_trip_adjoint(grad, subsampling, PILLOW)).abs().max() <= rounding_bound(ours)
    for x, tables in _quotient_edge_cases():
        compiled, tensors = _both(lambda: diff_jpeg(x, qtables=tables))
        assert torch.equal(compiled, tensors), tables[0, 0, 0].item()
    assert len(list(tmp_path.glob("native-*.so"))) == 1


def test_a_compiled_graph_can_be_the_first_user(tmp_path):
    """Building the library on the first call inside torch.compile's tracing (a fresh process)."""
    code = ("import torch\nfrom diffjpeg import DiffJPEG\nx = torch.rand(2, 3, 16, 16, requires_grad=True)\n"
            "out = torch.compile(DiffJPEG(q=50), fullgraph=True, backend='eager')(x)\nout.sum().backward()\n"
            "from diffjpeg.jpeg import native\nassert native._library, 'not built'\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "DIFFJPEG_CACHE": str(tmp_path)}, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("DIFFJPEG_NATIVE", "0")
    assert not native.available()
    assert not native.serves(torch.zeros(1, 3, 8, 8), torch.ones(1, 2, 8, 8), PILLOW)


def test_a_failing_compiler_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setenv("DIFFJPEG_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false") or "false")
    with pytest.warns(RuntimeWarning, match="compiling native.c failed"):
        assert not native.available()
    with torch.no_grad():
        x = torch.rand(1, 3, 16, 16)
        assert torch.equal(diff_jpeg(x, q=50), real_jpeg(x, q=50, backend="pillow"))
    assert list(tmp_path.iterdir()) == []


def test_no_compiler_warns_and_falls_back(monkeypatch):
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not native.available()
