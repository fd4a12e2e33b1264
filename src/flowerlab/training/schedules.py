"""Learning-rate schedules as pure functions of the (0-based) epoch.

Being pure functions of the epoch is what makes a resumed run exact: Keras calls the schedule
with the absolute epoch (`initial_epoch` onwards), so epoch 7 gets the same learning rate whether
training ran straight through or restarted at epoch 5.

`constant`: `learning_rate` every epoch (the course's convnet and squeezenet recipes do not scale
it with the number of replicas).

`ramp_decay`: the course's Xception recipe (docs/course.md, the training recipes), with lr_max = learning_rate x
replicas because the global batch grows with the replicas:

    e <  rampup:  lr_start + (lr_max - lr_start) * e / rampup
    e >= rampup:  (lr_max - lr_min) * decay ** (e - rampup) + lr_min

`cosine`: half a cosine from `learning_rate` at the first epoch to `lr_min` at the last, so
the final epochs take small steps and the final weights (the ones saved and evaluated) sit near
a minimum instead of wherever the last full-size step left them. SqueezeNet at the course's
constant 1e-3 swung between 0.61 and 0.81 validation accuracy from one epoch to the next over
its last ten epochs here (results/models/squeezenet/history.csv of the first real study):

    lr(e) = lr_min + (learning_rate - lr_min) * (1 + cos(pi * e / (epochs - 1))) / 2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from flowerlab.errors import ConfigError

SCHEDULES = ("constant", "ramp_decay", "cosine")


def ramp_decay(epoch: int, *, lr_start: float, lr_max: float, lr_min: float, rampup_epochs: int,
               decay: float) -> float:
    """The course's linear ramp-up then exponential decay towards `lr_min`."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if epoch < rampup_epochs:
        return lr_start + (lr_max - lr_start) * epoch / rampup_epochs
    return (lr_max - lr_min) * decay ** (epoch - rampup_epochs) + lr_min


def cosine(epoch: int, *, lr_max: float, lr_min: float, epochs: int) -> float:
    """Cosine decay from `lr_max` (epoch 0) to `lr_min` (epoch `epochs` - 1), per epoch."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if epochs <= 1:
        return lr_max
    progress = min(epoch, epochs - 1) / (epochs - 1)
    return lr_min + (lr_max - lr_min) * (1.0 + math.cos(math.pi * progress)) / 2.0


def learning_rate_at(epoch: int, hparams: Mapping[str, Any], *, replicas: int = 1) -> float:
    """The learning rate of `epoch` (0-based) for resolved hyperparameters (schema defaults filled)."""
    schedule = hparams.get("schedule", "constant")
    if schedule == "constant":
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return float(hparams["learning_rate"])
    if schedule == "ramp_decay":
        return ramp_decay(
            epoch,
            lr_start=float(hparams["lr_start"]),
            lr_max=float(hparams["learning_rate"]) * replicas,
            lr_min=float(hparams["lr_min"]),
            rampup_epochs=int(hparams["rampup_epochs"]),
            decay=float(hparams["decay"]),
        )
    if schedule == "cosine":
        return cosine(epoch, lr_max=float(hparams["learning_rate"]), lr_min=float(hparams["lr_min"]),
                      epochs=int(hparams["epochs"]))
    raise ConfigError(f"unknown learning-rate schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def schedule_function(hparams: Mapping[str, Any], *, replicas: int = 1) -> Callable[[int], float]:
    """`epoch -> learning rate`, for `keras.callbacks.LearningRateScheduler` and for the records."""
    learning_rate_at(0, hparams, replicas=replicas)  # fail now on a bad schedule, not at epoch 0
    return lambda epoch: learning_rate_at(int(epoch), hparams, replicas=replicas)


def describe(hparams: Mapping[str, Any]) -> str:
    """The schedule in words, with only the settings it uses: '0.001, constant',
    'cosine from 0.001 to 1e-05', 'ramp from 1e-05 to 5e-05 over 5 epochs, then x0.8 per epoch towards 1e-05'."""
    schedule = hparams.get("schedule", "constant")
    peak = f"{float(hparams['learning_rate']):g}"
    if schedule == "cosine":
        return f"cosine from {peak} to {float(hparams['lr_min']):g}"
    if schedule == "ramp_decay":
        return (f"ramp from {float(hparams['lr_start']):g} to {peak} x replicas over {int(hparams['rampup_epochs'])} "
                f"epochs, then x{float(hparams['decay']):g} per epoch towards {float(hparams['lr_min']):g}")
    return f"{peak}, constant"
