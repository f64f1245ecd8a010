"""Dynamic int8 quantization (hf_evolution.deploy.quantization) of a trained LSTM language model at the `small` size:
the saved weights' size, the per-token greedy decoding time at batch 1 and the validation perplexity, float against
int8 (every LSTM and Linear layer and the embedding, which is made from the int8 head's rows and stored once: the
default) and int8 with the head and the tied embedding kept float (`--keep-float-head`); then a sweep of untrained
sizes up to the model of PyTorch's tutorial "Dynamic Quantization on an LSTM Word Language Model", to find where int8
decoding pays.

The LSTM (2 x 157, embeddings 128, tied, 1.43M parameters of which 1.05M are the embedding) trains from scratch for a
fixed number of steps of a plain loop (AdamW, truncated BPTT with the state carried between batches, 16 rows x 64
tokens) on BBC News through the byte-level BPE tokenizer (8,192 tokens) trained on the train split. Perplexity is over
the first 50,000 tokens of the validation split (of 110,538: the whole split took two minutes for the three models on
a busy machine) read as one stream with the state carried (hf_evolution.evaluation.stateful_loss).

Timing: greedy decoding at batch 1 from a 16-token prompt, per new token: (time for N tokens - time for 1) / (N - 1),
so the prompt's read cancels out. The models take turns call by call and each keeps its fastest call (on a shared
machine noise only adds time), at 1 thread and at 2 (`torch.set_num_threads`). The sweep also times what the tutorial
times, a forward over 25 tokens at batch 1 with every position's logits, for comparison (not a target).

Sweep (random weights: speed does not depend on them): the `small` shape; 2 x 256; `medium` (2 x 462, embeddings
256); `small` at the tutorial's vocabulary (33,278); the tutorial's LSTMModel (5 x 256, embeddings 512, untied head,
vocabulary 33,278 of WikiText-2; the tutorial reports 1.79x on one thread for its forward).

Targets (issue 26):
- the saved weights file, int8 / float: <= 0.35;
- validation perplexity, int8 / float: <= 1.01;
- decoding speed-up, float / int8 time per token: >= 1.5, at 1 and 2 threads, for the trained `small` model and each
  size of the sweep (where it fails, the sweep shows the size from which it passes).

    python benchmarks/quantization.py [--smoke]
"""

import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import check, interleaved_times, print_checks, run_from_command_line, torch_threads, write_results
from generation import greedy

from hf_evolution.data import load_corpus, stream_rows, token_stream
from hf_evolution.deploy.quantization import (
    WEIGHTS_NAME,
    load_quantized,
    quantization_summary,
    quantize_dynamic_int8,
    save_quantized,
)
from hf_evolution.evaluation import stateful_loss
from hf_evolution.families import build_model, parameter_counts, shape
from hf_evolution.runs import seed_everything
from hf_evolution.tokenization import train_tokenizer

FULL = {
    "size": "small",
    "documents": None,
    "vocab": None,
    "steps": 450,
    "rows": 16,
    "block": 64,
    "validation_tokens": 50_000,
    "new_tokens": 64,
    "rounds": 7,
}
SMOKE = {
    "size": "tiny",
    "documents": 40,
    "vocab": 1024,
    "steps": 20,
    "rows": 8,
    "block": 32,
    "validation_tokens": 5000,
    "new_tokens": 8,
    "rounds": 2,
}
TUTORIAL = {"num_hidden_layers": 5, "hidden_size": 256, "embedding_size": 512, "tie_word_embeddings": False}
# (label, size, vocabulary, config fields): untrained LSTMs, from the trained model's shape to the tutorial's model.
SWEEP = {
    "full": [
        ("small", "small", 8192, {}),
        ("between small and medium", "small", 8192, {"hidden_size": 256, "embedding_size": 256}),
        ("medium", "medium", 8192, {}),
        ("small at the tutorial's vocabulary", "small", 33278, {}),
        ("the tutorial's model", "small", 33278, TUTORIAL),
    ],
    "smoke": [("tiny", "tiny", 1024, {})],
}
THREADS = (1, 2)
LEARNING_RATE = 3e-3
CLIP = 1.0
PROMPT_TOKENS = 16
TUTORIAL_TOKENS = 25  # the tutorial's bptt: it times forwards over 25 tokens at batch 1
SPEED_TARGET = 1.5


def train(model, stream, steps: int, rows: int, block: int) -> dict:
    """A plain loop: the train stream as `rows` contiguous rows read in blocks, the state carried and detached."""
    batch = torch.tensor(stream_rows(stream, rows), dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    model.train()
    cache, start, losses = None, time.perf_counter(), []
    blocks = (batch.shape[1] - 1) // block
    for step in range(steps):
        begin = (step % blocks) * block
        if begin == 0:
            cache = None  # a new epoch starts from nothing
        inputs, targets = batch[:, begin : begin + block], batch[:, begin + 1 : begin + block + 1]
        output = model(input_ids=inputs, cache=cache, use_cache=True)
        loss = F.cross_entropy(output.logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        cache = output.cache
        cache.detach_()
        losses.append(loss.item())
    model.eval()
    return {
        "steps": steps,
        "tokens": steps * rows * block,
        "seconds": round(time.perf_counter() - start, 1),
        "last_loss": round(sum(losses[-20:]) / len(losses[-20:]), 3),
    }


def validation_perplexity(model, stream, block: int) -> float:
    total, count = stateful_loss(model, stream, block_size=block)
    return math.exp(total / count)


def saved_and_scored(model, weights: Path, validation, block: int) -> dict:
    start = time.perf_counter()
    perplexity = validation_perplexity(model, validation, block)
    return {
        "weights_file": weights.name,
        "weights_bytes": weights.stat().st_size,
        "validation_perplexity": round(perplexity, 3),
        "validation_seconds": round(time.perf_counter() - start, 2),
    }


def decoding_times(models: dict, prompt, new_tokens: int, rounds: int, count: int) -> dict[str, float]:
    """Seconds per decoded token of each model at `count` threads: (time for `new_tokens` - time for 1) /
    (`new_tokens` - 1), greedy at batch 1, so the prompt's read cancels out. Each time is the fastest of `rounds` calls
    taken in turn: noise only adds time, and a neighbour's burst moves a median more."""
    with torch_threads(count), torch.no_grad():
        fns = {
            (name, tokens): (lambda model=model, tokens=tokens: greedy(model, prompt, tokens))
            for name, model in models.items()
            for tokens in (new_tokens, 1)
        }
        best = interleaved_times(fns, rounds, summary=min)
    return {name: (best[name, new_tokens] - best[name, 1]) / (new_tokens - 1) for name in models}


def forward_times(models: dict, tokens, rounds: int, count: int) -> dict[str, float]:
    """Seconds of one forward over `tokens` (batch 1, every position's logits): what the tutorial times."""
    with torch_threads(count), torch.no_grad():
        fns = {name: (lambda model=model: model(tokens, use_cache=False)) for name, model in models.items()}
        return interleaved_times(fns, rounds, summary=min)


def plural(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


def sweep(sizes: list, settings: dict) -> list[dict]:
    """Decoding and tutorial-forward times, float and int8, of untrained LSTMs of each size in `sizes`."""
    rows = []
    for label, size, vocab_size, fields in sizes:
        torch.manual_seed(0)
        model = build_model("lstm", "lm", size, vocab_size, **fields).eval()
        models = {"float": model, "int8": quantize_dynamic_int8(model)}
        prompt = torch.randint(0, vocab_size, (1, PROMPT_TOKENS))
        tokens = torch.randint(0, vocab_size, (1, TUTORIAL_TOKENS))
        row = {
            "label": label,
            "shape": shape(model.config),
            "embedding_size": model.config.embedding_size,
            "vocab_size": vocab_size,
            "tied": model.config.tie_word_embeddings,
            "parameters": parameter_counts(model)["total"],
        }
        for threads in THREADS:
            decode = decoding_times(models, prompt, settings["new_tokens"], settings["rounds"], threads)
            forward = forward_times(models, tokens, settings["rounds"], threads)
            row[f"{threads}_threads"] = {
                "decode_ms_per_token": {name: round(value * 1000, 4) for name, value in decode.items()},
                "decode_speedup": round(decode["float"] / decode["int8"], 3),
                "forward_ms": {name: round(value * 1000, 3) for name, value in forward.items()},
                "forward_speedup": round(forward["float"] / forward["int8"], 3),
            }
        rows.append(row)
        del models, model
    return rows


def main(smoke: bool = False) -> dict:
    start_time = time.perf_counter()
    settings = SMOKE if smoke else FULL
    seed_everything(0)
    corpus = load_corpus("bbc-news", max_documents=settings["documents"])
    tokenizer = train_tokenizer(corpus["train"], "bpe", vocab_size=settings["vocab"])
    train_stream = token_stream(corpus["train"], tokenizer)
    validation = token_stream(corpus["validation"], tokenizer)[: settings["validation_tokens"]]
    model = build_model("lstm", "lm", settings["size"], tokenizer)
    training = train(model, train_stream, settings["steps"], settings["rows"], settings["block"])
    prompt = torch.tensor(validation[:PROMPT_TOKENS], dtype=torch.long)[None]

    variants, models = {}, {"float": model}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model.save_pretrained(folder / "float")
        variants["float"] = saved_and_scored(
            model, folder / "float" / "model.safetensors", validation, settings["block"]
        )
        for name, include_head in (("int8", True), ("int8_float_head", False)):
            quantized = quantize_dynamic_int8(model, include_head=include_head)
            save_quantized(quantized, tokenizer, folder / name)
            models[name] = load_quantized(folder / name)  # what is measured is the saved folder
            with torch.no_grad():  # the same logits as the model quantized in memory, bit for bit
                block = prompt.repeat(2, 4)
                assert torch.equal(models[name](block).logits, quantized(block).logits)
            variants[name] = saved_and_scored(
                models[name], folder / name / WEIGHTS_NAME, validation, settings["block"]
            )
            variants[name]["int8_modules"] = quantization_summary(quantized)["int8"]
    for threads in THREADS:
        times = decoding_times(models, prompt, settings["new_tokens"], settings["rounds"], threads)
        for name, seconds in times.items():
            variants[name][f"per_token_ms_{threads}_threads"] = round(seconds * 1000, 4)
    del models
    swept = sweep(SWEEP["smoke" if smoke else "full"], settings)

    counts = parameter_counts(model)
    embedding = model.model.embeddings.weight
    float_row, int8_row = variants["float"], variants["int8"]
    embedding_share = 4 * embedding.numel() / float_row["weights_bytes"]
    checks = [
        check(
            f"saved weights, int8 / float (the float32 embedding is {embedding_share:.2f} of the float file)",
            int8_row["weights_bytes"] / float_row["weights_bytes"],
            0.35,
            False,
        ),
        check(
            "validation perplexity, int8 / float",
            int8_row["validation_perplexity"] / float_row["validation_perplexity"],
            1.01,
            False,
        ),
        *(
            check(
                f"decoding speed-up at batch 1, float / int8 time per token, trained {settings['size']} LSTM, "
                f"{plural(threads)}",
                float_row[f"per_token_ms_{threads}_threads"] / int8_row[f"per_token_ms_{threads}_threads"],
                SPEED_TARGET,
                True,
            )
            for threads in THREADS
        ),
        *(
            check(
                f"decoding speed-up at batch 1, float / int8 time per token, untrained LSTM {row['shape']}, vocabulary "
                f"{row['vocab_size']:,} ({row['label']}), {plural(threads)}",
                row[f"{threads}_threads"]["decode_speedup"],
                SPEED_TARGET,
                True,
            )
            for row in swept
            for threads in THREADS
        ),
    ]

    print(
        f"Dynamic int8 quantization, LSTM {shape(model.config)} (size {settings['size']}, embeddings "
        f"{model.config.embedding_size}, vocabulary {len(tokenizer):,}, {counts['total']:,} parameters of which "
        f"{embedding.numel():,} in the embedding), trained {training['steps']} steps of {settings['rows']} x "
        f"{settings['block']} tokens in {training['seconds']} s (last loss {training['last_loss']})"
    )
    print(
        f"  validation: {len(validation):,} tokens, state carried; decoding: greedy, batch 1, {PROMPT_TOKENS}-token "
        f"prompt, (time for {settings['new_tokens']} new tokens - time for 1) / {settings['new_tokens'] - 1}, each "
        f"the fastest of {settings['rounds']} calls taken in turn; torch {torch.__version__}, quantized engine "
        f"{torch.backends.quantized.engine}"
    )
    for name, row in variants.items():
        ratio = row["weights_bytes"] / float_row["weights_bytes"]
        times = ", ".join(
            f"{row[key]:.3f} ms/token at {plural(threads)} ({float_row[key] / row[key]:.2f}x)"
            for threads in THREADS
            for key in [f"per_token_ms_{threads}_threads"]
        )
        print(
            f"  {name:15s} {row['weights_bytes']:>11,} B ({ratio:.3f}x)  val ppl {row['validation_perplexity']:9.3f} "
            f"({row['validation_perplexity'] / float_row['validation_perplexity']:.4f}x)  {times}"
        )
    print(
        "\nSweep, untrained: decoding ms/token float -> int8 (speed-up), and the tutorial's measure, a forward over "
        f"{TUTORIAL_TOKENS} tokens at batch 1"
    )
    for row in swept:
        print(
            f"  {row['shape']:>8s}, embeddings {row['embedding_size']:>3}, vocabulary {row['vocab_size']:>6,}"
            f"{'' if row['tied'] else ' (untied)'}, {row['parameters'] / 1e6:5.2f}M parameters: {row['label']}"
        )
        for threads in THREADS:
            timing = row[f"{threads}_threads"]
            decode, forward = timing["decode_ms_per_token"], timing["forward_ms"]
            print(
                f"    {plural(threads):9s} decode {decode['float']:7.3f} -> {decode['int8']:7.3f} ms/token "
                f"({timing['decode_speedup']:.2f}x)   forward {forward['float']:7.2f} -> {forward['int8']:7.2f} ms "
                f"({timing['forward_speedup']:.2f}x)"
            )
    seconds = round(time.perf_counter() - start_time, 1)
    print(f"\n{seconds} s in all")
    print_checks("Dynamic int8 quantization", checks)
    payload = {
        "model": {
            "family": "lstm",
            "size": settings["size"],
            "shape": shape(model.config),
            "embedding_size": model.config.embedding_size,
            "vocab_size": len(tokenizer),
            "parameters": counts,
            "embedding_parameters": embedding.numel(),
        },
        "training": {**training, "learning_rate": LEARNING_RATE, "rows": settings["rows"], "block": settings["block"]},
        "validation_tokens": len(validation),
        "decoding": {
            "batch": 1,
            "prompt_tokens": PROMPT_TOKENS,
            "new_tokens": settings["new_tokens"],
            "rounds": settings["rounds"],
            "threads": list(THREADS),
        },
        "variants": variants,
        "sweep": swept,
        "seconds": seconds,
        "checks": checks,
    }
    write_results("quantization", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, 40 articles, 20 training steps, one tiny sweep size: seconds")
