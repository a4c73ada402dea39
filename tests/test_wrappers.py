"""DefendedModel, BPDA, EOT and RandomJPEG: gradients, replay, devices, dtypes, compile."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import MEAN, STD
from diffjpeg.contract import Defense
from diffjpeg.defenses import RandomJPEG
from diffjpeg.jpeg.codec import DiffJPEG, diff_jpeg
from diffjpeg.wrappers import BPDA, EOT, DefendedModel, RNGSnapshot

try:
    from diffjpeg.jpeg.real import JPEG
except ImportError as exc:  # pragma: no cover - the real codec is optional while it is written
    JPEG, JPEG_MISSING = None, f"diffjpeg.jpeg.real.JPEG unavailable: {exc}"
else:
    JPEG_MISSING = ""

needs_jpeg = pytest.mark.skipif(JPEG is None, reason=JPEG_MISSING or "ok")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def grad_of(f, x, v=None):
    """Gradient of ``<f(x), v>`` (``v`` defaults to ones) with respect to ``x``."""
    x = x.detach().clone().requires_grad_(True)
    y = f(x)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y) if v is None else v)
    return g


def assert_grad_close(a, b):
    """Equal up to float32 reassociation (batched vs separate convolutions), scaled to the gradient."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def images(b=4, size=16, seed=0, dtype=torch.float32):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dtype)


class Posterize(Defense):
    """A non-torch defense: numpy quantisation to 8 levels (no autograd path)."""

    differentiable = False
    randomized = False

    def forward(self, x):
        out = np.round(x.detach().cpu().numpy() * 7) / 7
        return torch.from_numpy(out).to(x.dtype)


class Jitter(Defense):
    """A randomised stand-in defense: adds noise drawn from ``self.generator``."""

    differentiable = True
    randomized = True

    def __init__(self, generator=None):
        super().__init__()
        self.generator = generator

    def forward(self, x):
        noise = torch.rand(x.shape, generator=self.generator, dtype=x.dtype)
        return (x + 0.05 * noise).clamp(0, 1) ** 2

    def surrogate(self):
        return self


# ----------------------------------------------------------------------------------------- BPDA


@needs_jpeg
def test_bpda_real_jpeg_forward_exact_backward_is_surrogate_gradient():
    x, v = images(), torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    jpeg = JPEG(q=60)
    bpda = BPDA(jpeg)
    assert torch.equal(bpda(x), jpeg(x))
    assert torch.equal(grad_of(bpda, x, v), grad_of(jpeg.surrogate(), x, v))


def test_bpda_gradient_is_backward_modules_gradient_at_same_point():
    x, v = images(), torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    surrogate = DiffJPEG(q=50, rounding="cubic")
    bpda = BPDA(Posterize(), backward=surrogate)
    assert torch.equal(bpda(x), Posterize()(x))
    assert torch.equal(grad_of(bpda, x, v), grad_of(surrogate, x, v))
    # a plain callable works as backward too
    assert torch.equal(grad_of(BPDA(Posterize(), backward=torch.sin), x, v), torch.cos(x) * v)


def test_bpda_defaults_to_defense_surrogate_and_identity():
    x, v = images(), torch.randn(4, 3, 16, 16)
    layer = DiffJPEG(q=40)
    assert torch.equal(grad_of(BPDA(layer), x, v), grad_of(layer, x, v))
    # Defense.surrogate() is the identity by default; a callable has no surrogate at all
    assert torch.equal(grad_of(BPDA(Posterize()), x, v), v)
    assert torch.equal(grad_of(BPDA(lambda t: (t * 4).round() / 4), x, v), v)
    assert isinstance(BPDA(Posterize()).surrogate(), nn.Identity)


def test_bpda_randomized_backward_replays_forward_draw():
    x, v = images(), torch.randn(4, 3, 16, 16)
    d = RandomJPEG((20, 95), generator=torch.Generator().manual_seed(3))
    bpda = BPDA(d)
    assert bpda.randomized
    g = grad_of(bpda, x, v)
    q = d.last_q  # the draw the forward pass applied (the backward replay redraws the same)
    assert torch.equal(d.last_q, q)
    assert torch.equal(g, grad_of(lambda t: diff_jpeg(t, q), x, v))


@pytest.mark.parametrize("bad, what", [
    (lambda x: x[..., :8], "shape"),
    (lambda x: x.double(), "dtype"),
    (lambda x: torch.empty_like(x, device="meta"), "device"),
    (lambda x: x.numpy(), "torch.Tensor"),
])
def test_bpda_output_mismatch_is_a_clear_error(bad, what):
    with pytest.raises((ValueError, TypeError), match=what):
        BPDA(bad)(images())


# ------------------------------------------------------------------------------------ RandomJPEG


def test_random_jpeg_draws_per_image_in_range_and_applies_them():
    x = images(32)
    d = RandomJPEG((30, 40), generator=torch.Generator().manual_seed(0))
    y = d(x)
    q = d.last_q
    assert q.shape == (32,) and q.dtype == torch.int64
    assert int(q.min()) >= 30 and int(q.max()) <= 40 and len(q.unique()) > 3
    assert torch.equal(y, diff_jpeg(x, q))
    assert y.shape == x.shape and y.dtype == x.dtype


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_random_jpeg_fresh_draws_every_call(mode):
    x = images(16)
    d = getattr(RandomJPEG((10, 90)), mode)()
    y1, q1 = d(x), d.last_q
    y2, q2 = d(x), d.last_q
    assert not torch.equal(q1, q2) and not torch.equal(y1, y2)


def test_random_jpeg_same_seed_same_output():
    x = images(8)
    y1 = RandomJPEG((10, 90), generator=torch.Generator().manual_seed(7))(x)
    y2 = RandomJPEG((10, 90), generator=torch.Generator().manual_seed(7))(x)
    y3 = RandomJPEG((10, 90), generator=torch.Generator().manual_seed(8))(x)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_random_jpeg_contract_and_errors():
    d = RandomJPEG((50, 50))
    assert d.randomized and d.differentiable and d.surrogate() is d
    with pytest.raises(ValueError, match="lo <= hi"):
        RandomJPEG((90, 50))
    with pytest.raises(ValueError, match="lo <= hi"):
        RandomJPEG((0, 50))
    with pytest.raises(TypeError, match="q must be a pair of ints"):
        RandomJPEG((50.5, 60))
    with pytest.raises(TypeError, match="generator"):
        RandomJPEG(generator=0)
    with pytest.raises(ValueError, match="subsampling"):
        RandomJPEG(subsampling="411")
    with pytest.raises(ValueError, match="x must have values in"):
        d(images() * 2)


# ------------------------------------------------------------------------------------ snapshot


def test_rng_snapshot_replays_and_leaves_outside_rngs_alone():
    g = torch.Generator().manual_seed(0)
    d = Jitter(g)
    x = images()
    snap = RNGSnapshot(nn.Sequential(d))
    y1 = d(x)
    after_g, after_cpu = g.get_state(), torch.get_rng_state()
    with snap.replay():
        y2 = d(x)
    assert torch.equal(y1, y2)
    assert torch.equal(g.get_state(), after_g) and torch.equal(torch.get_rng_state(), after_cpu)


# ------------------------------------------------------------------------------------------ EOT


def test_eot_deterministic_defense_matches_plain_gradient(classifier, grating_data):
    x, y = grating_data[0][:8], grating_data[1][:8]
    model = DefendedModel(classifier, DiffJPEG(q=50), MEAN, STD)
    plain = grad_of(lambda t: F.cross_entropy(model(t), y), x)
    for reduce in ("logits", "grad"):
        eot = EOT(model, n=4, reduce=reduce)
        assert torch.allclose(eot(x), model(x), rtol=0, atol=1e-5)
        assert_grad_close(grad_of(lambda t: F.cross_entropy(eot(t), y), x), plain)
        assert_grad_close(grad_of(lambda t: eot.loss(t, y), x), plain)


def per_draw_gradients(classifier, x, y, qs, loss):
    """Gradients of ``loss(logits of draw j)`` for each row ``qs[j]`` of qualities, computed apart."""
    norm = DefendedModel(classifier, None, MEAN, STD)
    return torch.stack([grad_of(lambda t: loss(norm(diff_jpeg(t, q)), y), x) for q in qs])


@pytest.mark.parametrize("spelling", ["outer", "inner"])
def test_eot_random_jpeg_grad_is_mean_of_per_draw_gradients(classifier, grating_data, spelling):
    x, y = grating_data[0][:8], grating_data[1][:8]
    n, seed = 6, 11
    d = RandomJPEG((20, 90), generator=torch.Generator().manual_seed(seed))
    if spelling == "outer":
        eot = EOT(DefendedModel(classifier, d, MEAN, STD), n=n, reduce="grad")
        loss = eot.loss
    else:
        eot = DefendedModel(classifier, EOT(d, n=n, reduce="grad"), MEAN, STD)
        loss = eot.loss
    g = grad_of(lambda t: loss(t, y), x)
    qs = d.last_q.view(n, 8)  # layout: row j * B + i is draw j of image i
    # the same draws from a fresh generator with the same seed
    assert torch.equal(qs.flatten(), RandomJPEG((20, 90), generator=torch.Generator().manual_seed(seed)).sample(n * 8))
    assert len(qs.unique()) > 5
    separate = per_draw_gradients(classifier, x, y, qs, F.cross_entropy)
    assert_grad_close(g, separate.mean(0))
    # the loss of the mean logits is a different objective (CE is not linear)
    g_logits = grad_of(lambda t: F.cross_entropy(eot(t), y), x)
    assert not torch.allclose(g_logits, g, rtol=1e-3, atol=1e-6)


def test_eot_logits_gradient_is_mean_for_a_linear_loss(classifier, grating_data):
    x = grating_data[0][:8]
    n = 5
    d = RandomJPEG((20, 90), generator=torch.Generator().manual_seed(5))
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    eot = EOT(DefendedModel(classifier, d, MEAN, STD), n=n, reduce="logits")
    g = grad_of(lambda t: (eot(t) * w).sum(), x)
    separate = per_draw_gradients(classifier, x, None, d.last_q.view(n, 8), lambda z, _: (z * w).sum())
    assert_grad_close(g, separate.mean(0))


def test_eot_layout_and_one_call():
    calls = []

    def record(t):
        calls.append(t.shape[0])
        return t.flatten(1)[:, :2] * 1.0

    x = images(3)
    out = EOT(record, n=4).draws(x)
    assert calls == [12] and out.shape == (4, 3, 2)
    assert torch.equal(out[2], x.flatten(1)[:, :2])


def test_eot_max_batch_groups_whole_draws(classifier, grating_data):
    x, y = grating_data[0][:8], grating_data[1][:8]
    calls = []
    model = DefendedModel(classifier, DiffJPEG(q=50), MEAN, STD)

    def counted(t):
        calls.append(t.shape[0])
        return model(t)

    one = EOT(counted, n=5, max_batch=None, reduce="grad")
    split = EOT(counted, n=5, max_batch=17, reduce="grad")  # 17 // 8 = 2 draws per call
    g_one = grad_of(lambda t: one.loss(t, y), x)
    assert calls == [40]
    calls.clear()
    g_split = grad_of(lambda t: split.loss(t, y), x)
    assert calls == [16, 16, 8]
    assert_grad_close(g_split, g_one)
    assert EOT(counted, n=5).max_batch == "auto"
    with pytest.raises(ValueError, match="max_batch must be"):
        EOT(counted, max_batch=0)


def test_eot_fixed_replays_draws_and_spellings_agree(classifier, grating_data):
    x = grating_data[0][:8]
    d = RandomJPEG((10, 90), generator=torch.Generator().manual_seed(2))
    fixed = DefendedModel(classifier, EOT(d, n=4, fixed=True), MEAN, STD)
    a, q = fixed(x), d.last_q
    b = fixed(x)
    assert torch.equal(a, b) and torch.equal(d.last_q, q) and not fixed.defense.randomized
    fixed.defense.reset()
    assert not torch.equal(fixed(x), a)
    free = DefendedModel(classifier, EOT(d, n=4), MEAN, STD)
    assert not torch.equal(free(x), free(x)) and free.defense.randomized
    # EOT(DefendedModel(...)) and DefendedModel(..., EOT(...)) compute the same thing
    inner = DefendedModel(classifier, EOT(RandomJPEG((10, 90), generator=torch.Generator().manual_seed(4)), n=4),
                          MEAN, STD)
    outer = EOT(DefendedModel(classifier, RandomJPEG((10, 90), generator=torch.Generator().manual_seed(4)),
                              MEAN, STD), n=4)
    assert torch.equal(inner(x), outer(x))


def test_eot_fixed_with_global_rng_does_not_freeze_the_world():
    eot = EOT(Jitter(None), n=2, fixed=True)
    x = images(2)
    torch.manual_seed(0)
    a = eot(x)
    r1 = torch.rand(3)
    b = eot(x)
    r2 = torch.rand(3)
    assert torch.equal(a, b) and not torch.equal(r1, r2)


def test_eot_argument_errors():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        EOT(nn.Identity(), n=0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        EOT(nn.Identity(), reduce="mean")
    with pytest.raises(TypeError, match="module must be"):
        EOT(3)


# --------------------------------------------------------------------------------- DefendedModel


def test_defended_model_order_normalisation_and_modes(classifier, grating_data):
    x = grating_data[0][:8]
    d = DiffJPEG(q=30)
    model = DefendedModel(classifier, d, MEAN, STD)
    expected = classifier((d(x) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
    assert model(x).shape == (8, 4)
    model.train()
    assert classifier.training and d.training
    model.eval()
    assert not classifier.training and not d.training
    assert torch.equal(DefendedModel(classifier)(x), classifier(x))


def test_defended_model_errors(classifier):
    with pytest.raises(ValueError, match="mean must have 1 or 3 entries"):
        DefendedModel(classifier, None, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std must be > 0"):
        DefendedModel(classifier, None, std=0)
    with pytest.raises(TypeError, match="classifier must be an nn.Module"):
        DefendedModel(lambda t: t)
    with pytest.raises(ValueError, match="x is on meta but the classifier is on cpu"):
        DefendedModel(classifier)(torch.empty(1, 3, 16, 16, device="meta"))
    with pytest.warns(UserWarning, match=r"not differentiable.*BPDA"):
        DefendedModel(classifier, Posterize())


def test_defended_model_moves_classifier_and_buffers_together():
    model = DefendedModel(nn.Conv2d(3, 4, 1), DiffJPEG(q=50), MEAN, STD)
    model = model.to("meta")
    assert model.classifier.weight.device.type == "meta" and model.mean.device.type == "meta"
    model = model.double()
    assert model.classifier.weight.dtype == torch.float64 and model.std.dtype == torch.float64


# ------------------------------------------------------------------------ no_grad, dtype, device


def pipelines(classifier):
    yield "diffjpeg", DefendedModel(classifier, DiffJPEG(q=50), MEAN, STD)
    yield "bpda", DefendedModel(classifier, BPDA(Posterize(), DiffJPEG(q=50)), MEAN, STD)
    yield "eot", DefendedModel(classifier, EOT(RandomJPEG((40, 80)), n=3), MEAN, STD)
    yield "eot-outer-fixed", EOT(DefendedModel(classifier, RandomJPEG((40, 80)), MEAN, STD), n=3, fixed=True)
    if JPEG is not None:
        yield "bpda-jpeg", DefendedModel(classifier, BPDA(JPEG(q=60)), MEAN, STD)


def test_everything_runs_under_no_grad(classifier, grating_data):
    x = grating_data[0][:4]
    for name, model in pipelines(classifier):
        with torch.no_grad():
            out = model(x)
        assert out.shape == (4, 4) and not out.requires_grad, name


def test_float64_end_to_end(classifier, grating_data):
    clf = type(classifier)().double()
    clf.load_state_dict(classifier.state_dict())
    x = grating_data[0][:4].double()
    y = grating_data[1][:4]
    for name, model in pipelines(clf):
        out = model(x)
        assert out.dtype == torch.float64, name
        g = grad_of(lambda t: F.cross_entropy(model(t), y), x)
        assert g.dtype == torch.float64 and torch.isfinite(g).all() and g.abs().sum() > 0, name


@needs_cuda
def test_classifier_on_cuda(classifier, grating_data):
    x, y = grating_data[0][:4], grating_data[1][:4]
    for name, model in pipelines(classifier):
        model = model.to("cuda")
        out = model(x.cuda())
        assert out.device.type == "cuda", name
        g = grad_of(lambda t: F.cross_entropy(model(t), y.cuda()), x.cuda())
        assert g.device.type == "cuda" and torch.isfinite(g).all(), name
        with pytest.raises(ValueError, match="x is on cpu"):
            model(x)
        model.to("cpu")


def test_torch_compile(classifier, grating_data):
    """Dynamo traces BPDA's autograd.Function, EOT's replay and the codec; outputs and gradients match eager.

    The default backend is ``aot_eager`` (seconds); ``DIFFJPEG_TEST_INDUCTOR=1`` compiles with inductor
    (about a minute on 2 CPU cores, dominated by the codec's graph).
    """
    backend = "inductor" if os.environ.get("DIFFJPEG_TEST_INDUCTOR") == "1" else "aot_eager"
    x, y = grating_data[0][:4], grating_data[1][:4]
    model = DefendedModel(classifier, EOT(BPDA(RandomJPEG((40, 80)), DiffJPEG(q=60)), n=2, fixed=True),
                          MEAN, STD)
    try:
        compiled = torch.compile(model, backend=backend)
        out = compiled(x)
        g = grad_of(lambda t: F.cross_entropy(compiled(t), y), x)
    except Exception as exc:  # inductor needs a working C++ toolchain
        name = type(exc).__name__
        if any(k in name for k in ("Compiler", "InductorError", "BackendCompilerFailed", "CppCompileError")):
            pytest.skip(f"torch.compile({backend}) cannot compile on this machine: {name}: {str(exc)[:200]}")
        raise
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    assert_grad_close(g, grad_of(lambda t: F.cross_entropy(model(t), y), x))


# ------------------------------------------------------------------- EOT as a Defense; boundary checks


def test_eot_satisfies_the_defense_contract(classifier, grating_data):
    x, y = grating_data[0][:4], grating_data[1][:4]
    d = RandomJPEG((40, 80), generator=torch.Generator().manual_seed(0))
    eot = EOT(d, n=3)
    assert isinstance(eot, Defense) and eot.randomized and eot.differentiable == d.differentiable
    assert not EOT(d, n=3, fixed=True).randomized
    sur = eot.surrogate()
    assert isinstance(sur, EOT) and sur.n == 3 and isinstance(sur.module, type(d.surrogate()))
    assert isinstance(EOT(Posterize(), n=2).surrogate(), nn.Identity)
    # compose: the rest of the model runs on every draw, the mean taken afterwards
    rest = DefendedModel(classifier, None, MEAN, STD)
    fixed = EOT(RandomJPEG((40, 80), generator=torch.Generator().manual_seed(1)), n=3, fixed=True)
    composed = fixed.compose(x, rest)
    draws = fixed.draws(x)  # the same draws (replayed)
    torch.testing.assert_close(composed, torch.stack([rest(t) for t in draws]).mean(0), rtol=1e-5, atol=1e-6)
    model = DefendedModel(classifier, fixed, MEAN, STD)
    assert torch.equal(model(x), composed)
    assert torch.equal(model.loss(x, y), fixed.compose_loss(x, y, model._rest))
    with pytest.warns(UserWarning, match=r"Posterize is not differentiable.*BPDA"):
        DefendedModel(classifier, EOT(Posterize(), n=2))


class TupleNet(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x), None


def test_defended_model_checks_what_crosses_each_boundary(classifier):
    x = images(2)
    with pytest.raises(TypeError, match=r"the classifier TupleNet must return a logits tensor \(B, K\), got tuple"):
        DefendedModel(TupleNet(classifier))(x)
    with pytest.raises(ValueError, match=r"the classifier Flatten returned shape \(1536,\) for 2 images; "
                                         r"it must return logits \(B, K\)"):
        DefendedModel(nn.Flatten(start_dim=0))(x)
    with pytest.raises(ValueError, match=r"mean has 3 entries \(one per channel\) but x has shape \(2, 1, 16, 16\)"):
        DefendedModel(classifier, None, MEAN, STD)(x[:, :1])
    with pytest.raises(ValueError, match=r"std has 3 entries"):
        DefendedModel(classifier, None, None, STD)(x[:, :1])
    with pytest.raises(ValueError, match=r"the defense Gray returned shape \(2, 1, 16, 16\) for an input of shape "
                                         r"\(2, 3, 16, 16\); a defense must keep the input's batch, channels"):
        DefendedModel(classifier, Gray())(x)
    with pytest.raises(ValueError, match=r"the defense Half returned shape \(1, 3, 16, 16\)"):
        DefendedModel(classifier, Half())(x)
    # a resizing defense (random resize and pad) may change the image size for a size-agnostic classifier
    any_size = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert DefendedModel(any_size, Crop())(x).shape == (2, 4)
    with pytest.raises(ValueError, match=r"the defense to_double returned dtype torch.float64 for an input of dtype "
                                         r"torch.float32"):
        DefendedModel(classifier, to_double)(x)
    with pytest.raises(TypeError, match=r"the defense to_numpy must return a torch.Tensor, got ndarray"):
        DefendedModel(classifier, to_numpy)(x)
    with pytest.raises(TypeError, match=r"the defense to_none must return a torch.Tensor, got NoneType"):
        DefendedModel(classifier, to_none)(x)
    with pytest.raises(ValueError, match=r"the defense Gray returned shape"):  # inside EOT: each draw is checked
        DefendedModel(classifier, EOT(Gray(), n=2))(x)
    for bad in ("imagenet", b"x", object()):
        with pytest.raises(TypeError, match=r"mean must be a number, a sequence of 1 or 3 numbers .* got"):
            DefendedModel(classifier, None, mean=bad)
    with pytest.raises(TypeError, match=r"std must be numbers \(one per channel\), got \['a', 'b', 'c'\]"):
        DefendedModel(classifier, None, std=["a", "b", "c"])
    assert DefendedModel(classifier, None, MEAN, STD)(x).shape == (2, 4)  # the right sizes pass


class Crop(Defense):
    differentiable = True

    def forward(self, x):
        return x[..., :8, :8]


class Gray(Defense):
    differentiable = True

    def forward(self, x):
        return x.mean(1, keepdim=True)


class Half(Defense):
    differentiable = True

    def forward(self, x):
        return x[: len(x) // 2]


def to_double(x):
    return x.double()


def to_numpy(x):
    return x.numpy()


def to_none(x):
    return None


def test_bpda_checks_its_surrogate():
    x = images(2)
    with pytest.raises(ValueError, match=r"the surrogate Crop returned \(2, 3, 8, 8\) for an input of shape "
                                         r"\(2, 3, 16, 16\)"):
        grad_of(BPDA(Posterize(), Crop()), x)
    with pytest.raises(ValueError, match=r"the surrogate Detached returned a tensor with no gradient"):
        grad_of(BPDA(Posterize(), Detached()), x)


class Detached(nn.Module):
    def forward(self, x):
        return x.detach() * 0.5


def test_eot_refuses_impossible_sizes():
    with pytest.raises(ValueError, match=r"n must be at most MAX_DRAWS = 100000 draws, got 10000000"):
        EOT(nn.Identity(), n=10**7)
    with pytest.raises(ValueError, match=r"n must be at most MAX_DRAWS"):
        EOT(nn.Identity(), n=10**12)
    # 100 000 draws of one 3x1024x1024 float32 image in one call: 1172 GiB, more than this machine has
    with pytest.raises(ValueError, match=r"EOT: 100000 draws of the input \(1, 3, 1024, 1024\) torch.float32 per "
                                         r"call .* need 1171\.9 GiB, more than the .* GiB of memory of cpu"):
        EOT(nn.Identity(), n=100_000, max_batch=None)(torch.zeros(1, 3, 1024, 1024))
    # in calls of whole draws the input fits, but all the outputs together do not
    with pytest.raises(ValueError, match=r"EOT: the outputs of n=100000 draws \(100000, 3, 1024, 1024\) need "
                                         r"1171\.9 GiB"):
        EOT(nn.Identity(), n=100_000, max_batch=1)(torch.zeros(1, 3, 1024, 1024))
