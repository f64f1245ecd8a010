"""What the example scripts and `hf-evolution compare` share around `Trainer`.

Refusing an output folder that holds a run, a clear error before training when a push could not happen, one
tokenizer for every process of a distributed run, model cards with the measured results, and pushes to the Hub
that always carry the remote-code files.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import huggingface_hub
import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedModel, Trainer, TrainerState, TrainingArguments
from transformers.dynamic_module_utils import custom_object_save
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import TrainOutput, get_last_checkpoint

from .data import BBC_NEWS, load_corpus
from .families import MODEL_FAMILIES, SIZES, parameter_counts
from .modeling_recurrent import RecurrentPreTrainedModel
from .tokenization import TOKENIZER_KINDS, load_tokenizer, train_tokenizer


@dataclass
class EvolutionTrainingArguments(TrainingArguments):
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace what an existing --output_dir holds. Without it, a folder holding a run is refused."
        },
    )

    def __post_init__(self):
        # Without an accelerator, say so: transformers runs DDP on CPUs (gloo, under torchrun or accelerate launch)
        # only with use_cpu, and otherwise silently trains one independent copy per process.
        if not self.use_cpu and not torch.accelerator.is_available():
            self.use_cpu = True
        super().__post_init__()


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
        metadata={"help": "For .txt files: 'line' (a document per line) or 'paragraph' (blank-line separated)."},
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


def load_script_data(model_args, data_args, training_args, label_column: str | None = None):
    """The corpus and the tokenizer: the one named, the checkpoint's, or one trained on the training split."""
    with training_args.main_process_first(desc="loading the corpus"):
        corpus = load_corpus(
            data_args.dataset_name,
            dataset_config=data_args.dataset_config_name,
            text_column=data_args.text_column,
            label_column=label_column,
            txt_mode=data_args.txt_mode,
            train_file=data_args.train_file,
            validation_file=data_args.validation_file,
            test_file=data_args.test_file,
            seed=training_args.seed,
        )
    tokenizer_name = model_args.tokenizer_name or model_args.model_name_or_path
    tokenizer = shared_tokenizer(
        training_args,
        tokenizer_name,
        corpus["train"],
        kind=data_args.tokenizer_kind,
        vocab_size=data_args.tokenizer_vocab_size,
    )
    return corpus, tokenizer, describe_tokenizer(tokenizer, tokenizer_name, data_args.tokenizer_kind)


def fit_embeddings_to_tokenizer(model: PreTrainedModel, tokenizer, logger: logging.Logger) -> None:
    """A tokenizer with more tokens than the model's vocabulary: resize the embeddings, as transformers' run_clm."""
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        logger.warning(f"The tokenizer has {len(tokenizer)} tokens, the model {vocab}: resizing the embeddings.")
        model.resize_token_embeddings(len(tokenizer))


def close_distributed() -> None:
    """Leave the process group once a script has finished: a process that exits with gloo's worker threads still
    running can abort ("terminate called without an active exception") and fail the whole launch after a good run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def resolve_output_dir(args: EvolutionTrainingArguments) -> str | None:
    """Refuse an output folder that holds a run unless --overwrite (then cleared) or resuming; return the checkpoint
    to resume from. Only the main process looks, before any process writes there."""
    output_dir = Path(args.output_dir)
    resume = args.resume_from_checkpoint
    if resume:
        if resume.lower() in ("true", "last"):
            checkpoint = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
            if checkpoint is None:
                raise FileNotFoundError(
                    f"--resume_from_checkpoint {resume}: {output_dir} holds no checkpoint-* folder to resume from."
                )
            return checkpoint
        if not (Path(resume) / "trainer_state.json").is_file():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume} is not a checkpoint folder (no trainer_state.json in it)."
            )
        return resume
    if args.process_index == 0 and output_dir.is_dir() and any(output_dir.iterdir()):
        if not args.overwrite:
            raise FileExistsError(
                f"Output folder {output_dir} already holds a run. Pass --overwrite to replace it, "
                "--resume_from_checkpoint last to continue it, or choose another --output_dir."
            )
        shutil.rmtree(output_dir)
    return None


def check_hub_access(args: TrainingArguments) -> None:
    """Fail before any training when `--push_to_hub` could not push at the end."""
    if not args.push_to_hub:
        return
    if args.hub_token is None and huggingface_hub.get_token() is None:
        raise ValueError(
            "--push_to_hub needs a Hugging Face token with write access: run `hf auth login`, set HF_TOKEN, "
            "or pass --hub_token."
        )


def shared_tokenizer(
    args: TrainingArguments,
    tokenizer_name: str | None,
    train_dataset,
    *,
    kind: str = "bpe",
    vocab_size: int | None = None,
):
    """The tokenizer named, or one trained on the train split. The main process trains and saves it in the output
    folder first; the other processes of a distributed run (and a resumed run) load that one, so all share it."""
    if tokenizer_name is not None:
        return load_tokenizer(tokenizer_name)
    saved = Path(args.output_dir)
    with args.main_process_first(local=False, desc="training the tokenizer"):
        if (saved / "tokenizer.json").is_file():
            return load_tokenizer(saved)
        tokenizer = train_tokenizer(train_dataset, kind, vocab_size=vocab_size)
        if args.should_save:
            tokenizer.save_pretrained(saved)
        return tokenizer


def save_remote_code(model: PreTrainedModel, folder: str | Path) -> None:
    """Copy the code files that `auto_map` in config.json names, for models defined in hf_evolution."""
    if isinstance(model, RecurrentPreTrainedModel):
        Path(folder).mkdir(parents=True, exist_ok=True)
        custom_object_save(model, folder)


class EvolutionTrainer(Trainer):
    """A `Trainer` whose saves write a model card with the measured results, and whose every push to the Hub carries
    the remote-code files, so each pushed revision loads with `trust_remote_code=True`.

    `card_info` describes the run for the card: `task` ("text-generation" or "text-classification"), `dataset`,
    `base_model`, `tokenizer`, `command`; `card_results` (validation and test metrics, a generated sample) is filled
    in by the script as results arrive.
    """

    def __init__(self, *args, card_info: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.card_info = dict(card_info or {})
        self.card_results: dict = {}
        if self.args.push_to_hub and self.args.should_save:
            # Intermediate pushes upload the output folder after copying weights and config.json from the
            # checkpoint, not the code files that config.json names; put those in the folder once, up front.
            save_remote_code(self.model, self.args.output_dir)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs) -> TrainOutput:
        """Train; after a resume, report the training loss of the whole run, as an uninterrupted run would.

        Trainer averages the loss over the steps of this call only; the steps before the checkpoint are in the
        checkpoint's log history (exactly, when the logging interval divides the checkpoint's step)."""
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        if not isinstance(resume_from_checkpoint, str):
            return output
        earlier = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / TRAINER_STATE_NAME))
        earlier_total, previous_step = 0.0, 0
        for entry in earlier.log_history:
            if "loss" in entry and entry["step"] <= earlier.global_step:
                earlier_total += entry["loss"] * (entry["step"] - previous_step)
                previous_step = entry["step"]
        steps_now = output.global_step - earlier.global_step
        run_loss = (earlier_total + output.training_loss * steps_now) / max(output.global_step, 1)
        output.metrics["train_loss"] = run_loss
        return TrainOutput(output.global_step, run_loss, output.metrics)

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


def describe_model(model: PreTrainedModel) -> str:
    config = model.config
    if isinstance(model, RecurrentPreTrainedModel):
        traits = [f"hidden size {config.hidden_size}", f"embedding size {config.embedding_size}"]
        if config.bidirectional:
            traits.append("bidirectional")
        if config.tie_word_embeddings and hasattr(model, "lm_head"):
            traits.append("tied input and output embeddings")
        if config.model_type == "rnn":
            traits.append(f"{config.nonlinearity} units")
        return f"{config.num_hidden_layers}-layer {config.model_type.upper()} ({', '.join(traits)})"
    if config.model_type == "gpt2":
        return f"GPT-2 ({config.n_layer} layers, width {config.n_embd}, {config.n_head} heads)"
    if config.model_type == "bert":
        return (
            f"BERT ({config.num_hidden_layers} layers, width {config.hidden_size}, {config.num_attention_heads} heads)"
        )
    return config.model_type


def is_hub_id(name: str | None) -> bool:
    """A Hub repo id (user/name or name), as opposed to a local folder; only those belong in card metadata."""
    return bool(name) and not Path(name).exists() and name.count("/") <= 1 and " " not in name


METRIC_LABELS = {
    "loss": "loss (nats/token)",
    "perplexity": "perplexity",
    "bits_per_byte": "bits per byte",
    "accuracy": "accuracy",
    "f1_macro": "macro F1",
    "f1_micro": "micro F1",
}


def write_model_card(folder, model, *, args, log_history, results: dict, info: dict) -> Path:
    """README.md with YAML metadata (library, tags, datasets, base model, metrics) and what a reader wants to know:
    what the model is, how well it did, how to load it, how it was trained, and its limits."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = info.get("task", "text-generation")
    dataset = info.get("dataset") or "custom data"
    name = Path(args.hub_model_id or args.output_dir).name
    base_model = info.get("base_model")
    family = model.config.model_type
    counts = parameter_counts(model)

    eval_results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=metric,
            metric_value=round(float(results[f"{prefix}_{metric}"]), 4),
        )
        for split, prefix in (("validation", "eval"), ("test", "test"))
        for metric in METRIC_LABELS
        if f"{prefix}_{metric}" in results
    ]
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["hf-evolution", family, "recurrent" if isinstance(model, RecurrentPreTrainedModel) else "transformer"],
        datasets=[dataset] if is_hub_id(dataset) or dataset == "bbc-news" else None,
        base_model=base_model if is_hub_id(base_model) else None,
        pipeline_tag=task,
        model_name=name,
        eval_results=eval_results or None,
    )

    lines = [
        f"# {name}",
        "",
        f"A {describe_model(model)} for {task.replace('-', ' ')}, "
        + (f"fine-tuned from `{base_model}` " if base_model else "trained from scratch ")
        + f"on {dataset} with hf_evolution.",
        f"Parameters: {counts['total']:,} in all, {counts['non_embedding']:,} outside the embeddings.",
        "",
        "## Results",
        "",
    ]
    metric_rows = [
        f"| {label} | {format_metric(results.get(f'eval_{metric}'))} | {format_metric(results.get(f'test_{metric}'))} |"
        for metric, label in METRIC_LABELS.items()
        if f"eval_{metric}" in results or f"test_{metric}" in results
    ]
    if metric_rows:
        lines += ["| metric | validation | test |", "|---|---|---|", *metric_rows, ""]
    else:
        lines += ["No evaluation has run yet (training in progress).", ""]
    if "sample" in results:
        lines += ["A sample (top-k 50 sampling):", "", "> " + results["sample"].replace("\n", " "), ""]

    lines += ["## How to use", "", "```python"]
    if task == "text-generation":
        lines += [
            "from transformers import pipeline",
            "",
            f'generator = pipeline("text-generation", model="{args.hub_model_id or name}", trust_remote_code=True)',
            'print(generator("The", max_new_tokens=30)[0]["generated_text"])',
        ]
    else:
        lines += [
            "from transformers import pipeline",
            "",
            f'classifier = pipeline("{task}", model="{args.hub_model_id or name}", trust_remote_code=True)',
            'print(classifier("Shares rose after the results."))',
        ]
    lines += ["```", ""]
    if isinstance(model, RecurrentPreTrainedModel):
        lines += [
            "`trust_remote_code=True` runs the model code shipped in this repository, so hf_evolution need not be "
            "installed; where it is, `import hf_evolution` registers the classes and the flag can be left out.",
            "",
        ]

    batch = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
    train_entries = [entry for entry in log_history if "loss" in entry]
    final = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    lines += [
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        f"| tokenizer | {info.get('tokenizer', 'see tokenizer files')} |",
        f"| learning rate | {args.learning_rate} ({getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)} "
        f"schedule, warmup {args.warmup_steps} steps) |",
        f"| batch size | {batch} ({args.per_device_train_batch_size} per device x {max(1, args.world_size)} "
        f"devices x {args.gradient_accumulation_steps} accumulation) |",
        f"| steps | {final.get('step', args.max_steps if args.max_steps > 0 else 'see log')} |",
        f"| gradient clipping | {args.max_grad_norm} |",
        f"| seed | {args.seed} |",
    ]
    if "train_runtime" in final:
        lines.append(f"| training time | {final['train_runtime']:.0f} s |")
    if info.get("command"):
        lines += ["", "Command:", "", "```bash", info["command"], "```"]
    if train_entries:
        lines += ["", "| step | training loss | validation loss |", "|---|---|---|"]
        eval_by_step = {entry["step"]: entry["eval_loss"] for entry in log_history if "eval_loss" in entry}
        for entry in train_entries[-10:]:
            lines.append(
                f"| {entry['step']} | {entry['loss']:.4f} | {format_metric(eval_by_step.get(entry['step']))} |"
            )
    lines += [
        "",
        "## Limitations",
        "",
        f"A small model trained on {dataset} only: it reflects that text's topics, period and style, and is meant for "
        "studying how model families compare, not for producing facts or for deployment.",
        "",
        "## Framework versions",
        "",
        *[f"- {package}: {version}" for package, version in framework_versions().items()],
        "",
    ]
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = folder / "README.md"
    card.save(path)
    return path


def format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def framework_versions() -> dict:
    import datasets
    import tokenizers
    import torch
    import transformers

    from . import __version__

    return {
        "hf_evolution": __version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__,
    }


def command_line() -> str:
    return " ".join(["python", *sys.argv]) if sys.argv and sys.argv[0] else ""


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


def take_first(dataset, count: int | None):
    """The first `count` rows (`--max_train_samples`, `--max_eval_samples`), or all."""
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


def describe_tokenizer(tokenizer, name: str | None, kind: str) -> str:
    origin = f"`{name}`" if name else f"{kind} trained on the training split"
    return f"{origin}, {len(tokenizer):,} tokens"


def setup_logging(args: TrainingArguments, logger: logging.Logger) -> None:
    """As transformers' example scripts: one format, the main process at info, the others quieter."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
