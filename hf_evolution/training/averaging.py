"""NT-ASGD, the optimiser schedule of AWD-LSTM (Merity et al. 2018): plain SGD until the validation loss stalls, then
the average of the weights of every later step, kept with torch's own `AveragedModel`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from transformers import TrainerCallback

AVERAGED_WEIGHTS_NAME = "averaged_weights.pt"


class WeightAveraging(TrainerCallback):
    """Starts averaging when an evaluation during training is worse than the best of those before the last
    `nonmono` (AWD-LSTM's rule, `nonmono` 5), updates the average after every optimizer step from then on, and
    leaves the average in the model when training ends. Its state goes into every checkpoint."""

    def __init__(self, trainer, nonmono: int):
        self.trainer = trainer
        self.nonmono = nonmono
        self.losses: list[float] = []
        self.averaged: AveragedModel | None = None
        self.started_at_step: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.trainer.is_in_train or "eval_loss" not in (metrics or {}):
            return
        self.losses.append(metrics["eval_loss"])
        stalled = len(self.losses) > self.nonmono and self.losses[-1] > min(self.losses[: -self.nonmono])
        if self.averaged is None and stalled:
            self.averaged = AveragedModel(self.trainer.model)
            self.started_at_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.averaged is not None:
            self.averaged.update_parameters(self.trainer.model)

    def on_train_end(self, args, state, control, **kwargs):
        if self.averaged is not None:
            self.trainer.model.load_state_dict(self.averaged.module.state_dict())

    @contextlib.contextmanager
    def swapped_in(self, model):
        """The averaged weights in `model` for the block, the trained ones back after it."""
        trained = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict(self.averaged.module.state_dict())
        try:
            yield
        finally:
            model.load_state_dict(trained)

    def checkpoint_state(self) -> dict:
        return {"losses": self.losses, "started_at_step": self.started_at_step}

    def load_checkpoint_state(self, state: dict) -> None:
        self.losses, self.started_at_step = state["losses"], state["started_at_step"]

    def save(self, folder: Path) -> None:
        if self.averaged is None:
            return
        path = folder / AVERAGED_WEIGHTS_NAME
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(self.averaged.state_dict(), temporary)
        os.replace(temporary, path)

    def load(self, checkpoint: Path, model) -> None:
        path = checkpoint / AVERAGED_WEIGHTS_NAME
        if path.is_file():
            self.averaged = AveragedModel(model)
            state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
            self.averaged.load_state_dict(state)
