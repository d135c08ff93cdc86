"""The privacy loss of a DP-FedAvg plan: epsilon at delta, by Renyi DP.

DP-FedAvg (McMahan et al. 2018) releases per round the mean of clipped
updates plus N(0, (z C / m)^2): a Gaussian mechanism of noise multiplier ``z``
on one participant's contribution, Poisson-subsampled at rate ``q`` (the
fraction of the population a round samples; 1 when every participant takes
part in every round), composed over the rounds. PyPI ``dp-accounting``'s RDP
accountant (add-or-remove-one neighbours) converts that to epsilon at delta
over the fixed orders below, so every node records the same figure.
"""

from __future__ import annotations

import math
from typing import Any, Final

from p2pml.errors import ValidationError

#: RDP orders (fixed: the recorded epsilon depends on them).
ORDERS: Final = tuple(
    [1.0 + x / 10.0 for x in range(1, 100)] + [float(x) for x in range(11, 64)] + [128.0, 256.0]
)
#: Recorded epsilons are rounded up to this many decimals (a conservative, exact figure).
DECIMALS: Final = 6


def _event(noise_multiplier: float, sampling_rate: float) -> Any:
    from dp_accounting import dp_event

    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
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
    """Epsilon at ``delta`` after ``rounds`` rounds, rounded up to DECIMALS."""
    from dp_accounting import rdp

    _check(noise_multiplier, sampling_rate, rounds, delta)
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
