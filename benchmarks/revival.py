"""The recurrent revival: what minGRU's parallel scan buys over the GRU's sequential kernel.

- A training step (forward + backward) at 2,048 tokens, batch 8, of minGRU against the GRU at equal non-embedding
  parameters (both matched to GPT-2 at size `small` by the one builder): minGRU at least 3x faster. Timed for the
  causal LM, and for the network without its vocabulary head (the base model, loss = mean square of its outputs),
  which is where the two differ: the head over 8,192 tokens costs both the same. minLSTM against the LSTM for
  contrast.
- minGRU's per-token decoding time with 2,048 tokens of context against 64: at most 1.15x (a fixed-size state).

    python benchmarks/revival.py [--smoke]
"""

import torch
from common import check, interleaved_times, print_checks, run_from_command_line, write_results
from generation import per_token_seconds

from hf_evolution.families import build_model, parameter_counts, shape

VOCAB = 8192
PAIRS = (("mingru", "gru"), ("minlstm", "lstm"))


def training_step(model, input_ids):
    def step():
        model.zero_grad(set_to_none=True)
        if hasattr(model, "lm_head"):
            model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()
        else:
            model(input_ids=input_ids, use_cache=False).last_hidden_state.pow(2).mean().backward()

    return step


def main(smoke: bool = False) -> dict:
    torch.manual_seed(0)
    size, batch, length, repeats = ("tiny", 2, 128, 2) if smoke else ("small", 8, 2048, 3)
    input_ids = torch.randint(0, VOCAB, (batch, length))
    checks, step_rows = [], []
    lms = {family: build_model(family, "lm", size, VOCAB).train() for pair in PAIRS for family in pair}
    for what, models in (("causal LM", lms), ("without the vocabulary head", {f: m.model for f, m in lms.items()})):
        steps = {family: training_step(model, input_ids) for family, model in models.items()}
        times = interleaved_times(steps, repeats)
        for new, old in PAIRS:
            step_rows.append(
                {
                    "pair": f"{new} / {old}",
                    "model": what,
                    **{f"{family}_s": round(times[family], 3) for family in (new, old)},
                    **{f"{family}_shape": shape(models[family].config) for family in (new, old)},
                    **{
                        f"{family}_non_embedding": parameter_counts(models[family])["non_embedding"]
                        for family in (new, old)
                    },
                    "speedup": round(times[old] / times[new], 2),
                }
            )
        name = f"minGRU training step speed-up over GRU, {length} tokens x {batch}, {what}"
        checks.append(check(name, times["gru"] / times["mingru"], 3, True))

    short, long = (16, 256) if smoke else (64, 2048)
    mingru = lms["mingru"].eval()
    per_token = {
        context: per_token_seconds(mingru, torch.randint(0, VOCAB, (1, context)), 16 if smoke else 64, repeats + 2)
        for context in (short, long)
    }
    context_ratio = per_token[long] / per_token[short]
    checks.append(check(f"minGRU per-token time, {long} / {short} tokens of context", context_ratio, 1.15, False))

    print(
        f"Training step (forward + backward), {batch} x {length} tokens, size {size}, median of {repeats} interleaved"
    )
    for row in step_rows:
        new, old = row["pair"].split(" / ")
        print(
            f"  {row['model']:27s} {new:7s} {row[f'{new}_s']:7.3f} s ({row[f'{new}_shape']}, {row[f'{new}_non_embedding']:,} non-emb.)  "
            f"{old:4s} {row[f'{old}_s']:7.3f} s ({row[f'{old}_shape']}, {row[f'{old}_non_embedding']:,})  "
            f"speed-up {row['speedup']}x"
        )
    print(
        f"minGRU per-token decoding: {per_token[short] * 1000:.3f} ms at {short} tokens of context, "
        f"{per_token[long] * 1000:.3f} ms at {long} (x{context_ratio:.3f})"
    )
    print_checks("Recurrent revival", checks)
    payload = {
        "sizes": {"size": size, "batch": batch, "length": length, "vocab": VOCAB},
        "training_step": step_rows,
        "per_token_ms": {str(context): round(seconds * 1000, 4) for context, seconds in per_token.items()},
        "checks": checks,
    }
    write_results("revival", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, a few seconds")
