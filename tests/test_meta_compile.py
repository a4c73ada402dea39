"""Device-clean and compilable: every differentiable layer runs forward and backward on ``meta``
tensors (no value is ever read back to the host), the input checks keep their errors in eager mode
and are skipped only where no values exist, and ``torch.compile(fullgraph=True)`` of ``DiffJPEG``
matches eager mode without recompiling when only values change (the compile tests are slow: a
minute or more of compilation per graph on a small CPU).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import diffjpeg
from diffjpeg import BPDA, EOT, JPEG, DefendedModel, DiffJPEG
from diffjpeg.defenses import (FeatureDistillation, KMeansColors, MedianSmoothing, RandomJPEG, RandomResizePad,
                               SaliencyJPEG)
from diffjpeg.jpeg import validate
from diffjpeg.jpeg.rounding import ROUNDINGS


def _classifier() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


META_LAYERS = {
    **{f"DiffJPEG-{r}": (lambda r=r: DiffJPEG(50, rounding=r)) for r in ROUNDINGS},
    "DiffJPEG-exact-soft": lambda: DiffJPEG(50, rounding="soft", exact=True),
    "DiffJPEG-per-image-q": lambda: DiffJPEG(torch.tensor([30.0, 80.0])),
    "DiffJPEG-tables": lambda: DiffJPEG(qtables=torch.full((2, 8, 8), 7.0)),
    "DiffJPEG-learnable": lambda: DiffJPEG(50, learnable=True),
    "JPEG.surrogate": lambda: JPEG(50).surrogate(),
    "RandomJPEG": lambda: RandomJPEG(),
    "MedianSmoothing": lambda: MedianSmoothing(),
    "KMeansColors": lambda: KMeansColors(k=4),
    "FeatureDistillation": lambda: FeatureDistillation(),
    "RandomResizePad": lambda: RandomResizePad(),
    "SaliencyJPEG": lambda: SaliencyJPEG(_classifier()),
    "BPDA(DiffJPEG)": lambda: BPDA(DiffJPEG(50)),
    "BPDA(RandomJPEG)": lambda: BPDA(RandomJPEG()),
    "EOT(RandomJPEG)": lambda: EOT(RandomJPEG(), n=3),
    "DefendedModel(DiffJPEG)": lambda: DefendedModel(_classifier(), DiffJPEG(50), mean=(0.5,) * 3, std=(0.25,) * 3),
    "DefendedModel(EOT)": lambda: DefendedModel(_classifier(), EOT(RandomJPEG(), n=2)),
    "EOT(DefendedModel)": lambda: EOT(DefendedModel(_classifier(), RandomJPEG()), n=2, reduce="grad"),
}


@pytest.mark.parametrize("name", list(META_LAYERS))
def test_meta_forward_backward(name):
    layer = META_LAYERS[name]().to("meta")
    x = torch.empty(2, 3, 24, 16, device="meta", requires_grad=True)
    y = layer(x)
    assert y.device.type == "meta"
    if isinstance(layer, (DefendedModel, EOT)) and y.ndim == 2:
        assert y.shape == (2, 5)
    elif name != "RandomResizePad":  # random resize and pad changes the image size
        assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.device.type == "meta"


def test_meta_skips_only_value_checks():
    """On meta the shape and dtype checks still raise; values (which do not exist) are not read."""
    layer = DiffJPEG(50)
    with pytest.raises(ValueError, match="C = 1 .* or 3"):
        layer(torch.empty(1, 2, 8, 8, device="meta"))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.empty(1, 3, 8, 8, device="meta", dtype=torch.int64))
    with pytest.raises(ValueError, match="batch"):
        DiffJPEG(torch.tensor([50.0, 60.0]))(torch.empty(3, 3, 8, 8, device="meta"))


def test_value_check_modes():
    bad = torch.full((1, 3, 8, 8), 2.0)
    for mode in ("auto", "sync"):
        with validate.value_checks(mode):
            assert validate.value_check_mode(bad) == "sync"
            assert validate.value_check_mode(bad.to("meta")) is None
            with pytest.raises(ValueError, match=r"values in \[0, 1\], got values in \[2, 2\]"):
                DiffJPEG(50)(bad)
    with validate.value_checks("off"):
        assert validate.value_check_mode(bad) is None
        DiffJPEG(50)(bad)  # the user asked for no value checks
    assert validate.value_check_mode(bad) == "sync"  # the context manager restored "auto"
    with pytest.raises(ValueError, match="mode must be one of"):
        validate.set_value_checks("never")


def test_async_check_message():
    """The asynchronous assertion (what a GPU gets) carries the argument's name and expected range;
    on the CPU it fires at once, so it is testable here."""
    with pytest.raises(RuntimeError, match=r"x must be finite with values in \[0, 1\]"):
        torch._assert_async(torch.tensor(False), "x must be finite with values in [0, 1] (diffjpeg input check)")
    x = torch.full((1, 3, 8, 8), float("nan"))
    lo, hi = torch.aminmax(x)
    assert not bool((lo >= -validate.RANGE_TOLERANCE) & (hi <= 1 + validate.RANGE_TOLERANCE))  # NaN fails


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_checks_do_not_synchronise():
    x = torch.rand(2, 3, 16, 16, device="cuda")
    assert validate.value_check_mode(x) == "async"
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host synchronisation raises
    try:
        DiffJPEG(50)(x.requires_grad_()).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with validate.value_checks("sync"):  # the host-side check on request (an async failure would end the context)
        with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
            DiffJPEG(50)(torch.full((1, 3, 8, 8), 2.0, device="cuda"))


# ------------------------------------------------------------------------------------ compilation


@pytest.fixture
def fresh_dynamo():
    """Each compile test starts from an empty dynamo cache (so no test sees another's graphs)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class _CountingBackend:
    """A ``torch.compile`` backend that records each graph dynamo captures and runs it as traced: the
    graph capture (and so every graph break, under ``fullgraph=True``) is ``torch.compile``'s own,
    without inductor's minutes of code generation."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


COMPILED_LAYERS = {
    **{f"DiffJPEG-{r}": (lambda r=r: DiffJPEG(50, rounding=r)) for r in ROUNDINGS},
    "DiffJPEG-exact-cubic": lambda: DiffJPEG(50, rounding="cubic", exact=True),
    "DiffJPEG-per-image-q": lambda: DiffJPEG(torch.tensor([30.0, 80.0])),
    "DiffJPEG-tables": lambda: DiffJPEG(qtables=torch.randint(1, 256, (2, 8, 8)).float()),
    "DiffJPEG-learnable": lambda: DiffJPEG(50, learnable=True),
    "DefendedModel(DiffJPEG)": lambda: DefendedModel(_classifier(), DiffJPEG(50), mean=(0.5,) * 3, std=(0.25,) * 3),
    "DefendedModel(EOT(DiffJPEG-noise))": lambda: DefendedModel(_classifier(),
                                                                EOT(DiffJPEG(50, rounding="noise"), n=2)),
}


@pytest.mark.parametrize("name", list(COMPILED_LAYERS))
def test_fullgraph_compile_matches_eager(name, fresh_dynamo):
    """No graph break (``fullgraph=True`` raises at one), output and gradients equal to eager mode,
    and new values (same shape) reuse the graph: no recompilation."""
    torch.manual_seed(0)
    layer = COMPILED_LAYERS[name]()
    if name.endswith("noise))"):
        layer.train()
    backend = _CountingBackend()
    compiled = torch.compile(layer, backend=backend, fullgraph=True, dynamic=False)
    for step in range(3):  # new values each step: one graph for forward
        x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(step), requires_grad=True)
        state = torch.get_rng_state()
        y = compiled(x)
        (gc,) = torch.autograd.grad(y.square().sum(), x)
        torch.set_rng_state(state)  # the same draws (noise estimator) for the eager run
        ye = layer(x)
        (ge,) = torch.autograd.grad(ye.square().sum(), x)
        assert torch.equal(y, ye), name
        assert torch.allclose(gc, ge, rtol=1e-6, atol=1e-6), name
    assert backend.graphs == 1, f"{name}: {backend.graphs} graphs for one shape"


@pytest.mark.parametrize("name", ["DiffJPEG-ste", "DefendedModel(DiffJPEG)"])
def test_compile_wrapper_per_shape(name, fresh_dynamo):
    """``diffjpeg.compile``: a one-off shape stays eager, a repeated one compiles once, values never
    recompile, and the eager input checks keep their errors."""
    layer = COMPILED_LAYERS[name]()
    backend = _CountingBackend()
    model = diffjpeg.compile(layer, fullgraph=True)
    model._forward.options["backend"] = backend  # the counting backend instead of inductor (test only)
    shapes = [(2, 3, 16, 16), (3, 3, 8, 24), (2, 3, 16, 16), (2, 3, 16, 16), (2, 3, 16, 16)]
    for i, shape in enumerate(shapes):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(i))
        assert torch.equal(model(x), layer(x))
    assert backend.graphs == 1 and model.compiled_shapes[0][0] == (2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        model(torch.full((2, 3, 16, 16), 3.0))
    if name.startswith("DiffJPEG"):
        assert model.differentiable and not hasattr(model, "loss")
    else:  # DefendedModel.loss, compiled per shape as well
        x = torch.rand(2, 3, 16, 16)
        labels = torch.tensor([0, 3])
        model._loss.options["backend"] = backend
        for _ in range(2):  # eager, then compiled
            assert torch.allclose(model.loss(x, labels), layer.loss(x, labels), rtol=1e-6, atol=1e-7)
        assert backend.graphs == 2
    with pytest.raises(ValueError, match="after must be"):
        diffjpeg.compile(layer, after=0)


def test_compile_wrapper_leaves_the_values_to_a_graph_that_checks_them(fresh_dynamo, monkeypatch):
    """The layer's C pass checks the values it reads, compiled too: the wrapper's own check (``aminmax``)
    runs until a call at that shape has seen the C pass check the input, and again (after the call) once
    a recompiled graph stops checking; bad values raise the check's error either way."""
    from diffjpeg import compiled as compiled_module
    from diffjpeg.jpeg import native

    if not native.available():
        pytest.skip("no C round trip on this machine: the wrapper checks every call")
    checks = []
    monkeypatch.setattr(compiled_module, "check_image", lambda x: checks.append(1) or validate.check_image(x))
    layer = DiffJPEG(50)
    model = diffjpeg.compile(layer, after=1, fullgraph=True)
    model._forward.options["backend"] = _CountingBackend()
    bad = torch.rand(2, 3, 16, 16)
    bad[1, 2, 3, 4] = 3.0
    for _ in range(3):
        model(torch.rand(2, 3, 16, 16))
    assert len(checks) == 1  # the first call's; then the compiled graph checks in its C pass
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\], got values in \[.*, 3\]"):
        model(bad)
    assert len(checks) == 1
    layer.rounding = "cubic"  # a recompiled graph, on the tensor code: values unchecked inside compiled code
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        model(bad)  # the wrapper notices after the call, and checks
    model(torch.rand(2, 3, 16, 16))
    assert len(checks) == 3  # from now on before each call
    raw = torch.compile(DiffJPEG(50), backend=_CountingBackend(), fullgraph=True)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        raw(bad)  # plain torch.compile: the C pass's check is in the graph


def test_bpda_with_compiled_surrogate(fresh_dynamo):
    """BPDA's forward pass is any code (Pillow here), so it is not one graph; its backward pass, the
    surrogate, is: ``BPDA(JPEG(q), diffjpeg.compile(DiffJPEG(q)))`` gives eager BPDA's gradients, and
    the whole defended model compiles around it (``fullgraph=False``: a graph break at BPDA)."""
    backend = _CountingBackend()
    surrogate = diffjpeg.compile(DiffJPEG(50), after=1, fullgraph=True)
    surrogate._forward.options["backend"] = backend
    clf = _classifier()
    model = diffjpeg.compile(DefendedModel(clf, BPDA(JPEG(50), surrogate)), after=1)
    model._forward.options["backend"] = _CountingBackend()
    eager = DefendedModel(clf, BPDA(JPEG(50)))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (gc,) = torch.autograd.grad(model(x).sum(), x)
    (ge,) = torch.autograd.grad(eager(x).sum(), x)
    assert torch.allclose(gc, ge, rtol=1e-5, atol=1e-6)
    assert backend.graphs == 1 and model._forward.options["backend"].graphs >= 1


@pytest.mark.slow
def test_inductor_bit_identical(fresh_dynamo):
    """The real compiler (inductor) on the integer pipeline: the same pixels as eager mode (and so as
    Pillow) and the same gradients. Slow: about a minute of compilation."""
    layer = DiffJPEG(50)
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = compiled(x)
    (gc,) = torch.autograd.grad(y.sum(), x)
    ye = layer(x)
    (ge,) = torch.autograd.grad(ye.sum(), x)
    assert torch.equal(y, ye)
    assert torch.allclose(gc, ge, rtol=1e-6, atol=1e-6)
