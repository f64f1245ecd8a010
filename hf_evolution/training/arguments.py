"""The argument dataclasses of the example scripts, parsed by `HfArgumentParser` as in transformers' own examples."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..data import BBC_NEWS, TXT_MODES
from ..families import MODEL_FAMILIES, SIZES
from ..tokenization import TOKENIZER_KINDS


@dataclass
class EvolutionTrainingArguments(TrainingArguments):
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace the run an existing --output_dir holds (only what hf_evolution wrote there is deleted). "
            "Without it, a folder holding a run is refused."
        },
    )
    variable_bptt: bool = field(
        default=False,
        metadata={
            "help": "With --stateful: AWD-LSTM's variable backpropagation length. Each batch is --block_size tokens "
            "long with probability 0.95, else half of it, then drawn from a normal of that mean and deviation 5, and "
            "its loss (so its step) is scaled by length / block_size."
        },
    )
    average_when_stalled: int | None = field(
        default=None,
        metadata={
            "help": "NT-ASGD (AWD-LSTM's optimiser schedule; 5 there): once the validation loss is worse than the "
            "best of the evaluations before the last N, keep averaging the weights after every step "
            "(torch.optim.swa_utils.AveragedModel) and evaluate and save the average. Use with --optim sgd and "
            "evaluations during training (--eval_strategy steps or epoch)."
        },
    )

    def __post_init__(self):
        # Without an accelerator, say so: transformers runs DDP on CPUs (gloo, under torchrun or accelerate launch)
        # only with use_cpu, and otherwise silently trains one independent copy per process.
        if not self.use_cpu and not torch.accelerator.is_available():
            self.use_cpu = True
        super().__post_init__()
        if self.average_when_stalled is not None and self.average_when_stalled < 1:
            raise ValueError(
                f"--average_when_stalled must be a positive number of evaluations, got {self.average_when_stalled}."
            )


@dataclass
class ScriptModelArguments:
    """Where the example scripts' model and tokenizer come from; each script narrows the help to its families."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A checkpoint folder or Hub id to start from. Leave unset to train from scratch."},
    )
    model_type: str | None = field(
        default=None, metadata={"help": f"From scratch: one of {', '.join(MODEL_FAMILIES)}, sized by --size."}
    )
    size: str = field(
        default="small",
        metadata={
            "help": f"From scratch: one of {', '.join(SIZES)}. Recurrent models get the hidden size whose "
            "non-embedding parameter count matches the transformer's at that size."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "From scratch: config fields to override, e.g. 'hidden_size=256,hidden_dropout=0.3'."},
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={
            "help": "A tokenizer folder or Hub id; default: the checkpoint's, or one trained on the train split."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a checkpoint's own model code to run."})


@dataclass
class ScriptDataArguments:
    """The data and tokenizer arguments the example scripts share."""

    dataset_name: str = field(
        default=BBC_NEWS, metadata={"help": f"'{BBC_NEWS}' (embedded, offline) or a Hub dataset id."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "A .txt, .csv, .json or .jsonl file."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data (else cut from train)."})
    test_file: str | None = field(default=None, metadata={"help": "Test data (else cut from train)."})
    text_column: str | None = field(default=None, metadata={"help": "The column holding the text (inferred)."})
    txt_mode: str = field(
        default="line",
        metadata={
            "help": "For .txt files: 'line' (a document per line) or 'paragraph' (blank-line separated).",
            "choices": TXT_MODES,
        },
    )
    tokenizer_kind: str = field(
        default="bpe",
        metadata={
            "help": f"When training a tokenizer: one of {', '.join(TOKENIZER_KINDS)}.",
            "choices": TOKENIZER_KINDS,
        },
    )
    tokenizer_vocab_size: int | None = field(default=None, metadata={"help": "When training a tokenizer."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training samples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many eval/test samples."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenising."})


def parse_config_overrides(overrides: str | None) -> dict:
    """`--config_overrides 'a=1,b=0.5,c=true,d=tanh'` -> {'a': 1, 'b': 0.5, 'c': True, 'd': 'tanh'}."""
    fields = {}
    for item in filter(None, (overrides or "").split(",")):
        if "=" not in item:
            raise ValueError(f"--config_overrides item {item!r} is not of the form name=value.")
        name, value = (part.strip() for part in item.split("=", 1))
        try:
            fields[name] = json.loads(value)
        except json.JSONDecodeError:
            fields[name] = value
    return fields
