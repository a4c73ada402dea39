"""The one resumable training loop (diffjpeg.learn.training): resume, refusals, data orders."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffjpeg.learn.classifier import train_classifier
from diffjpeg.learn.training import Minibatches, minibatches, resumable_loop


def test_loop_resumes_where_it_stopped_and_equals_an_uninterrupted_run(tmp_path):
    def run(units, checkpoint=None):
        torch.manual_seed(0)
        net, g = nn.Linear(3, 1), torch.Generator().manual_seed(1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)

        def step(i):
            x = torch.randn(8, 3, generator=g)
            loss = (net(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return {"loss": loss.item(), "i": i}

        out = resumable_loop(step, units, parts={"net": net, "opt": opt, "g": g}, kind="toy", checkpoint=checkpoint,
                             config={"lr": 0.1}, unit="step", every=2)
        return out, net.weight.detach().clone()

    full, w_full = run(5)
    ckpt = tmp_path / "toy.ckpt"
    part, _ = run(3, ckpt)
    assert len(part) == 3 and torch.load(ckpt, weights_only=True)["step"] == 3  # the last unit is always saved
    rest, w_rest = run(5, ckpt)
    assert rest == full and torch.equal(w_rest, w_full)
    assert [r["i"] for r in rest] == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob(".*.tmp"))


def test_loop_refuses_other_kinds_settings_and_unreadable_files(tmp_path):
    net = nn.Linear(2, 2)
    ckpt = tmp_path / "c.pt"
    resumable_loop(lambda i: 0.0, 1, parts={"net": net}, kind="a", checkpoint=ckpt, config={"levels": 4, "q": 50})
    with pytest.raises(ValueError, match=r"is not a b checkpoint; delete it or choose another path"):
        resumable_loop(lambda i: 0.0, 1, parts={"net": net}, kind="b", checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"other settings: trained with levels=4, this run asks for levels=8; pass "
                                         r"the same arguments"):
        resumable_loop(lambda i: 0.0, 2, parts={"net": net}, kind="a", checkpoint=ckpt, config={"levels": 8, "q": 50})
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint '.*garbage.pt' cannot be read"):
        resumable_loop(lambda i: 0.0, 1, parts={"net": net}, kind="a", checkpoint=garbage)
    with pytest.raises(FileNotFoundError, match=r"checkpoint folder '.*nowhere' does not exist"):
        resumable_loop(lambda i: 0.0, 1, parts={"net": net}, kind="a", checkpoint=tmp_path / "nowhere" / "c.pt")
    with pytest.raises(TypeError, match=r"checkpoint must be a path \(str or os.PathLike\) or None, got int"):
        resumable_loop(lambda i: 0.0, 1, parts={"net": net}, kind="a", checkpoint=3)


def test_classifier_training_refuses_a_reconstruction_checkpoint(tmp_path):
    from diffjpeg.defenses.reconstruction import EDSR
    from diffjpeg.learn.reconstruction import train_reconstruction

    x = torch.rand(8, 1, 8, 8)
    ckpt = tmp_path / "r.ckpt"
    train_reconstruction(EDSR(features=2, blocks=0), x, 4, epochs=1, checkpoint=ckpt, progress=False)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match="is not a train_classifier checkpoint"):
        train_classifier(net, x, torch.zeros(8, dtype=torch.long), epochs=1, checkpoint=ckpt, progress=False)


def test_data_orders():
    g = torch.Generator().manual_seed(0)
    passes = list(minibatches(10, 4, g))
    assert [len(b) for b in passes] == [4, 4, 2] and sorted(torch.cat(passes).tolist()) == list(range(10))
    stream = Minibatches(10, 4, torch.Generator().manual_seed(0))
    first = [stream.next() for _ in range(2)]
    assert len(set(torch.cat(first).tolist())) == 8  # one pass: no index twice
    state, g_state = stream.state_dict(), stream.generator.get_state()
    third = stream.next()  # the pass has 2 left: a fresh permutation (only whole batches are drawn)
    again = Minibatches(10, 4, torch.Generator().manual_seed(5))
    again.load_state_dict(state)
    again.generator.set_state(g_state)
    assert torch.equal(again.next(), third) and len(third) == 4
