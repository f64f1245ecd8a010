"""Every private part of transformers' `Trainer` that `EvolutionTrainer` relies on, in one place.

Written against transformers 5.0 to 5.24 (read and tested on 5.24.0; the 5.25.0 `Trainer` has the same internals).
Trainer offers no public hook for these, so `TrainerHooks` overrides the private methods and hands each moment to a
method with a public name that `EvolutionTrainer` overrides in turn:

- `_run_epoch(...)` (called by `train` once per epoch) -> `should_run_epoch()`;
- `_save_checkpoint(model, trial)` and `_get_output_dir(trial=)` -> `before_checkpoint(folder)` and
  `after_checkpoint(folder)`;
- `save_model(output_dir, _internal_call)` -> `before_save_model(output_dir, by_trainer)` (`_internal_call` is True
  for the saves Trainer makes itself: into a checkpoint, or into the output folder before a push);
- `_tr_loss` (the loss summed on the device since the last log) and `_total_loss_scalar` (the logged sum, as a float),
  both reset by each `train` call -> `loss_sum_of_this_call()`.

tests/test_trainer_internals.py checks each of these against the installed transformers and says which one changed.
"""

from __future__ import annotations

from pathlib import Path

from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class TrainerHooks:
    """Mix in before `Trainer`: `class MyTrainer(TrainerHooks, Trainer)`. The hooks do nothing by default."""

    def should_run_epoch(self) -> bool:
        """Called before each epoch of `train`; False skips the epoch (stop the run with `control` as well)."""
        return True

    def before_checkpoint(self, folder: Path) -> None:
        """Called before Trainer writes anything into the checkpoint `folder` (it may not exist yet)."""

    def after_checkpoint(self, folder: Path) -> None:
        """Called once Trainer has written the checkpoint `folder` and rotated the older ones."""

    def before_save_model(self, output_dir: str | None, by_trainer: bool) -> None:
        """Called before every `save_model`; `by_trainer` for the saves Trainer makes itself (checkpoints, pushes)."""

    def loss_sum_of_this_call(self) -> float:
        """The training loss summed over the steps of the current `train` call, logged or not (averaged over
        processes, as Trainer logs it)."""
        unlogged = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        return self._total_loss_scalar + unlogged

    def _run_epoch(self, *args, **kwargs):
        if self.should_run_epoch():
            super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self.before_checkpoint(folder)
        super()._save_checkpoint(model, trial)
        self.after_checkpoint(folder)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        self.before_save_model(output_dir, by_trainer=_internal_call)
        super().save_model(output_dir, _internal_call)
