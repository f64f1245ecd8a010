"""Training with transformers' `Trainer`: the scripts' arguments, `EvolutionTrainer`, model cards, and what the
example scripts share."""

from .arguments import EvolutionTrainingArguments, ScriptDataArguments, ScriptModelArguments, parse_config_overrides
from .model_card import write_model_card
from .trainer import EvolutionTrainer, is_complete_checkpoint, last_complete_checkpoint, save_remote_code

__all__ = [
    "EvolutionTrainer",
    "EvolutionTrainingArguments",
    "ScriptDataArguments",
    "ScriptModelArguments",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "parse_config_overrides",
    "save_remote_code",
    "write_model_card",
]
