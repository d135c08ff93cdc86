"""The privacy loss of a local-DP federated plan: epsilon at delta, by Renyi DP.

Every round each participant publishes ``G_r + clip(delta, C) + N(0, (z C)^2 I)``
with noise only it knows (:mod:`p2pml.federated.noise`). Against anyone who
reads the published updates, that is a Gaussian mechanism on the participant's
clipped contribution. The clipped delta lies in a ball of radius ``C``, so any
change of the participant's data (one row, or all of them) moves it by at most
``2 C``: the mechanism's noise multiplier is ``z / 2``. If the participant trains
each round on a secret Poisson sample of its rows at rate ``q`` (the task's
local sampling), one row takes part in a round with probability ``q`` and the
subsampled-Gaussian analysis applies (by joint convexity it holds for any
shift of norm at most ``2 C``, not only for sums of clipped rows). Rounds
compose: ``R`` of them. Participant sampling gives no amplification here: an
observer sees who published.

PyPI ``dp-accounting``'s RDP accountant (add-or-remove-one neighbours) converts
that to epsilon at delta over the fixed orders below, so every node records the
same figure. With ``q = 1`` the figure also bounds what the updates reveal about
the participant's whole dataset (participant-level DP).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Final

from p2pml.errors import ValidationError

#: RDP orders (fixed: the recorded epsilon depends on them).
ORDERS: Final = tuple(
    [1.0 + x / 10.0 for x in range(1, 100)] + [float(x) for x in range(11, 64)] + [128.0, 256.0]
)
#: The clipped delta moves by at most this many ``C`` when the participant's data change.
SENSITIVITY: Final = 2.0
#: Recorded epsilons are rounded up to this many decimals (a conservative, exact figure).
DECIMALS: Final = 6


def _event(noise_multiplier: float, sampling_rate: float) -> Any:
    from dp_accounting import dp_event

    gaussian = dp_event.GaussianDpEvent(noise_multiplier / SENSITIVITY)
    if sampling_rate >= 1.0:
        return gaussian
    return dp_event.PoissonSampledDpEvent(sampling_rate, gaussian)


def _check(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValidationError("federated-epsilon", f"noise multiplier {noise_multiplier!r}")
    if not 0 < sampling_rate <= 1 or not 0 < delta < 1 or rounds < 1:
        raise ValidationError(
            "federated-epsilon", f"sampling rate {sampling_rate}, delta {delta}, rounds {rounds}"
        )


def epsilon_spent(
    noise_multiplier: float, sampling_rate: float, rounds: int, delta: float
) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds of noise ``z C`` on a delta
    clipped to ``C`` (local sampling rate ``sampling_rate``), rounded up to DECIMALS."""
    _check(noise_multiplier, sampling_rate, rounds, delta)
    return _epsilon(float(noise_multiplier), float(sampling_rate), int(rounds), float(delta))


# The chain asks for the same plans again and again (each validation of a DP
# task, each round close); a subsampled plan costs ~0.1 s of RDP arithmetic.
@functools.lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant(list(ORDERS))
    accountant.compose(_event(noise_multiplier, sampling_rate), rounds)
    epsilon = float(accountant.get_epsilon(delta))
    scale = 10**DECIMALS
    return math.ceil(epsilon * scale) / scale


def check_budget(
    noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, budget: float
) -> float:
    """The plan's epsilon, or ``federated-epsilon`` if it exceeds ``budget``."""
    epsilon = epsilon_spent(noise_multiplier, sampling_rate, rounds, delta)
    if epsilon > budget:
        raise ValidationError(
            "federated-epsilon",
            f"{rounds} rounds at noise multiplier {noise_multiplier} spend epsilon "
            f"{epsilon:.3f} at delta {delta:g}, over the budget {budget:g}",
        )
    return epsilon


def noise_for_epsilon(epsilon: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """The smallest noise multiplier (to 1e-3) whose plan stays within ``epsilon``."""
    lo, hi = 1e-3, 1.0
    while epsilon_spent(hi, sampling_rate, rounds, delta) > epsilon:
        hi *= 2.0
        if hi > 1e6:
            raise ValidationError("federated-epsilon", f"no noise reaches epsilon {epsilon}")
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2.0
        if epsilon_spent(mid, sampling_rate, rounds, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi
