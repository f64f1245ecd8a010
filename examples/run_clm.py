#!/usr/bin/env python
"""Train or fine-tune a causal language model (RNN, LSTM, GRU, GPT-2, or any causal LM checkpoint) with `Trainer`.

In the style of transformers' `examples/pytorch/language-modeling/run_clm.py`: dataclass arguments parsed by
`HfArgumentParser` (`--help` lists them all, Trainer's included), the embedded BBC News corpus by default, files or
any Hub dataset otherwise. Reports validation and test loss, perplexity and bits per byte, writes a model card, and
generates a short sample. Runs unchanged under `torchrun` and `accelerate launch`.

    python examples/run_clm.py --model_type lstm --output_dir runs/lstm-lm --max_steps 500
    python examples/run_clm.py --model_name_or_path runs/lstm-lm --output_dir runs/lstm-lm-ft --train_file my.txt
"""

import logging
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, default_data_collator, set_seed

import hf_evolution  # noqa: F401  (registers rnn, lstm and gru with the Auto classes)
from hf_evolution.data import batchify_for_lm, corpus_stats, pack_for_lm, token_stream
from hf_evolution.evaluation import is_stateful, stream_loss
from hf_evolution.families import CAUSAL_FAMILIES, RECURRENT_FAMILIES, position_limit
from hf_evolution.metrics import lm_metrics
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
    model_type: str | None = field(
        default=None, metadata={"help": f"From scratch: one of {', '.join(CAUSAL_FAMILIES)}, sized by --size."}
    )
    dtype: str | None = field(
        default=None,
        metadata={"help": "Load the checkpoint in this dtype.", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )


@dataclass
class DataTrainingArguments(ScriptDataArguments):
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    sample_prompt: str = field(default="The", metadata={"help": "Prompt of the sample generated at the end."})
    sample_tokens: int = field(default=40, metadata={"help": "Length of that sample (0: no sample)."})
    stateful: bool = field(
        default=False,
        metadata={
            "help": "Train as recurrent LMs train best (truncated BPTT): the training split as "
            "per_device_train_batch_size contiguous streams per process, read in order in blocks of --block_size, "
            "the state carried from each block to the next and detached, reset at each epoch. Recurrent models only. "
            "It also makes the classic word language model's optimiser the default: plain SGD (--optim sgd "
            "--learning_rate 20 --max_grad_norm 0.25 --weight_decay 0), which beat AdamW for every recurrent family "
            "with stateful training (docs/training.md, 'Recurrent language models trained the way they are strong'); "
            "give any of those options to override it."
        },
    )


# What --stateful makes the default, where the command line does not say otherwise.
STATEFUL_DEFAULTS = {"optim": "sgd", "learning_rate": 20.0, "max_grad_norm": 0.25, "weight_decay": 0.0}


def parse_arguments(argv: list[str] | None = None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, EvolutionTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if data_args.stateful:  # parsed again: what the command line gives still wins over these defaults
        parser.set_defaults(**STATEFUL_DEFAULTS)
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(argv)
    setup_logging(training_args, logger)

    # Everything that can be wrong with the arguments fails here, before the output folder, data or training.
    check_arguments(model_args, data_args, task="lm")
    if data_args.stateful and model_args.model_type not in (None, *RECURRENT_FAMILIES):
        raise ValueError(f"--stateful carries a recurrent state; {model_args.model_type} has none. Leave it out.")
    if training_args.variable_bptt and not data_args.stateful:
        raise ValueError("--variable_bptt varies the length of the stateful blocks: give --stateful too.")
    check_hub_access(training_args)
    run_folder, checkpoint = open_output_dir(training_args, model_args, data_args)
    with discarded_on_failure(run_folder):  # a failure before any checkpoint leaves the folder as it was
        return train_and_evaluate(model_args, data_args, training_args, run_folder, checkpoint)


def train_and_evaluate(model_args, data_args, training_args, run_folder, checkpoint) -> dict:
    set_seed(training_args.seed)
    corpus, tokenizer, tokenizer_description = load_script_data(model_args, data_args, training_args)
    model = script_model(model_args, tokenizer, task="lm", seed=training_args.seed)
    block_size = min(data_args.block_size, tokenizer.model_max_length, position_limit(model.config) or sys.maxsize)
    if block_size < data_args.block_size:
        logger.warning(
            f"--block_size {data_args.block_size} is longer than the model or tokenizer allow: {block_size}."
        )

    streams = training_args.per_device_train_batch_size * training_args.world_size
    with training_args.main_process_first(desc="tokenising and packing"):
        blocks = pack_for_lm(corpus, tokenizer, block_size, num_proc=data_args.preprocessing_num_workers)
        if data_args.stateful:  # the training split as contiguous streams, one row per stream of every process
            blocks["train"] = batchify_for_lm(corpus["train"], tokenizer, block_size, streams)
        stats = corpus_stats(corpus, tokenizer)
    train_blocks = take_first(blocks["train"], data_args.max_train_samples)
    if data_args.stateful:  # whole batches of streams only
        train_blocks = take_first(train_blocks, len(train_blocks) - len(train_blocks) % streams)
    eval_blocks = {split: take_first(blocks[split], data_args.max_eval_samples) for split in ("validation", "test")}

    if training_args.include_num_input_tokens_seen in ("no", False):  # blocks carry no padding: count them all
        training_args.include_num_input_tokens_seen = "all"
    trainer = EvolutionTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks if training_args.do_train else None,
        eval_dataset=eval_blocks["validation"],
        processing_class=tokenizer,
        data_collator=default_data_collator,
        card_info={
            "task": "text-generation",
            "dataset": data_args.train_file or data_args.dataset_name,
            "base_model": model_args.model_name_or_path,
            "tokenizer": tokenizer_description,
            "command": command_line(),
        },
        run_folder=run_folder,
        stateful=data_args.stateful,
    )

    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics)
        # Counted, not derived from samples: a --variable_bptt sample is a whole batch of blocks of varying length.
        metrics["train_tokens_per_second"] = trainer.state.num_input_tokens_seen / metrics["train_runtime"]
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    if training_args.do_eval:
        # Blocks read from nothing (the common protocol), and the whole split as one stream, read the family's way:
        # recurrent models with their state carried, transformers through a sliding window.
        stream_protocol = "stateful" if is_stateful(trainer.model) else "sliding_window"
        for split, prefix in (("validation", "eval"), ("test", "test")):
            metrics = trainer.evaluate(eval_dataset=eval_blocks[split], metric_key_prefix=prefix)
            derived = lm_metrics(metrics[f"{prefix}_loss"], stats[split]["tokens"], stats[split]["bytes"])
            metrics.update({f"{prefix}_{name}": value for name, value in derived.items()})
            stream = token_stream(corpus[split], tokenizer)
            if data_args.max_eval_samples is not None:
                stream = stream[: data_args.max_eval_samples * block_size]
            total, count, protocol = stream_loss(trainer.model, stream, block_size=block_size)
            derived = lm_metrics(total / count, stats[split]["tokens"], stats[split]["bytes"])
            metrics.update({f"{prefix}_{stream_protocol}_{name}": value for name, value in derived.items()})
            metrics[f"{prefix}_{stream_protocol}_protocol"] = protocol
            trainer.log_metrics(prefix, metrics)
            trainer.save_metrics(prefix, metrics)
            results.update(metrics)
    trainer.card_results.update(results)

    if data_args.sample_tokens > 0:
        trainer.card_results["sample"] = results["sample"] = generate_sample(
            trainer.model, tokenizer, data_args.sample_prompt, data_args.sample_tokens, training_args.seed
        )
        logger.info(f"Sample: {results['sample']}")

    # Weights, tokenizer, code files and the model card with every result above; pushed when asked.
    if training_args.push_to_hub:
        trainer.push_to_hub()
    else:
        trainer.save_model()
    return results


@torch.no_grad()
def generate_sample(model, tokenizer, prompt: str, new_tokens: int, seed: int) -> str:
    set_seed(seed)
    model.eval()
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    output = model.generate(
        **inputs, max_new_tokens=new_tokens, do_sample=True, top_k=50, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(output[0], skip_special_tokens=True)


if __name__ == "__main__":
    sys.exit(run_script(main, "run_clm.py"))
