"""Dynamic int8 quantization (hf_evolution.deploy.quantization) of a trained LSTM language model at the `small` size:
the saved weights' size, the per-token greedy decoding time at batch 1 and the validation perplexity, float against
int8 (every LSTM and Linear layer, the head included: the default) and int8 with the head kept float and tied
(`--keep-float-head`).

The LSTM (2 x 157, embeddings 128, tied, 1.43M parameters of which 1.05M are the embedding) trains from scratch for a
fixed number of steps of a plain loop (AdamW, truncated BPTT with the state carried between batches, 16 rows x 64
tokens) on BBC News through the byte-level BPE tokenizer (8,192 tokens) trained on the train split. Perplexity is over
the whole validation split read as one stream with the state carried (hf_evolution.evaluation.stateful_loss).

Targets:
- int8 / float bytes of the quantized layers (LSTM and Linear weights and biases): <= 0.26. int8 is a quarter of
  float32; the biases stay float.
- the saved weights file, int8 / float: at most what a float embedding allows. The embedding stays float32 by design
  and is 72% of the float file, so the issue's ~0.5x is out of reach: the bound is the embedding's bytes plus one byte
  per int8 weight and four per bias, over the float file, + 0.01 for the file's own records (computed from the
  parameter counts before anything is saved). The int8 head is a copy beside the float embedding, which is why the
  default file is barely smaller; the float-head variant is reported beside it.
- validation perplexity, int8 / float: <= 1.05.
- per-token decoding time, int8 / float: <= 1.0 (quantization must not make decoding slower), at torch's default
  threads (2 here) and at 1: a step this small gains nothing from a second thread, and on a shared machine that thread
  measures the neighbours as much as the model.

    python benchmarks/quantization.py [--smoke]
"""

import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import check, print_checks, run_from_command_line, write_results
from generation import greedy
from torch import nn

from hf_evolution.data import load_corpus, stream_rows, token_stream
from hf_evolution.deploy.quantization import (
    WEIGHTS_NAME,
    load_quantized,
    quantization_summary,
    quantize_dynamic_int8,
    quantized_state_dict,
    save_quantized,
)
from hf_evolution.evaluation import stateful_loss
from hf_evolution.families import build_model, parameter_counts, shape
from hf_evolution.runs import best_time, seed_everything
from hf_evolution.tokenization import train_tokenizer

FULL = {
    "size": "small",
    "documents": None,
    "vocab": None,
    "steps": 450,
    "rows": 16,
    "block": 64,
    "repeats": 5,
    "validation_tokens": None,
}
SMOKE = {
    "size": "tiny",
    "documents": 40,
    "vocab": 1024,
    "steps": 20,
    "rows": 8,
    "block": 32,
    "repeats": 2,
    "validation_tokens": 5000,
}
LEARNING_RATE = 3e-3
CLIP = 1.0
NEW_TOKENS = {"full": 64, "smoke": 16}
PROMPT_TOKENS = 16
ROUNDS = 3


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


def value_bytes(value) -> int:
    """Bytes of a state-dict value: a tensor (int8 ones count one byte an element), or a tuple of them."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(value_bytes(item) for item in value)
    return 0


def quantized_layer_bytes(float_model, quantized) -> tuple[int, int]:
    """Bytes of the layers that become int8 (LSTM and Linear weights and biases): float, then int8."""
    names = list(quantization_summary(quantized)["int8"])
    float_bytes = sum(
        param.numel() * param.element_size()
        for name in names
        for param in float_model.get_submodule(name).parameters()
    )
    state = quantized_state_dict(quantized)
    int8_bytes = sum(value_bytes(value) for key, value in state.items() if any(key.startswith(f"{n}.") for n in names))
    return float_bytes, int8_bytes


def size_bound(float_model, include_head: bool) -> float:
    """The smallest int8 / float ratio a float embedding allows, from parameter counts: every weight of an LSTM or
    Linear layer at one byte (a quantized tied head: its own int8 copy), the embedding and every bias at four, over
    the float model's four bytes a parameter (a tied weight once)."""
    layers = [
        module
        for name, module in float_model.named_modules()
        if isinstance(module, (nn.LSTM, nn.GRU, nn.Linear)) and (include_head or name != "lm_head")
    ]
    in_layers = {id(param) for module in layers for param in module.parameters(recurse=False)}
    int8_bytes = sum(
        param.numel() * (1 if key.startswith("weight") else 4)
        for module in layers
        for key, param in module.named_parameters(recurse=False)
    )
    embedding = float_model.get_input_embeddings().weight
    float_kept = sum(4 * p.numel() for p in float_model.parameters() if id(p) not in in_layers or p is embedding)
    return (int8_bytes + float_kept) / (4 * parameter_counts(float_model)["total"])


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


def per_token_times(models: dict, prompt, new_tokens: int, repeats: int, threads: int) -> dict[str, float]:
    """Per-token decoding seconds of each model: (time for `new_tokens` - time for 1) / (`new_tokens` - 1), each time
    the best of `ROUNDS` rounds taken in turn, every round the best of `repeats` calls, so that a busy spell of the
    shared machine hits every model alike. The prompt is 16 tokens, so the 1-token run's prefill is a small part of
    either time (generation.py times from a cache instead, for prompts of thousands of tokens)."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = {(name, count): math.inf for name in models for count in (new_tokens, 1)}
    try:
        with torch.no_grad():
            for _ in range(ROUNDS):
                for name, model in models.items():
                    for count in (new_tokens, 1):
                        seconds = best_time(lambda: greedy(model, prompt, count), repeats=repeats)
                        best[name, count] = min(best[name, count], seconds)
    finally:
        torch.set_num_threads(default_threads)
    return {name: (best[name, new_tokens] - best[name, 1]) / (new_tokens - 1) for name in models}


def main(smoke: bool = False) -> dict:
    settings = SMOKE if smoke else FULL
    seed_everything(0)
    corpus = load_corpus("bbc-news", max_documents=settings["documents"])
    tokenizer = train_tokenizer(corpus["train"], "bpe", vocab_size=settings["vocab"])
    train_stream = token_stream(corpus["train"], tokenizer)
    validation = token_stream(corpus["validation"], tokenizer)[: settings["validation_tokens"]]
    model = build_model("lstm", "lm", settings["size"], tokenizer)
    training = train(model, train_stream, settings["steps"], settings["rows"], settings["block"])
    new_tokens = NEW_TOKENS["smoke" if smoke else "full"]
    prompt = torch.tensor(validation[:PROMPT_TOKENS], dtype=torch.long)[None]

    variants, layer_bytes, bounds, models = {}, {}, {}, {"float": model}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model.save_pretrained(folder / "float")
        variants["float"] = saved_and_scored(
            model, folder / "float" / "model.safetensors", validation, settings["block"]
        )
        for name, include_head in (("int8", True), ("int8_float_head", False)):
            bounds[name] = size_bound(model, include_head)
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
            layer_bytes[name] = quantized_layer_bytes(model, quantized)
    # torch's default threads, as every benchmark, and one: a step this small gains nothing from a second thread, and
    # on a shared machine that thread measures the neighbours as much as the model.
    thread_counts = sorted({torch.get_num_threads(), 1}, reverse=True)
    for count in thread_counts:
        times = per_token_times(models, prompt, new_tokens, settings["repeats"], count)
        for name, seconds in times.items():
            variants[name][f"per_token_ms_{count}_threads"] = round(seconds * 1000, 4)
    counts = parameter_counts(model)
    embedding = model.model.embeddings.weight
    float_row, int8_row = variants["float"], variants["int8"]
    embedding_share = 4 * embedding.numel() / float_row["weights_bytes"]
    size_ratio = int8_row["weights_bytes"] / float_row["weights_bytes"]
    layer_ratio = layer_bytes["int8"][1] / layer_bytes["int8"][0]
    target = round(bounds["int8"] + 0.01, 3)
    checks = [
        check(
            "int8 / float bytes of the quantized layers (LSTM and Linear weights and biases)", layer_ratio, 0.26, False
        ),
        check(
            f"saved weights, int8 / float (the float32 embedding is {embedding_share:.2f} of the float file; bound "
            f"{bounds['int8']:.3f} + 0.01)",
            size_ratio,
            target,
            False,
        ),
        check(
            "validation perplexity, int8 / float",
            int8_row["validation_perplexity"] / float_row["validation_perplexity"],
            1.05,
            False,
        ),
        *(
            check(
                f"per-token decoding time at batch 1, int8 / float, {count} thread{'s' if count > 1 else ''}",
                int8_row[f"per_token_ms_{count}_threads"] / float_row[f"per_token_ms_{count}_threads"],
                1.0,
                False,
            )
            for count in thread_counts
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
        f"prompt, {new_tokens} new tokens, best of {ROUNDS} rounds in turn of best of {settings['repeats']}; torch "
        f"{torch.__version__}, quantized engine {torch.backends.quantized.engine}"
    )
    for name, row in variants.items():
        ratio = row["weights_bytes"] / float_row["weights_bytes"]
        times = ", ".join(
            f"{row[key]:.3f} ms/token at {count} thread{'s' if count > 1 else ''} ({row[key] / float_row[key]:.3f}x)"
            for count in thread_counts
            for key in [f"per_token_ms_{count}_threads"]
        )
        print(
            f"  {name:15s} {row['weights_bytes']:>11,} B ({ratio:.3f}x)  val ppl {row['validation_perplexity']:9.3f} "
            f"({row['validation_perplexity'] / float_row['validation_perplexity']:.4f}x)  {times}"
        )
    for name, (float_bytes, int8_bytes) in layer_bytes.items():
        print(
            f"  {name}: quantized layers {float_bytes:,} B float -> {int8_bytes:,} B int8 ({int8_bytes / float_bytes:.3f}x)"
        )
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
            "new_tokens": new_tokens,
            "rounds": ROUNDS,
            "repeats": settings["repeats"],
            "threads": thread_counts,
        },
        "variants": variants,
        "quantized_layer_bytes": {name: {"float": f, "int8": i} for name, (f, i) in layer_bytes.items()},
        "size_bounds": {name: round(value, 4) for name, value in bounds.items()},
        "checks": checks,
    }
    write_results("quantization", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, 40 articles, 20 training steps: a few seconds")
