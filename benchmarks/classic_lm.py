"""Our stateful LSTM language model (examples/run_clm.py --stateful) against the classic recipe it claims to match:
a faithful re-implementation of PyTorch's word_language_model example (pytorch/examples, word_language_model/
main.py with model.py's RNNModel and the batchify / get_batch / repackage_hidden logic), on identical data, word
tokenizer, model and optimisation. Targets: test perplexity ours / classic <= 1.01, training tokens/s >= 0.9x, our
carried-state perplexity below our block one, plain SGD (the --stateful default) no worse than AdamW, and, at a
budget where regularisation matters (few articles, many epochs), the AWD options <= 0.85x the classic perplexity.

The classic side keeps main.py's defaults: emsize = nhid = 200, 2 LSTM layers, dropout 0.2, tied weights, plain
SGD at lr 20 (divided by 4 after an epoch that does not improve the validation loss), gradients clipped to 0.25,
batch 20, bptt 35, eval batch 10, the state carried across batches and detached, and the test perplexity of the
best model over the whole test split as one stream. Deliberate differences: BBC News through our word tokenizer
(EOS after each article) instead of WikiText-2 through data.Corpus; a slice of the corpus and a few epochs instead
of 40, so that a run takes about 30 minutes on 2 CPU cores; LSTM only; nn.NLLLoss on model.py's log-softmax (as
main.py does today); the best model kept in memory instead of in model.pt; no per-batch log lines.

Our side starts from torch's own initialisation (`recurrent_initialization=torch`) and the classic encoder's uniform
+-0.1 (`initializer_range=0.1`, our default is 0.3), as the classic model does: with
our orthogonal default and forget-gate bias 1 it learned slower (test ppl 348 against 302 after one epoch on 300
articles, in the classic loop). Its dropout stays locked (one mask per sequence) where the classic one is fresh at
every step; swapping it in changed that figure by 1% (302 to 304), within the seed noise (334, 331 and 340 for seeds
1 to 3 of run_clm.py).

    python benchmarks/classic_lm.py [--smoke]
"""

import copy
import importlib.util
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import check, print_checks, run_from_command_line, write_results
from torch import nn

from hf_evolution.data import SPLITS, load_corpus
from hf_evolution.tokenization import train_tokenizer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEED = 1111  # main.py's default
MAX_DOCUMENTS = 600  # per split: 600 of the 1,701 train articles, all 213 validation and 213 test ones
EPOCHS = 4  # about 45 s of classic training each, on 2 CPU cores
# Where regularisation matters: a wider model on few articles read many times, where the classic dropout 0.2 lets it
# overfit (2 x 400 on 100 articles: its validation perplexity stops improving after about 14 epochs).
AWD_DOCUMENTS = 100
AWD_EPOCHS = 30
AWD_EMSIZE = 400
NLAYERS = 2
DROPOUT = 0.2
LR = 20.0
CLIP = 0.25
BATCH_SIZE = 20
EVAL_BATCH_SIZE = 10
BPTT = 35
# main.py's rule, lr / 4 after an epoch that does not improve the validation loss, as transformers' scheduler.
CLASSIC_SCHEDULE = [
    "--lr_scheduler_type",
    "reduce_lr_on_plateau",
    "--lr_scheduler_kwargs",
    '{"factor": 0.25, "patience": 0}',
]
# AWD-LSTM (Merity et al. 2018, its PTB settings: dropoute 0.1, dropouti 0.4, dropouth 0.25 and dropout 0.4, which our
# hidden_dropout shares as 0.3, wdrop 0.5, alpha 2, beta 1), variable BPTT and NT-ASGD, at the classic loop's size.
AWD_REGULARISATION = (
    "embedding_dropout=0.1,input_dropout=0.4,hidden_dropout=0.3,weight_dropout=0.5,"
    "activation_regularization=2,temporal_activation_regularization=1"
)
ADAMW_LR = 1e-2  # the better of the two AdamW rates issue 12 tried here (3e-3: test ppl 540, 1e-2: 457)
AWD_SCHEDULE = ["--lr_scheduler_type", "constant", "--variable_bptt", "--average_when_stalled", "3"]


class RNNModel(nn.Module):
    """model.py's RNNModel with its LSTM: encoder, dropout, LSTM stack, dropout, decoder, optionally tied."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid)


def token_stream(documents, tokenizer) -> torch.Tensor:
    """A split as one stream: each document's ids then EOS, in document order, as tokenize_documents makes it."""
    ids = tokenizer(list(documents["text"]), add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor([token for document in ids for token in [*document, tokenizer.eos_token_id]])


def batchify(data, bsz):
    """main.py's batchify: the stream cut into bsz contiguous columns, the remainder dropped."""
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()


def repackage_hidden(h):
    """Detach the state from its history, so that backpropagation stops at the start of the batch."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def get_batch(source, i):
    seq_len = min(BPTT, len(source) - 1 - i)
    data = source[i : i + seq_len]
    target = source[i + 1 : i + 1 + seq_len].view(-1)
    return data, target


def evaluate(model, criterion, data_source) -> float:
    """main.py's evaluate(): the mean loss per token over the whole split, the state carried from batch to batch."""
    model.eval()
    total_loss = 0.0
    hidden = model.init_hidden(EVAL_BATCH_SIZE)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, BPTT):
            data, targets = get_batch(data_source, i)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1)


def train(model, criterion, train_data, lr) -> int:
    """main.py's train(): one epoch of truncated BPTT and plain SGD; returns the number of tokens trained on."""
    model.train()
    tokens = 0
    hidden = model.init_hidden(BATCH_SIZE)
    for i in range(0, train_data.size(0) - 1, BPTT):
        data, targets = get_batch(train_data, i)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        tokens += data.numel()
    return tokens


def run_classic(corpus, tokenizer, epochs: int, emsize: int) -> dict:
    """main.py's epoch loop: train, validate, keep the best model or divide lr by 4, then test the best model."""
    torch.manual_seed(SEED)
    train_data = batchify(token_stream(corpus["train"], tokenizer), BATCH_SIZE)
    val_data = batchify(token_stream(corpus["validation"], tokenizer), EVAL_BATCH_SIZE)
    test_data = batchify(token_stream(corpus["test"], tokenizer), EVAL_BATCH_SIZE)
    model = RNNModel(len(tokenizer), emsize, emsize, NLAYERS, DROPOUT, tie_weights=True)
    criterion = nn.NLLLoss()

    lr = LR
    best_val_loss, best_state = None, None
    tokens, train_seconds, valid_perplexities = 0, 0.0, []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        tokens += train(model, criterion, train_data, lr)
        train_seconds += time.perf_counter() - start
        val_loss = evaluate(model, criterion, val_data)
        valid_perplexities.append(math.exp(val_loss))
        print(
            f"| end of epoch {epoch:3d} | time: {time.perf_counter() - start:5.2f}s | lr {lr:g} | "
            f"valid loss {val_loss:5.2f} | valid ppl {math.exp(val_loss):8.2f}"
        )
        if best_val_loss is None or val_loss < best_val_loss:
            best_state = copy.deepcopy(model.state_dict())
            best_val_loss = val_loss
        else:
            lr /= 4.0
    model.load_state_dict(best_state)
    test_loss = evaluate(model, criterion, test_data)
    print(f"| End of training | test loss {test_loss:5.2f} | test ppl {math.exp(test_loss):8.2f}")
    return {
        "test_perplexity": math.exp(test_loss),
        "train_tokens_per_second": tokens / train_seconds,
        "valid_perplexities": [round(value, 2) for value in valid_perplexities],
    }


def load_run_clm():
    spec = importlib.util.spec_from_file_location("run_clm", EXAMPLES / "run_clm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ours(
    files: dict, tokenizer_folder: Path, output_dir: Path, epochs: int, emsize: int, awd: bool = False, adamw=False
):
    """run_clm.py --stateful on the same files, tokenizer, model and optimisation as the classic loop: torch's own
    initialisation and the classic dropouts. With `awd`, the AWD-LSTM options instead (same size, data, budget); with
    `adamw`, AdamW and its linear decay instead of SGD."""
    regularisation = AWD_REGULARISATION if awd else f"input_dropout={DROPOUT},hidden_dropout={DROPOUT}"
    overrides = (
        f"hidden_size={emsize},embedding_size={emsize},num_hidden_layers={NLAYERS},tie_word_embeddings=true,"
        f"recurrent_initialization=torch,initializer_range=0.1,{regularisation}"
    )
    schedule = AWD_SCHEDULE if awd else CLASSIC_SCHEDULE
    optimizer = ["--optim", "sgd", "--learning_rate", str(LR), "--weight_decay", "0", *schedule]
    if adamw:
        optimizer = ["--optim", "adamw_torch", "--learning_rate", str(ADAMW_LR), "--lr_scheduler_type", "linear"]
    arguments = [
        "--model_type",
        "lstm",
        "--config_overrides",
        overrides,
        "--tokenizer_name",
        str(tokenizer_folder),
        "--train_file",
        str(files["train"]),
        "--validation_file",
        str(files["validation"]),
        "--test_file",
        str(files["test"]),
        "--output_dir",
        str(output_dir),
        "--stateful",
        "--block_size",
        str(BPTT),
        "--per_device_train_batch_size",
        str(BATCH_SIZE),
        "--per_device_eval_batch_size",
        str(EVAL_BATCH_SIZE),
        "--num_train_epochs",
        str(epochs),
        *optimizer,
        "--max_grad_norm",
        str(CLIP),
        "--eval_strategy",
        "epoch",
        "--save_strategy",
        "no",
        "--do_train",
        "--do_eval",
        "--report_to",
        "none",
        "--seed",
        str(SEED),
        "--sample_tokens",
        "0",
        "--logging_steps",
        "50",
        "--disable_tqdm",
        "true",
    ]
    results = load_run_clm().main(arguments)
    # Trainer's train_runtime includes the evaluations at the end of each epoch; the classic figure does not.
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    during = history[: next(index for index, entry in enumerate(history) if "train_runtime" in entry)]
    eval_seconds = sum(entry["eval_runtime"] for entry in during if "eval_runtime" in entry)
    train_seconds = results["train_runtime"] - eval_seconds
    return {
        "test_perplexity": results["test_stateful_perplexity"],
        "test_block_perplexity": results["test_perplexity"],
        "train_tokens_per_second": results["train_tokens_per_second"] * results["train_runtime"] / train_seconds,
        "train_seconds": round(train_seconds, 2),
    }


def write_corpus_slice(folder: Path, max_documents: int) -> dict[str, Path]:
    """The first articles of each split as .txt files, one per line, for both sides to read the same documents.

    An article's line breaks become single spaces: the word tokenizer splits on whitespace of any kind, so the
    token ids are those of the original article.
    """
    corpus = load_corpus("bbc-news", max_documents=max_documents)
    files = {split: folder / f"{split}.txt" for split in SPLITS}
    for split, path in files.items():
        path.write_text("".join(" ".join(text.split()) + "\n" for text in corpus[split]["text"]), encoding="utf-8")
    return files


def run_pair(max_documents: int, epochs: int, emsize: int, variants: dict[str, dict]) -> dict:
    """The classic loop and run_clm.py --stateful (each variant of run_ours's options) on the same slice of the
    corpus, word tokenizer and budget."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = write_corpus_slice(folder, max_documents)
        corpus = load_corpus(train_file=files["train"], validation_file=files["validation"], test_file=files["test"])
        tokenizer = train_tokenizer(corpus["train"], "word")
        tokenizer.save_pretrained(folder / "tokenizer")
        print(
            f"\nClassic word LM (pytorch/examples word_language_model) against run_clm.py --stateful "
            f"({', '.join(variants)}): {max_documents} BBC News articles per split, vocabulary {len(tokenizer):,}, "
            f"LSTM {NLAYERS} x {emsize}, {epochs} epoch(s)"
        )
        results = {"classic": run_classic(corpus, tokenizer, epochs, emsize)}
        for name, options in variants.items():
            results[name] = run_ours(files, folder / "tokenizer", folder / name, epochs, emsize, **options)
    for name, result in results.items():
        print(
            f"  {name}: test ppl {result['test_perplexity']:.2f}, {result['train_tokens_per_second']:.1f} training tok/s"
        )
    return {
        "max_documents_per_split": max_documents,
        "epochs": epochs,
        "emsize": emsize,
        "vocab_size": len(tokenizer),
        **results,
    }


def main(smoke: bool = False) -> dict:
    same_recipe = (20, 1, 32) if smoke else (MAX_DOCUMENTS, EPOCHS, 200)
    same = run_pair(*same_recipe, {"ours": {}, "ours_adamw": {"adamw": True}})
    regularised_budget = (20, 2, 32) if smoke else (AWD_DOCUMENTS, AWD_EPOCHS, AWD_EMSIZE)
    regularised = run_pair(*regularised_budget, {"ours": {"awd": True}})
    checks = [
        check(
            "test perplexity, ours / classic (same recipe)",
            same["ours"]["test_perplexity"] / same["classic"]["test_perplexity"],
            1.01,
            False,
        ),
        check(
            "training tokens per second, ours / classic",
            same["ours"]["train_tokens_per_second"] / same["classic"]["train_tokens_per_second"],
            0.9,
            True,
        ),
        check(
            "test perplexity, state carried / blocks from nothing (ours, stateful-trained)",
            same["ours"]["test_perplexity"] / same["ours"]["test_block_perplexity"],
            1.0,
            False,
        ),
        check(
            "test perplexity, ours with plain SGD (the --stateful default) / ours with AdamW",
            same["ours"]["test_perplexity"] / same["ours_adamw"]["test_perplexity"],
            1.0,
            False,
        ),
        check(
            f"test perplexity, ours with the AWD options / classic ({regularised['max_documents_per_split']} articles, "
            f"{regularised['epochs']} epochs, {NLAYERS} x {regularised['emsize']})",
            regularised["ours"]["test_perplexity"] / regularised["classic"]["test_perplexity"],
            0.85,
            False,
        ),
    ]
    print_checks("Classic word LM", checks)
    payload = {"same_recipe": same, "awd_regularisation": regularised, "checks": checks}
    write_results("classic_lm", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "20 articles per split, 1 epoch, a 2 x 32 LSTM: well under a minute")
