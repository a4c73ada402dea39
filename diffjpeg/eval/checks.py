"""Gradient-masking checks for the benchmark (Carlini et al. 2019's checklist, AutoAttack's flags).

Each check is a small independent function taking the accuracies the benchmark measured for one
row (a defense under a threat model) and returning a :class:`Check`: its code letter, whether it
passed, and a one-line message saying what was compared. The benchmark prints the failed codes
beside every robust number, and the messages under the table.

Accuracies are fractions in [0, 1]; ``tolerance`` is the slack (fraction) allowed before a check
fails. The two convergence checks (S: twice the steps, B: four times the steps and restarts) count
flipped examples instead: at most ``floor(tolerance * n)`` of ``n`` examples may flip, and none at
all when ``n < 100`` (:func:`allowed_flips`), since on 20 images one flip is already 5 points.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHECKS",
    "SMALL_N",
    "Check",
    "allowed_flips",
    "budget",
    "eps_name",
    "fixed_randomness",
    "large_eps",
    "more_steps",
    "single_step",
    "white_below_gray",
    "zero_gradients",
]


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``code`` letter, ``passed`` flag, what was compared, and the eps it is about
    (``None``: the whole row)."""

    code: str
    passed: bool
    message: str
    eps: float | None = None


#: code letter -> what the check asks (printed as the table's legend)
CHECKS = {
    "F": "the attack at least as strong as single-step FGSM (its accuracy <= FGSM's accuracy + tolerance)",
    "E": "accuracy reaches ~0 at a large eps (<= max_large_eps_accuracy)",
    "S": "doubling the attack's steps flips at most floor(tolerance * n) of the n examples (none when n < 100)",
    "G": "adaptive (white-box) accuracy <= gray-box accuracy + tolerance",
    "R": "randomized defense: the attack with fixed randomness is at least as strong (<= accuracy + tolerance)",
    "Z": "share of exactly-zero input-gradient entries <= max_zero_gradients",
    "B": ("budget: at every eps, on the examples the attack left robust, the attack at 4x steps and 4x restarts "
          "flips at most floor(tolerance * n) of the n examples (none when n < 100)"),
}


def eps_name(eps: float) -> str:
    """``8/255`` for multiples of 1/255, else the number (``0.05``)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


#: below this many examples one example is more than 1 point of accuracy, so no flip is "within tolerance"
SMALL_N = 100


def allowed_flips(n: int, tolerance: float) -> int:
    """How many of ``n`` examples a check lets a stronger attack flip: ``floor(tolerance * n)``, but 0
    when ``n < SMALL_N`` (on 20 images a 5 % tolerance would forgive one image in twenty, which is
    exactly the size of effect the check is there to catch)."""
    return 0 if n < SMALL_N else int(tolerance * n + 1e-9)


def single_step(accuracy: float, fgsm: float, tolerance: float, eps: float | None = None,
                attack: str = "the attack") -> Check:
    """An iterative ``attack`` that is weaker than one FGSM step points to a broken gradient or step size."""
    return Check("F", accuracy <= fgsm + tolerance, f"{attack} {accuracy:.1%} vs FGSM {fgsm:.1%}", eps)


def large_eps(accuracy: float, eps: float, max_accuracy: float) -> Check:
    """An unbounded-ish attack must win; if accuracy stays up at a huge eps, gradients are masked."""
    return Check("E", accuracy <= max_accuracy, f"{accuracy:.1%} at eps={eps_name(eps)}")


def more_steps(accuracy: float, doubled: float, tolerance: float, eps: float | None = None,
               n: int | None = None) -> Check:
    """If twice the steps still finds many new adversarial examples, the attack had not converged.

    With the number of examples ``n``, the rule of :func:`allowed_flips` (no flip at all when
    ``n < SMALL_N``); without it, a drop of at most ``tolerance``.
    """
    if n is None:
        passed = accuracy - doubled <= tolerance
    else:
        passed = round((accuracy - doubled) * n) <= allowed_flips(n, tolerance)
    return Check("S", passed, f"{accuracy:.1%} -> {doubled:.1%} with 2x steps", eps)


def budget(robust: int, stronger: int, n: int, tolerance: float, eps: float | None = None) -> Check:
    """The attack converged: on the ``robust`` examples (of ``n``) it left, the ensemble at 4x the steps
    and 4x the restarts (or AutoAttack's full budget) leaves ``stronger`` robust, flipping at most
    :func:`allowed_flips` of them."""
    flips = robust - stronger
    return Check("B", flips <= allowed_flips(n, tolerance),
                 f"{robust}/{n} -> {stronger}/{n} robust with 4x steps and 4x restarts "
                 f"({flips} flipped, {allowed_flips(n, tolerance)} allowed)", eps)


def white_below_gray(white: float, gray: float, tolerance: float, eps: float | None = None) -> Check:
    """An adaptive (white-box) attack that does worse than transfer from the bare model is broken."""
    return Check("G", white <= gray + tolerance, f"white-box {white:.1%} vs gray-box {gray:.1%}", eps)


def fixed_randomness(fixed: float, randomized: float, tolerance: float, eps: float | None = None) -> Check:
    """Freezing a randomized defense's draws must make it easier, not harder, to attack."""
    return Check("R", fixed <= randomized + tolerance, f"fixed draws {fixed:.1%} vs random {randomized:.1%}", eps)


def zero_gradients(share: float, max_share: float) -> Check:
    """Many exactly-zero gradient entries mean the attack gets no signal (shattered gradients)."""
    return Check("Z", share <= max_share, f"{share:.1%} of input-gradient entries are 0")

