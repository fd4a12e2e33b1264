"""Learning-rate schedules: pure functions of the epoch (what makes resuming exact)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from flowerlab.errors import ConfigError
from flowerlab.training.schedules import cosine, learning_rate_at, ramp_decay, schedule_function

# The course's Xception recipe (docs/course.md) on 8 TPU cores.
XCEPTION = {"schedule": "ramp_decay", "learning_rate": 5e-5, "lr_start": 1e-5, "lr_min": 1e-5,
            "rampup_epochs": 5, "decay": 0.8}


@pytest.mark.parametrize(("epoch", "expected"), [
    (0, 1e-5),                           # starts at lr_start
    (1, 1e-5 + (4e-4 - 1e-5) / 5),       # linear ramp towards 5e-5 x 8 replicas
    (4, 1e-5 + (4e-4 - 1e-5) * 4 / 5),
    (5, 4e-4),                           # peak right after the ramp
    (6, (4e-4 - 1e-5) * 0.8 + 1e-5),     # then x0.8 per epoch towards lr_min
    (11, (4e-4 - 1e-5) * 0.8**6 + 1e-5),
])
def test_ramp_decay_matches_the_course_recipe(epoch: int, expected: float) -> None:
    assert learning_rate_at(epoch, XCEPTION, replicas=8) == pytest.approx(expected, rel=1e-12)


def test_ramp_decay_on_one_replica_peaks_at_the_learning_rate() -> None:
    rates = [learning_rate_at(e, XCEPTION) for e in range(12)]
    assert max(rates) == pytest.approx(5e-5) and rates.index(max(rates)) == 5
    assert all(a < b for a, b in pairwise(rates[:6]))      # rising
    assert all(a > b for a, b in pairwise(rates[5:]))       # falling
    assert all(rate > 1e-5 for rate in rates[5:])                 # towards, never below, lr_min


def test_no_rampup_starts_at_the_peak() -> None:
    assert ramp_decay(0, lr_start=1e-5, lr_max=1e-3, lr_min=1e-5, rampup_epochs=0, decay=0.5) == pytest.approx(1e-3)
    assert ramp_decay(1, lr_start=1e-5, lr_max=1e-3, lr_min=1e-5, rampup_epochs=0, decay=0.5) == pytest.approx(5.05e-4)


def test_constant_ignores_replicas_and_epoch() -> None:
    hparams = {"schedule": "constant", "learning_rate": 1e-3}
    assert {learning_rate_at(e, hparams, replicas=8) for e in range(20)} == {1e-3}


def test_bad_schedule_and_epoch() -> None:
    with pytest.raises(ConfigError, match="linear"):
        schedule_function({"schedule": "linear", "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="epoch"):
        learning_rate_at(-1, XCEPTION)


SQUEEZENET = {"schedule": "cosine", "learning_rate": 1e-3, "lr_min": 1e-5, "epochs": 35}


def test_cosine_runs_from_the_learning_rate_to_lr_min_over_the_epochs() -> None:
    rates = [learning_rate_at(e, SQUEEZENET) for e in range(35)]
    assert rates[0] == pytest.approx(1e-3, rel=1e-12)
    assert rates[-1] == pytest.approx(1e-5, rel=1e-12)
    assert rates[17] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-12)  # halfway at the middle epoch
    assert all(a > b for a, b in pairwise(rates))
    # Replicas do not scale it (as constant), and epochs past the last stay at lr_min.
    assert learning_rate_at(10, SQUEEZENET, replicas=8) == rates[10]
    assert learning_rate_at(40, SQUEEZENET) == pytest.approx(1e-5)


def test_cosine_with_one_epoch_uses_the_learning_rate() -> None:
    assert cosine(0, lr_max=1e-3, lr_min=1e-5, epochs=1) == 1e-3
    with pytest.raises(ValueError, match="epoch"):
        cosine(-1, lr_max=1e-3, lr_min=1e-5, epochs=3)
