"""`EvolutionTrainer`: transformers' `Trainer` with what a long run of ours needs on top.

Model cards with the measured results on every save; every push to the Hub carries the remote-code files; a
checkpoint records the exact training loss so far, so a resumed run reports the uninterrupted run's `train_loss`; and
the run folder's manifest learns each checkpoint before the next one is written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import PreTrainedModel, Trainer, TrainerState
from transformers.dynamic_module_utils import custom_object_save
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..modeling_recurrent import RecurrentPreTrainedModel
from ..runs import RunFolder, write_json
from .model_card import write_model_card

logger = logging.getLogger(__name__)
RUN_STATE_NAME = "run_state.json"


def save_remote_code(model: PreTrainedModel, folder: str | Path) -> None:
    """Copy the code files that `auto_map` in config.json names, for models defined in hf_evolution."""
    if isinstance(model, RecurrentPreTrainedModel):
        Path(folder).mkdir(parents=True, exist_ok=True)
        custom_object_save(model, folder)


def is_complete_checkpoint(folder: Path) -> bool:
    """Trainer writes trainer_state.json after the weights, optimizer and RNG states (and we write run_state.json before
    all of them): a checkpoint whose state parses, for its own step, was written to the end."""
    try:
        state = json.loads((folder / TRAINER_STATE_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return f"{PREFIX_CHECKPOINT_DIR}-{state.get('global_step')}" == folder.name


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint that a kill did not interrupt, or None; a half-written newer one is passed over."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = []
    for folder in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = folder.name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        if suffix.isdigit() and folder.is_dir():
            steps.append((int(suffix), folder))
    for _, folder in sorted(steps, reverse=True):
        if is_complete_checkpoint(folder):
            return str(folder)
    return None


class EvolutionTrainer(Trainer):
    """A `Trainer` whose saves write a model card with the measured results, whose every push to the Hub carries the
    remote-code files, and whose resumed runs report the training loss of the whole run.

    `card_info` describes the run for the card: `task` ("text-generation" or "text-classification"), `dataset`,
    `base_model`, `tokenizer`, `command`; `card_results` (validation and test metrics, a generated sample) is filled
    in by the script as results arrive. `run_folder` is told of every checkpoint.
    """

    def __init__(self, *args, card_info: dict | None = None, run_folder: RunFolder | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.card_info = dict(card_info or {})
        self.card_results: dict = {}
        self.run_folder = run_folder
        self.loss_before_this_call = 0.0
        if self.args.push_to_hub and self.args.should_save:
            # Intermediate pushes upload the output folder after copying weights and config.json from the
            # checkpoint, not the code files that config.json names; put those in the folder once, up front.
            save_remote_code(self.model, self.args.output_dir)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs) -> TrainOutput:
        """Train; after a resume, report the training loss of the whole run, as an uninterrupted run would.

        Trainer averages the loss over the steps of this call only; the checkpoint holds the exact sum before it."""
        earlier_steps = 0
        if isinstance(resume_from_checkpoint, str):
            checkpoint = Path(resume_from_checkpoint)
            earlier_steps = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_NAME)).global_step
            if (checkpoint / RUN_STATE_NAME).is_file():
                self.load_run_state(json.loads((checkpoint / RUN_STATE_NAME).read_text()))
            else:
                logger.warning(f"{checkpoint} has no {RUN_STATE_NAME}: train_loss covers the resumed steps only.")
                earlier_steps = 0
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        if earlier_steps == 0:
            return output
        steps_now = output.global_step - earlier_steps
        run_loss = (self.loss_before_this_call + output.training_loss * steps_now) / max(output.global_step, 1)
        output.metrics["train_loss"] = run_loss
        return TrainOutput(output.global_step, run_loss, output.metrics)

    def _run_epoch(self, *args, **kwargs):
        """Trainer runs one more step when it resumes from the checkpoint of the last step (it checks `max_steps`
        only after a step), so every resume of a finished run would train past its budget: run no step then."""
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        """Write run_state.json into the checkpoint before Trainer writes the rest: the loss summed over every step
        so far, and the state of the callbacks that keep one (`checkpoint_state()`, e.g. compare's curve)."""
        unlogged = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        run_state = {
            "global_step": self.state.global_step,
            "loss_sum": self.loss_before_this_call + self._total_loss_scalar + unlogged,
            "callbacks": {
                type(callback).__name__: callback.checkpoint_state()
                for callback in self.callback_handler.callbacks
                if hasattr(callback, "checkpoint_state")
            },
        }
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / RUN_STATE_NAME, run_state)
        super()._save_checkpoint(model, trial)
        if self.run_folder is not None and self.args.should_save:
            self.run_folder.claim_listing()
            self.run_folder.mark_progress()

    def load_run_state(self, run_state: dict) -> None:
        self.loss_before_this_call = run_state["loss_sum"]
        for callback in self.callback_handler.callbacks:
            if type(callback).__name__ in run_state["callbacks"]:
                callback.load_checkpoint_state(run_state["callbacks"][type(callback).__name__])

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if not self.args.should_save:
            return
        self.create_model_card(output_dir=output_dir)
        if self.args.push_to_hub and output_dir not in (None, self.args.output_dir):
            # A checkpoint save is followed by a push of the output folder: give that push the current card too.
            self.create_model_card()

    def create_model_card(self, output_dir: str | None = None, **kwargs):
        write_model_card(
            output_dir or self.args.output_dir,
            self.model,
            args=self.args,
            log_history=self.state.log_history,
            results=self.card_results,
            info=self.card_info,
        )
