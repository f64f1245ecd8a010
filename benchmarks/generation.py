"""Generation with the carried state.

- `generate()` against a hand-written cached greedy loop over the same weights (batch 1 and 8): at least 0.9x; and
  against the same loop on the kernel our one-token steps use (`torch.lstm_cell`), which leaves our overhead alone:
  at least 0.95x at batch 1.
- The bandwidth bound at batch 1: the time to read every weight a decoding step reads once (a sum over a buffer of
  as many bytes) against the time per step of `generate()`: at least 0.5.
- Per-token time with 2048 tokens of context against 64: at most 1.15x; GPT-2 at equal non-embedding parameters for
  contrast (its per-token time and KV-cache bytes grow with the context).
- Cached against uncached generation speed at 64 and 512 new tokens, and the state bytes of a 2-layer LSTM
  (hidden 650) at 1k and 8k tokens of context.

    python benchmarks/generation.py [--smoke]
"""

import copy
import itertools

import torch
from common import check, print_checks, run_from_command_line, write_results
from transformers import DynamicCache, GPT2LMHeadModel

from hf_evolution.families import build_model
from hf_evolution.runs import best_time, cache_bytes

VOCAB = 10_000


@torch.no_grad()
def hand_written_greedy(model, prompt, new_tokens: int, same_kernel: bool = False) -> torch.Tensor:
    """What one writes without transformers: run the prompt, then feed each argmax back with the carried (h, c).

    `same_kernel` runs its one-token steps through `torch.lstm_cell` on each layer's weights, the kernel our decoding
    steps call (instead of a plain `nn.LSTM` call, which takes oneDNN's kernel on CPU), so that the ratio measures our
    overhead alone."""
    layers = [layer.rnn for layer in model.model.layers]
    states = [None] * len(layers)  # (h, c) of each layer, (batch, hidden)

    def step(input_ids):
        hidden = model.model.embeddings(input_ids)
        for index, rnn in enumerate(layers):
            if same_kernel and input_ids.shape[1] == 1:
                weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
                states[index] = torch.lstm_cell(hidden[:, 0], states[index], *weights)
                hidden = states[index][0].unsqueeze(1)
            else:
                hx = None if states[index] is None else tuple(state.unsqueeze(0) for state in states[index])
                hidden, (h, c) = rnn(hidden, hx)
                states[index] = (h[0], c[0])
        if model.output_projection is not None:
            hidden = model.output_projection(hidden)
        return model.lm_head(hidden[:, -1])

    logits = step(prompt)
    tokens = [logits.argmax(-1)]
    for _ in range(new_tokens - 1):  # as generate(): the last token is never fed back
        logits = step(tokens[-1][:, None])
        tokens.append(logits.argmax(-1))
    return torch.cat([prompt, torch.stack(tokens, dim=1)], dim=1)


def bytes_read_per_step(model, batch: int) -> int:
    """The bytes of weights one decoding step must read: every parameter once (tied ones once), except the input
    embedding, of which only the batch's rows are read, unless it is the head's weight too."""
    head = model.get_output_embeddings().weight
    embedding = model.get_input_embeddings().weight
    unique = {parameter.data_ptr(): parameter for parameter in model.parameters()}
    total = sum(parameter.numel() * parameter.element_size() for parameter in unique.values())
    if embedding.data_ptr() != head.data_ptr():
        total -= (embedding.shape[0] - batch) * embedding.shape[1] * embedding.element_size()
    return total


def read_seconds(nbytes: int, repeats: int) -> float:
    """The time to read `nbytes` of float32 once: a sum over a buffer of that size, best of `repeats` (it stays in
    the cache between repeats as far as it fits, as the weights do between decoding steps)."""
    buffer = torch.randn(nbytes // 4)
    return best_time(buffer.sum, repeats=repeats * 4)


@torch.no_grad()
def forward_per_token(model, prompt, new_tokens) -> torch.Tensor:
    """Our forward with the cache, called once per token without generate(): separates the model's own overhead
    from generate()'s per-step work (logits processing, stopping criteria, input bookkeeping)."""
    output = model(prompt, use_cache=True, logits_to_keep=1)
    tokens = [output.logits[:, -1].argmax(-1)]
    for _ in range(new_tokens - 1):
        output = model(tokens[-1][:, None], cache=output.cache, use_cache=True, logits_to_keep=1)
        tokens.append(output.logits[:, -1].argmax(-1))
    return torch.cat([prompt, torch.stack(tokens, dim=1)], dim=1)


def greedy(model, prompt, new_tokens, **kwargs):
    return model.generate(
        prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, **kwargs
    )


def per_token_seconds(model, prompt, new_tokens, repeats) -> float:
    """Decoding time per token with the prompt as context: generate() continues from a cache that already holds all
    of the prompt but its last token, so only decoding steps are timed.

    (Timing N tokens and subtracting a 1-token run instead leaves the prefill's noise in the difference: at 2,048
    tokens of context it is most of the time measured, and made the ratio swing from 0.9 to 1.2 between runs.) Each
    repeat starts from a copy of the cache, which generate() makes itself for ours; GPT-2's copy of its KV cache is
    timed with it, about 1% of its decoding time at 2,048 tokens."""
    with torch.no_grad():
        cache = DynamicCache(config=model.config) if isinstance(model, GPT2LMHeadModel) else None
        cache = model(prompt[:, :-1], cache=cache, use_cache=True).cache
        seconds = best_time(lambda: greedy(model, prompt, new_tokens, cache=copy.deepcopy(cache)), repeats=repeats)
    return seconds / new_tokens


def read_rates(rows: int, columns: int, copies: int = 12) -> dict[str, float]:
    """GB/s at which a matrix-vector product reads a (rows, columns) float32 matrix that is not in the cache (each call
    takes the next of `copies`, whose total is larger than the cache): stored as `nn.Linear` stores its weight
    (`F.linear`), stored transposed (`x @ W`), and a plain sum over it for the memory's own rate."""
    matrices = [torch.randn(rows, columns) for _ in range(copies)]
    transposed = [matrix.t().contiguous() for matrix in matrices]
    vector = torch.randn(1, columns)
    linear, transposed, summed = itertools.cycle(matrices), itertools.cycle(transposed), itertools.cycle(matrices)
    calls = {
        "linear": lambda: torch.nn.functional.linear(vector, next(linear)),
        "transposed": lambda: vector @ next(transposed),
        "sum": lambda: next(summed).sum(),
    }
    rates = {}
    for name, call in calls.items():
        seconds = best_time(call, repeats=3 * copies)
        rates[name] = round(rows * columns * 4 / seconds / 1e9, 2)
    return rates


def main(smoke: bool = False) -> dict:
    torch.manual_seed(0)
    repeats = 2 if smoke else 5
    size = "tiny" if smoke else "medium"
    lstm = build_model("lstm", "lm", size, VOCAB, min_positions=4096).eval()
    gpt2 = build_model("gpt2", "lm", size, VOCAB, min_positions=4096).eval()
    new_tokens = 16 if smoke else 64
    checks, payload = [], {}

    # 1. generate() against the hand-written loop.
    loop_rows = []
    for batch in (1, 8):
        prompt = torch.randint(0, VOCAB, (batch, 16))
        expected = hand_written_greedy(lstm, prompt, new_tokens, same_kernel=True)
        assert torch.equal(greedy(lstm, prompt, new_tokens), expected)
        assert torch.equal(forward_per_token(lstm, prompt, new_tokens), expected)
        with torch.no_grad():
            ours = best_time(lambda: greedy(lstm, prompt, new_tokens), repeats=repeats)
            hand = best_time(lambda: hand_written_greedy(lstm, prompt, new_tokens), repeats=repeats)
            same = best_time(lambda: hand_written_greedy(lstm, prompt, new_tokens, True), repeats=repeats)
            forward = best_time(lambda: forward_per_token(lstm, prompt, new_tokens), repeats=repeats)
        ratio = hand / ours  # tokens/s of generate() over tokens/s of the loop
        nbytes = bytes_read_per_step(lstm, batch)
        bound = read_seconds(nbytes, repeats)
        loop_rows.append(
            {
                "batch": batch,
                "generate_tokens_per_s": round(batch * new_tokens / ours, 1),
                "hand_loop_tokens_per_s": round(batch * new_tokens / hand, 1),
                "ratio": round(ratio, 3),
                "ratio_same_kernel": round(same / ours, 3),
                "weights_read_per_step_bytes": nbytes,
                "read_once_ms": round(bound * 1000, 3),
                "bandwidth_bound_ratio": {
                    "generate": round(bound * new_tokens / ours, 3),
                    "hand_loop": round(bound * new_tokens / hand, 3),
                    "hand_loop_same_kernel": round(bound * new_tokens / same, 3),
                },
                "ms_per_step": {
                    "hand_loop": round(hand / new_tokens * 1000, 3),
                    "hand_loop_same_kernel": round(same / new_tokens * 1000, 3),
                    "our_forward_per_token": round(forward / new_tokens * 1000, 3),
                    "generate": round(ours / new_tokens * 1000, 3),
                },
            }
        )
        checks.append(check(f"generate() / hand-written loop tokens/s, batch {batch}", ratio, 0.9, True))
        checks.append(
            check(
                f"generate() / hand-written loop on the same kernel (overhead alone), batch {batch}",
                same / ours,
                0.95 if batch == 1 else 0.9,
                True,
            )
        )
        if batch == 1:
            checks.append(
                check(
                    "generate() against the bandwidth bound (the time to read its weights once / time per step), "
                    "batch 1",
                    bound * new_tokens / ours,
                    0.5,
                    True,
                )
            )
    payload["generate_vs_hand_loop"] = loop_rows
    head = lstm.get_output_embeddings().weight
    payload["matrix_vector_read_gb_per_s"] = read_rates(*head.shape)

    # 2. Per-token time against context length, with GPT-2 for contrast.
    short, long = (16, 256) if smoke else (64, 2048)
    context_rows = []
    for name, model in (("lstm", lstm), ("gpt2", gpt2)):
        times, sizes = {}, {}
        for context in (short, long):
            prompt = torch.randint(0, VOCAB, (1, context))
            times[context] = per_token_seconds(model, prompt, new_tokens, repeats)
            with torch.no_grad():
                cache = DynamicCache(config=model.config) if name == "gpt2" else None
                sizes[context] = cache_bytes(model(prompt, cache=cache, use_cache=True).cache)
        context_rows.append(
            {
                "model": name,
                "shape": f"{model.config.num_hidden_layers} x {getattr(model.config, 'hidden_size', None)}",
                f"per_token_ms_{short}": round(times[short] * 1000, 3),
                f"per_token_ms_{long}": round(times[long] * 1000, 3),
                "time_ratio": round(times[long] / times[short], 3),
                f"cache_bytes_{short}": sizes[short],
                f"cache_bytes_{long}": sizes[long],
            }
        )
    checks.append(
        check(f"LSTM per-token time, {long} / {short} tokens of context", context_rows[0]["time_ratio"], 1.15, False)
    )
    payload["context"] = context_rows

    # 3. Cached against uncached speed, and the state size of a Zaremba-medium LSTM.
    hidden = 64 if smoke else 650
    zaremba = build_model("lstm", "lm", "small", VOCAB, hidden_size=hidden, embedding_size=hidden).eval()
    prompt = torch.randint(0, VOCAB, (1, 16))
    speed_rows = []
    for count in (8, 32) if smoke else (64, 512):
        with torch.no_grad():
            cached = best_time(lambda: greedy(zaremba, prompt, count), repeats=max(1, repeats // 2))
            uncached = best_time(lambda: greedy(zaremba, prompt, count, use_cache=False), repeats=1)
        speed_rows.append(
            {
                "new_tokens": count,
                "cached_tokens_per_s": round(count / cached, 1),
                "uncached_tokens_per_s": round(count / uncached, 1),
                "speedup": round(uncached / cached, 2),
            }
        )
    state_sizes = {}
    for context in (128, 512) if smoke else (1024, 8192):
        with torch.no_grad():
            state_sizes[context] = cache_bytes(zaremba(torch.randint(0, VOCAB, (1, context))).cache)
    expected = 2 * 2 * hidden * 4  # layers x (h, c) x hidden x float32
    checks.append(
        {
            "name": "LSTM state bytes constant in context length",
            "value": sorted(set(state_sizes.values())),
            "target": f"[{expected}]",
            "passed": set(state_sizes.values()) == {expected},
        }
    )
    payload["cached_vs_uncached"] = speed_rows
    payload["state_bytes"] = {str(k): v for k, v in state_sizes.items()}

    print(
        f"generate() vs a hand-written cached loop (LSTM {lstm.config.num_hidden_layers} x "
        f"{lstm.config.hidden_size}, vocab {VOCAB}, {new_tokens} new tokens, best of {repeats})"
    )
    for row in loop_rows:
        steps = row["ms_per_step"]
        print(
            f"  batch {row['batch']}: generate {row['generate_tokens_per_s']} tok/s, loop "
            f"{row['hand_loop_tokens_per_s']} tok/s, ratio {row['ratio']} (on the same kernel "
            f"{row['ratio_same_kernel']}); ms per step: hand loop {steps['hand_loop']}, on the same kernel "
            f"{steps['hand_loop_same_kernel']}, our forward per token {steps['our_forward_per_token']}, "
            f"generate() {steps['generate']}; reading the {row['weights_read_per_step_bytes'] / 1e6:.1f} MB of "
            f"weights once takes {row['read_once_ms']} ms (bandwidth bound / step: {row['bandwidth_bound_ratio']})"
        )
    rates = payload["matrix_vector_read_gb_per_s"]
    print(
        f"  reading the head's {head.shape[0]} x {head.shape[1]} weights from beyond the cache: F.linear "
        f"{rates['linear']} GB/s, the transposed layout {rates['transposed']} GB/s, a sum {rates['sum']} GB/s"
    )
    print(
        f"Per-token decoding time and cache size at {short} and {long} tokens of context (equal non-embedding "
        "parameters)"
    )
    for row in context_rows:
        print(
            f"  {row['model']:5s} {row[f'per_token_ms_{short}']:.2f} ms -> {row[f'per_token_ms_{long}']:.2f} ms "
            f"(x{row['time_ratio']}), cache {row[f'cache_bytes_{short}']:,} B -> {row[f'cache_bytes_{long}']:,} B"
        )
    print(f"Cached vs uncached (2-layer LSTM, hidden {hidden})")
    for row in speed_rows:
        print(
            f"  {row['new_tokens']} new tokens: cached {row['cached_tokens_per_s']} tok/s, uncached "
            f"{row['uncached_tokens_per_s']} tok/s ({row['speedup']}x)"
        )
    for context, size in state_sizes.items():
        print(f"  state after {context} tokens of context: {size:,} bytes")
    print_checks("Generation", checks)
    write_results("generation", {**payload, "checks": checks}, smoke=smoke)
    return {**payload, "checks": checks}


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, a few seconds")
