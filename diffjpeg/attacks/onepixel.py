"""The one-pixel attack (Su, Vargas & Sakurai 2019) with batched differential evolution.

Differential evolution (DE) searches, per image, for ``pixels`` pixels (row, column, one value per
channel) whose replacement changes the prediction. Here the populations of *all* images advance
together: every generation builds the candidate images of every still-running image in one tensor
and classifies them in one forward pass (split into chunks of ``max_batch`` images only to bound
memory). Images leave the search as soon as one of their candidates succeeds.

The DE settings are those torchattacks' ``OnePixel`` hands to its DE (a copy of scipy's
``differential_evolution``), so that the two compare fairly:

* ``D = pixels * (2 + C)`` parameters per candidate (row in [0, H), column in [0, W), values in
  [0, 1]; coordinates truncated to integers), population ``max(5, max(1, popsize // D) * D)``
  drawn uniformly at random (``init="random"``);
* strategy ``best1bin``: mutant ``best + F * (x_r0 - x_r1)``, with ``r0 != r1`` both different
  from the candidate, ``F`` drawn uniformly in ``mutation = (0.5, 1)`` once per generation (dither);
  binomial crossover with ``recombination = 1`` (the whole mutant); parameters that leave their
  range are redrawn uniformly; a trial replaces its parent when its energy is lower;
* energy: the softmax probability of the true label (untargeted) or one minus that of the target
  (targeted); ``steps`` generations after the initial population, no polishing.

Differences, both in the attack's favour and free: success is checked on every evaluated
candidate (torchattacks checks only the best one, after each generation), and the image returned
for a successful search is the first successful candidate. For an unsuccessful search it is the
lowest-energy candidate, as in torchattacks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arguments import check_int, check_real
from .base import Attack


def population_size(popsize: int, dims: int) -> int:
    """Candidates per image for torchattacks' ``popsize`` and ``dims`` parameters per candidate."""
    return max(5, max(1, popsize // dims) * dims)


class OnePixel(Attack):
    """Batched one-pixel (``pixels``-pixel) attack by differential evolution.

    Args:
        model: classifier returning logits ``(B, K)`` for images ``(B, C, H, W)`` in [0, 1].
        pixels: number of pixels changed per image (>= 1).
        steps: DE generations after the initial population (>= 0).
        popsize: population multiplier as in torchattacks' ``OnePixel`` (see :func:`population_size`).
        mutation: ``(lo, hi)`` range of the per-generation mutation factor, or one number; in [0, 2).
        recombination: crossover probability in [0, 1] (1: the trial is the whole mutant).
        max_batch: most candidate images built and classified at once; ``"auto"``: 256 on the CPU
            (measured 3x faster than one pass there, being cache-friendly), one pass per generation
            on other devices; ``None``: one pass per generation.
        quantize: round the pixel values to multiples of 1/255, so that the result survives being
            saved as an 8-bit image unchanged.
        targeted: attack towards the labels given to ``attack`` (see :class:`~.base.Attack`).
        generator: random source (``None``: torch's global RNG).

    Shape:
        images ``(B, C, H, W)`` in [0, 1]; labels ``(B,)``; output ``(B, C, H, W)``, differing
        from the input in at most ``pixels`` pixels per image.

    After a call, ``last_success`` ``(B,)`` says which images reached their goal and
    ``last_queries`` ``(B,)`` how many candidates each image had evaluated.
    """

    def __init__(self, model, pixels: int = 1, steps: int = 10, popsize: int = 10,
                 mutation: float | tuple[float, float] = (0.5, 1.0), recombination: float = 1.0,
                 max_batch: int | str | None = "auto", quantize: bool = False, *, targeted: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__("OnePixel", model, targeted=targeted, generator=generator)
        self.pixels = check_int(pixels, "pixels", 1)
        self.steps = check_int(steps, "steps", 0)
        self.popsize = check_int(popsize, "popsize", 1)
        if isinstance(mutation, (tuple, list)):
            if len(mutation) != 2:
                raise ValueError(f"mutation must be a number or a (lo, hi) pair in [0, 2), got {mutation!r}")
            lo, hi = (check_real(m, "mutation", 0.0, 2.0, hi_open=True) for m in mutation)
            if lo > hi:
                raise ValueError(f"mutation must be (lo, hi) with lo <= hi, got {mutation!r}")
            self.mutation = (lo, hi)
        else:
            f = check_real(mutation, "mutation", 0.0, 2.0, hi_open=True)
            self.mutation = (f, f)
        self.recombination = check_real(recombination, "recombination", 0.0, 1.0)
        if max_batch is None or max_batch == "auto":
            self.max_batch = max_batch
        elif isinstance(max_batch, str):
            raise ValueError(f"max_batch must be an integer >= 1, 'auto' or None, got {max_batch!r}")
        else:
            self.max_batch = check_int(max_batch, "max_batch", 1)
        if not isinstance(quantize, bool):
            raise TypeError(f"quantize must be True or False, got {quantize!r}")
        self.quantize = quantize
        self.last_success: Tensor | None = None
        self.last_queries: Tensor | None = None

    # ------------------------------------------------------------------------------------------
    def _apply(self, images: Tensor, genes: Tensor, owner: Tensor) -> Tensor:
        """Candidate images ``(M, C, H, W)``: ``images[owner[m]]`` with genome ``genes[m]`` applied.

        ``images`` ``(N, C, H, W)``, ``genes`` ``(M, D)`` in [0, 1], ``owner`` ``(M,)`` image indices.
        """
        _, c, h, w = images.shape
        m = genes.shape[0]
        genes = genes.view(m, self.pixels, 2 + c)
        rows = (genes[..., 0] * h).long().clamp_(0, h - 1)
        cols = (genes[..., 1] * w).long().clamp_(0, w - 1)
        values = genes[..., 2:].to(images.dtype)  # (M, pixels, C)
        if self.quantize:
            values = (values * 255).round_() / 255
        out = images.index_select(0, owner).reshape(m, c, h * w)
        index = (rows * w + cols)[:, None, :].expand(-1, c, -1)
        out.scatter_(2, index, values.transpose(1, 2))
        return out.view(m, c, h, w)

    @torch.no_grad()
    def _evaluate(self, images: Tensor, goal: Tensor, genomes: Tensor) -> tuple[Tensor, Tensor]:
        """Energies and success ``(N, P)`` of ``genomes`` ``(N, P, D)`` on ``images`` ``(N, C, H, W)``.

        Candidates are built and classified ``max_batch`` at a time, never all at once.
        """
        n, p, d = genomes.shape
        genes = genomes.reshape(n * p, d)
        owner = torch.arange(n, device=images.device).repeat_interleave(p)
        chunk = self._chunk(images)
        logits = torch.cat([self.get_logits(self._apply(images, genes[i:i + chunk], owner[i:i + chunk]))
                            for i in range(0, n * p, chunk)])
        prob = F.softmax(logits.float(), dim=1)
        goal_rep = goal[owner]
        p_goal = prob.gather(1, goal_rep[:, None]).squeeze(1)
        hit = logits.argmax(1) == goal_rep
        energy = 1 - p_goal if self.targeted else p_goal
        success = hit if self.targeted else ~hit
        return energy.view(n, p), success.view(n, p)

    def _chunk(self, images: Tensor) -> int:
        if self.max_batch == "auto":
            return 256 if images.device.type == "cpu" else 1 << 62
        return self.max_batch or (1 << 62)

    def _mutants(self, population: Tensor, energy: Tensor) -> Tensor:
        """best1bin trials ``(N, P, D)`` from ``population`` ``(N, P, D)`` with energies ``(N, P)``."""
        n, p, d = population.shape
        dev = population.device
        lo, hi = self.mutation
        scale = lo + (hi - lo) * self._rand(n, 1, 1, device=dev)
        # two distinct partners, both different from the candidate: offsets a != b in [1, P-1]
        a = 1 + self._randint(p - 1, n, p, device=dev)
        b = 1 + self._randint(p - 2, n, p, device=dev)
        b = b + (b >= a).long()
        own = torch.arange(p, device=dev)
        r0, r1 = (own + a) % p, (own + b) % p
        pick = lambda idx: population.gather(1, idx[..., None].expand(-1, -1, d))  # noqa: E731
        best = population.gather(1, energy.argmin(1)[:, None, None].expand(-1, 1, d))
        mutant = best + scale * (pick(r0) - pick(r1))
        if self.recombination < 1:
            cross = self._rand(n, p, d, device=dev) < self.recombination
            fill = self._randint(d, n, p, device=dev)
            cross.scatter_(2, fill[..., None], True)
            mutant = torch.where(cross, mutant, population)
        outside = (mutant < 0) | (mutant > 1)
        return torch.where(outside, self._rand(n, p, d, device=dev).to(mutant.dtype), mutant)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Run the attack; see the class docstring for shapes."""
        images, labels, goal = self._prepare(images, labels)
        n, c = images.shape[:2]
        dims = self.pixels * (2 + c)
        p = population_size(self.popsize, dims)
        dev = images.device
        result = images.clone()
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        queries = torch.zeros(n, dtype=torch.long, device=dev)

        active = torch.arange(n, device=dev)
        population = self._rand(n, p, dims, device=dev).double()
        energy, hit = self._evaluate(images, goal, population)
        trials = population
        queries += p
        for step in range(self.steps + 1):
            done = hit.any(1)  # finished: keep the first successful candidate, leave the search
            if done.any():
                first = hit[done].float().argmax(1)
                winners = trials[done.nonzero().squeeze(1), first]
                result[active[done]] = self._apply(images, winners, active[done])
                success[active[done]] = True
                keep = ~done
                active, population, energy = active[keep], population[keep], energy[keep]
            if step == self.steps or active.numel() == 0:
                break
            trials = self._mutants(population, energy)
            t_energy, hit = self._evaluate(images[active], goal[active], trials)
            queries[active] += p
            better = t_energy < energy
            population = torch.where(better[..., None], trials, population)
            energy = torch.where(better, t_energy, energy)
        if active.numel():  # unsuccessful: the lowest-energy member of the final population
            best = population[torch.arange(active.numel(), device=dev), energy.argmin(1)]
            result[active] = self._apply(images, best, active)
        self.last_success = success
        self.last_queries = queries
        return result
