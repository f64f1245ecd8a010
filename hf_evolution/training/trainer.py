"""`EvolutionTrainer`: transformers' `Trainer` with what a long run of ours needs on top.

Stateful training (truncated backpropagation through time, the way recurrent LMs are trained at their best): the
training split as contiguous streams, read in order, the recurrent state carried from each batch to the next and
detached, reset at each epoch. Model cards with the measured results on every save; every push to the Hub carries
the remote-code files; a checkpoint records the exact training loss so far and the carried state, so a resumed run
continues as the uninterrupted one would; the run folder's manifest learns each checkpoint.

What needs `Trainer`'s private parts goes through the public-named hooks of `TrainerHooks` (trainer_internals.py).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, Trainer, TrainerState
from transformers.dynamic_module_utils import custom_object_save
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..evaluation import is_stateful
from ..modeling_recurrent import RecurrentCache, RecurrentPreTrainedModel
from ..runs import RunFolder, write_json
from .averaging import WeightAveraging
from .model_card import write_model_card
from .streams import ResetStreamsEachEpoch, StreamSampler, VariableLengthStreams, stream_state_name
from .trainer_internals import TrainerHooks

logger = logging.getLogger(__name__)
RUN_STATE_NAME = "run_state.json"
# The code files of our models that a save copies beside config.json (`custom_object_save`).
REMOTE_CODE_FILES = tuple(
    sorted(
        path.name
        for path in Path(__file__).parents[1].glob("*.py")
        if path.name.startswith(("configuration_", "modeling_"))
    )
)
# What a final save writes into a model folder: weights (one file or shards with their index), config, generation
# config, tokenizer, the training arguments, the model card and the remote code. A run folder claims these names
# before the save writes them.
SAVED_MODEL_FILES = (
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",  # the files of tokenizers that are saved in their original formats too
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "training_args.bin",
    *REMOTE_CODE_FILES,
)


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


class EvolutionTrainer(TrainerHooks, Trainer):
    """A `Trainer` whose saves write a model card with the measured results, whose every push to the Hub carries the
    remote-code files, and whose resumed runs report the training loss of the whole run.

    `card_info` describes the run for the card: `task` ("text-generation" or "text-classification"), `dataset`,
    `base_model`, `tokenizer`, `command`, `diverged`; `card_results` (validation and test metrics, a generated sample) is filled
    in by the script as results arrive. `run_folder` is told of every checkpoint. With `stateful`, the training set
    is a `batchify_for_lm` layout of `per_device_train_batch_size * world_size` rows and the model a recurrent LM.
    """

    def __init__(
        self,
        *args,
        card_info: dict | None = None,
        run_folder: RunFolder | None = None,
        stateful: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.card_info = dict(card_info or {})
        self.card_results: dict = {}
        self.run_folder = run_folder
        self.loss_before_this_call = 0.0
        self.stateful = stateful
        self.stream_cache: RecurrentCache | None = None
        if stateful:
            if not is_stateful(self.model):
                raise ValueError(
                    f"Stateful training carries a recurrent state from batch to batch; {type(self.model).__name__} "
                    "has none (a transformer reads a window, not a stream). Leave --stateful out for it."
                )
            self.add_callback(ResetStreamsEachEpoch(self))
        self.averaging = None
        nonmono = getattr(self.args, "average_when_stalled", None)  # plain TrainingArguments have none of ours
        if nonmono is not None:
            self.averaging = WeightAveraging(self, nonmono)
            self.add_callback(self.averaging)
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
            if self.stateful:
                self.stream_cache = self.load_stream_state(checkpoint)
            if self.averaging is not None:
                self.averaging.load(checkpoint, self.model)
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        if earlier_steps == 0:
            return output
        steps_now = output.global_step - earlier_steps
        run_loss = (self.loss_before_this_call + output.training_loss * steps_now) / max(output.global_step, 1)
        output.metrics["train_loss"] = run_loss
        return TrainOutput(output.global_step, run_loss, output.metrics)

    def get_train_dataloader(self) -> DataLoader:
        """The streams in order, this process's rows only (not sharded again by accelerate)."""
        if not self.stateful:
            return super().get_train_dataloader()
        batch_size = self.args.per_device_train_batch_size
        if getattr(self.args, "variable_bptt", False):
            streams = VariableLengthStreams(
                self.train_dataset,
                batch_size,
                self.args.world_size,
                self.args.process_index,
                len(self.train_dataset[0]["input_ids"]),
                self.args.seed,
                epoch=lambda: int(self.state.epoch or 0),
            )
            return DataLoader(streams, batch_size=None, num_workers=0)
        sampler = StreamSampler(len(self.train_dataset), batch_size, self.args.world_size, self.args.process_index)
        if len(sampler) == 0:
            raise ValueError(
                f"The training streams have {len(self.train_dataset)} blocks, fewer than one batch of "
                f"{batch_size * self.args.world_size}; lower the batch size or the block size."
            )
        return DataLoader(
            self.train_dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.data_collator,
            drop_last=True,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """In stateful training, start each batch from the state the previous one left, then detach it (truncated
        backpropagation through time: gradients stop at the batch boundary, the state does not)."""
        if not (self.stateful and model.training):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.stream_cache is None:
            self.stream_cache = RecurrentCache(self.model.config)
        length_scale = inputs.pop("length_scale", 1.0)  # variable BPTT: AWD-LSTM scales the step by length / bptt
        inputs = {**inputs, "cache": self.stream_cache, "use_cache": True}
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        loss = loss * length_scale
        self.stream_cache.detach_()
        return (loss, outputs) if return_outputs else loss

    def load_stream_state(self, checkpoint: Path) -> RecurrentCache | None:
        path = checkpoint / stream_state_name(self.args.process_index)
        if not path.is_file():
            return None
        saved = torch.load(path, map_location=self.args.device, weights_only=True)  # tensors and an int
        cache = RecurrentCache(self.model.config)
        for layer_idx, states in enumerate(saved["states"]):
            cache.update_layer_state(layer_idx, tuple(states))
        cache.seen_tokens = saved["seen_tokens"]
        return cache

    def save_stream_state(self, folder: Path) -> None:
        """This process's carried state, so that a resume within an epoch continues its streams where they were."""
        if self.stream_cache is None or self.stream_cache.layer_state(0) is None:
            return
        states = [list(self.stream_cache.layer_state(index)) for index in range(len(self.stream_cache.layers))]
        path = folder / stream_state_name(self.args.process_index)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save({"states": states, "seen_tokens": self.stream_cache.seen_tokens}, temporary)
        os.replace(temporary, path)

    def should_run_epoch(self) -> bool:
        """Trainer runs one more step when it resumes from the checkpoint of the last step (it checks `max_steps`
        only after a step), so every resume of a finished run would train past its budget: run no step then."""
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return False
        return True

    def before_checkpoint(self, folder: Path) -> None:
        """Write run_state.json into the checkpoint before Trainer writes the rest: the loss summed over every step
        so far, and the state of the callbacks that keep one (`checkpoint_state()`, e.g. compare's curve)."""
        run_state = {
            "global_step": self.state.global_step,
            "loss_sum": self.loss_before_this_call + self.loss_sum_of_this_call(),
            "callbacks": {
                type(callback).__name__: callback.checkpoint_state()
                for callback in self.callback_handler.callbacks
                if hasattr(callback, "checkpoint_state")
            },
        }
        if self.run_folder is not None and self.args.should_save:
            self.run_folder.claim(folder, whole=True)  # by its exact name, before anything is in it
        if self.stateful:  # every process its own streams' state
            folder.mkdir(parents=True, exist_ok=True)
            self.save_stream_state(folder)
        if self.averaging is not None and self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            self.averaging.save(folder)
        if self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / RUN_STATE_NAME, run_state)

    def after_checkpoint(self, folder: Path) -> None:
        if self.run_folder is not None and self.args.should_save:
            self.run_folder.mark_progress()

    def load_run_state(self, run_state: dict) -> None:
        self.loss_before_this_call = run_state["loss_sum"]
        for callback in self.callback_handler.callbacks:
            if type(callback).__name__ in run_state["callbacks"]:
                callback.load_checkpoint_state(run_state["callbacks"][type(callback).__name__])

    def evaluate(self, *args, **kwargs) -> dict:
        """With NT-ASGD averaging under way, evaluate the averaged weights, as AWD-LSTM does."""
        if self.averaging is None or self.averaging.averaged is None:
            return super().evaluate(*args, **kwargs)
        with self.averaging.swapped_in(self.model):
            return super().evaluate(*args, **kwargs)

    def before_save_model(self, output_dir: str | None, by_trainer: bool) -> None:
        """A save of ours into a model folder claims the names it writes (a checkpoint's folder is claimed whole)."""
        if self.run_folder is not None and self.args.should_save and not by_trainer:
            folder = Path(output_dir or self.args.output_dir)
            self.run_folder.claim(*(folder / name for name in SAVED_MODEL_FILES))

    def save_model(self, output_dir: str | None = None, **kwargs):
        super().save_model(output_dir, **kwargs)
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
