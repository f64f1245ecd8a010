"""What the example scripts share between parsing their arguments and training: checks that fail before any work,
the output folder, the corpus and tokenizer, the model (from a checkpoint, or from scratch through the one model
builder), and one-line errors for what a user can get wrong."""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
from pathlib import Path

import datasets
import huggingface_hub
import torch
import transformers
from transformers import AutoConfig, PreTrainedModel, TrainingArguments

from ..data import BBC_NEWS, load_corpus
from ..data.corpora import check_data_file
from ..families import (
    TASKS,
    build_model,
    check_family,
    label_fields,
    matched_config,
    prepare_model,
)
from ..runs import USER_ERRORS, RunFolder, one_line, open_run_folder, shared_tokenizer
from .arguments import parse_config_overrides
from .trainer import SAVED_MODEL_FILES, is_complete_checkpoint, last_complete_checkpoint

logger = logging.getLogger(__name__)
# What the scripts and Trainer write at the top of the output folder besides the saved model, claimed before they
# are written; `runs` is TensorBoard's log folder, whose names it chooses.
SCRIPT_OUTPUTS = (
    "trainer_state.json",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "confusion_matrix.png",
)


def check_arguments(model_args, data_args, task: str) -> None:
    """What can be checked from the arguments alone, before the output folder is touched: the family, the size and
    the config overrides (keys the family's config has, built once on the meta device), and that the data files
    exist and can be read (`check_data_file`)."""
    if model_args.model_name_or_path is not None:
        if model_args.config_overrides:
            raise ValueError("--config_overrides applies to models trained from scratch, not to --model_name_or_path.")
    elif model_args.model_type is not None:
        check_family(model_args.model_type, task)
        overrides = parse_config_overrides(model_args.config_overrides)
        check_config_keys(model_args.model_type, overrides)
        overrides.pop("num_labels", None)  # checked against the data's labels once they are known
        matched_config(
            model_args.model_type, model_args.size, data_args.tokenizer_vocab_size or 8192, task, **overrides
        )
    else:
        raise ValueError("Give --model_name_or_path (a checkpoint) or --model_type (to train from scratch).")
    for name in ("train_file", "validation_file", "test_file"):
        path = getattr(data_args, name)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"--{name} {path} does not exist; check the path.")
        if path is not None:
            check_data_file(path)  # empty, not UTF-8, a malformed CSV: refused before the output folder too


def check_config_keys(model_type: str, overrides: dict) -> None:
    """A `--config_overrides` key the family's config does not have would become a silent extra attribute (a typo
    such as `hiden_size`): refuse it, as `PretrainedConfig.update_from_string` does, naming the closest valid key."""
    config = AutoConfig.for_model(model_type)
    for key in overrides:
        if not hasattr(config, key):
            known = [*config.to_dict(), *getattr(config, "attribute_map", {}), "num_labels"]
            known = sorted({name for name in known if not name.startswith("_") and name != "transformers_version"})
            close = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {close[0]}?" if close else f"; its fields are {', '.join(known)}."
            raise ValueError(f"--config_overrides {key}: {model_type}'s config has no field {key!r}{suggestion}")


def open_output_dir(args: TrainingArguments, model_args, data_args) -> tuple[RunFolder | None, str | None]:
    """The output folder under the policy every command shares (see `runs.open_run_folder`), and the checkpoint to
    resume from. `--resume_from_checkpoint last` takes the newest checkpoint that was written to the end. Only the
    main process opens the folder, before any process writes there."""
    output_dir = Path(args.output_dir)
    resume = args.resume_from_checkpoint
    checkpoint = None
    if resume:
        if resume.lower() in ("true", "last"):
            checkpoint = last_complete_checkpoint(output_dir)
            if checkpoint is None:
                raise FileNotFoundError(
                    f"--resume_from_checkpoint {resume}: {output_dir} holds no complete checkpoint-* folder to "
                    "resume from."
                )
        elif not is_complete_checkpoint(Path(resume)):
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume} is not a complete checkpoint folder (its trainer_state.json is "
                "missing or cut short: the run was killed while saving it). Pass an earlier checkpoint, or `last`."
            )
        else:
            checkpoint = resume
    if args.process_index != 0:
        return None, checkpoint
    inputs = [
        data_args.train_file,
        data_args.validation_file,
        data_args.test_file,
        model_args.tokenizer_name,
        model_args.model_name_or_path,
        data_args.dataset_name if data_args.dataset_name != BBC_NEWS else None,
    ]
    folder = open_run_folder(
        output_dir,
        overwrite=args.overwrite,
        resume=checkpoint is not None and Path(checkpoint).resolve().parent == output_dir.resolve(),
        protected=inputs,
        resume_flag="--resume_from_checkpoint last",
    )
    folder.claim(*SAVED_MODEL_FILES, *SCRIPT_OUTPUTS)
    folder.claim("runs", whole=True)
    return folder, checkpoint


def discarded_on_failure(folder: RunFolder | None):
    """`folder.discarded_on_failure()`, or nothing on the processes that do not own the folder."""
    return folder.discarded_on_failure() if folder is not None else contextlib.nullcontext()


def check_hub_access(args: TrainingArguments) -> None:
    """Fail before any training when `--push_to_hub` could not push at the end."""
    if not args.push_to_hub:
        return
    if args.hub_token is None and huggingface_hub.get_token() is None:
        raise ValueError(
            "--push_to_hub needs a Hugging Face token with write access: run `hf auth login`, set HF_TOKEN, "
            "or pass --hub_token."
        )


def load_script_data(model_args, data_args, training_args, label_column: str | None = None):
    """The corpus and the tokenizer: the one named, the checkpoint's, or one trained on the training split (by the
    main process, saved in the output folder, and loaded from there by the others and by a resumed run)."""
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
            flag_separator="_",
        )
    tokenizer_name = model_args.tokenizer_name or model_args.model_name_or_path
    tokenizer = shared_tokenizer(
        tokenizer_name or data_args.tokenizer_kind,
        corpus["train"],
        vocab_size=data_args.tokenizer_vocab_size,
        folder=training_args.output_dir,
        main_process_first=lambda: training_args.main_process_first(local=False, desc="training the tokenizer"),
        should_save=training_args.should_save,
    )
    origin = f"`{tokenizer_name}`" if tokenizer_name else f"{data_args.tokenizer_kind} trained on the training split"
    return corpus, tokenizer, f"{origin}, {len(tokenizer):,} tokens"


def script_model(
    model_args, tokenizer, task: str, *, seed: int, label_names: list[str] | None = None
) -> PreTrainedModel:
    """The model of `--model_name_or_path`, or a fresh one of `--model_type` at `--size` with `--config_overrides`
    (which win over the matched size); either way sized to the tokenizer's vocabulary."""
    if model_args.model_name_or_path is not None:
        kwargs = {"trust_remote_code": model_args.trust_remote_code}
        if task == "lm":
            kwargs["dtype"] = model_args.dtype
        else:
            check_checkpoint_labels(model_args, len(label_names))
            kwargs.update(ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **label_fields(label_names))
        model = TASKS[task].from_pretrained(model_args.model_name_or_path, **kwargs)
    else:
        overrides = parse_config_overrides(model_args.config_overrides)
        if label_names is not None and overrides.get("num_labels", len(label_names)) != len(label_names):
            raise ValueError(
                f"num_labels={overrides['num_labels']} in --config_overrides, but the data has {len(label_names)} "
                f"labels ({', '.join(label_names)}); leave num_labels out, it comes from the data."
            )
        model = build_model(
            model_args.model_type, task, model_args.size, tokenizer, seed=seed, labels=label_names, **overrides
        )
    if task != "lm" and model.config.pad_token_id is None:  # GPT-2 finds each row's last token through the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:  # as transformers' run_clm: a tokenizer with added tokens resizes the embeddings
        logger.warning(f"The tokenizer has {len(tokenizer)} tokens, the model {vocab}: resizing the embeddings.")
        model.resize_token_embeddings(len(tokenizer))
    return prepare_model(model)


def check_checkpoint_labels(model_args, num_labels: int) -> None:
    """A classifier checkpoint trained on other labels would silently keep a wrong head: refuse it unless told."""
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
    is_classifier = any(name.endswith("ForSequenceClassification") for name in config.architectures or [])
    if is_classifier and config.num_labels != num_labels and not model_args.ignore_mismatched_sizes:
        raise ValueError(
            f"{model_args.model_name_or_path} is a classifier for {config.num_labels} labels but the data has "
            f"{num_labels}. Pass --ignore_mismatched_sizes to replace its head, or use data with its labels."
        )


def take_first(dataset, count: int | None):
    """The first `count` rows (`--max_train_samples`, `--max_eval_samples`), or all."""
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


def command_line() -> str:
    return " ".join(["python", *sys.argv]) if sys.argv and sys.argv[0] else ""


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


def in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def run_script(main, name: str) -> int:
    """Run a script's `main()`: what a user got wrong is one line and exit code 2, Ctrl-C one line and exit code 130
    (the shell's 128 + SIGINT), a bug keeps its traceback. The process group is left at the end, once every process
    got there: gloo worker threads alive at exit, or a process leaving while another still works, can abort a good
    distributed run."""
    try:
        main()
        if in_process_group():
            torch.distributed.barrier()
    except USER_ERRORS as error:
        print(f"{name}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was saved stays (see RunFolder.discarded_on_failure)
        print(
            f"{name}: interrupted. Run the same command with `--resume_from_checkpoint last` to continue from the "
            "last complete checkpoint, if one was saved.",
            file=sys.stderr,
        )
        return 130
    finally:
        if in_process_group():
            torch.distributed.destroy_process_group()
    return 0
