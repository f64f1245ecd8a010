"""The recurrent revival: what minGRU's parallel scan buys over the GRU's sequential kernel.

- A training step (forward + backward) at 2,048 tokens, batch 8, of minGRU against the GRU at equal non-embedding
  parameters (both matched to GPT-2 at size `small` by the one builder): minGRU at least 3x faster. Timed for the
  causal LM, and for the network without its vocabulary head (the base model, loss = mean square of its outputs),
  which is where the two differ: the head over 8,192 tokens costs both the same. minLSTM against the LSTM for
  contrast.
- The scan alone (forward + backward over minGRU's gates at that size): the blocked linear-space scan the models run
  against the paper's log-space form (`logcumsumexp`), kept as the reference: at least 3x faster.
- minGRU's per-token decoding time with 2,048 tokens of context against 64: at most 1.15x (a fixed-size state).
- transformers' Mamba on CPU, as the families build it (mambapy's parallel scan, `use_mambapy`): the training step's
  time per token at 2,048 tokens against 512, at most 1.5x (linear in the length, where transformers' own loop grows
  with its square); and the step at 128 tokens against that loop's (`use_mambapy=False`).

    python benchmarks/revival.py [--smoke]
"""

import torch
import torch.nn.functional as F
from common import check, interleaved_times, print_checks, run_from_command_line, write_results
from generation import per_token_seconds

from hf_evolution.families import build_model, parameter_counts, shape
from hf_evolution.modeling_minrnn import blocked_scan, log_g, log_space_scan

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


def scan_step(scan, gate, candidate):
    """Forward and backward of one scan over minGRU's coefficients (its `log_coefficients`, from given gates)."""

    def step():
        gate.grad = candidate.grad = None
        log_a, log_b = -F.softplus(gate), -F.softplus(-gate) + log_g(candidate)
        scan(log_a, log_b, None, None).sum().backward()

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

    hidden = lms["mingru"].config.hidden_size
    gate, candidate = (torch.randn(batch, length, hidden, requires_grad=True) for _ in range(2))
    scans = {
        name: scan_step(scan, gate, candidate)
        for name, scan in (("log_space", log_space_scan), ("blocked", blocked_scan))
    }
    scan_times = interleaved_times(scans, repeats + 2)
    scan_speedup = scan_times["log_space"] / scan_times["blocked"]
    checks.append(
        check(f"blocked scan speed-up over the log-space scan, {batch} x {length} x {hidden}", scan_speedup, 3, True)
    )

    short, long = (16, 256) if smoke else (64, 2048)
    mingru = lms["mingru"].eval()
    per_token = {
        context: per_token_seconds(mingru, torch.randint(0, VOCAB, (1, context)), 16 if smoke else 64, repeats + 2)
        for context in (short, long)
    }
    context_ratio = per_token[long] / per_token[short]
    checks.append(check(f"minGRU per-token time, {long} / {short} tokens of context", context_ratio, 1.15, False))

    mamba_batch, loop_length, mamba_short, mamba_long = (2, 32, 64, 128) if smoke else (8, 128, 512, 2048)
    mamba = build_model("mamba", "lm", size, VOCAB).train()
    mamba_times = {
        length: interleaved_times({"mamba": training_step(mamba, torch.randint(0, VOCAB, (mamba_batch, length)))}, 2)[
            "mamba"
        ]
        for length in (loop_length, mamba_short, mamba_long)
    }
    mamba_ratio = (mamba_times[mamba_long] / mamba_long) / (mamba_times[mamba_short] / mamba_short)
    checks.append(
        check(f"Mamba training step per token, {mamba_long} / {mamba_short} tokens", mamba_ratio, 1.5, False)
    )
    loop = build_model("mamba", "lm", size, VOCAB, use_mambapy=False).train()
    loop_seconds = interleaved_times(
        {"loop": training_step(loop, torch.randint(0, VOCAB, (mamba_batch, loop_length)))}, 1
    )["loop"]

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
        f"Scan alone, forward + backward, {batch} x {length} x {hidden}: log-space {scan_times['log_space'] * 1000:.1f} ms, "
        f"blocked {scan_times['blocked'] * 1000:.1f} ms (x{scan_speedup:.2f})"
    )
    print(
        f"minGRU per-token decoding: {per_token[short] * 1000:.3f} ms at {short} tokens of context, "
        f"{per_token[long] * 1000:.3f} ms at {long} (x{context_ratio:.3f})"
    )
    print(
        f"Mamba training step, {mamba_batch} sequences, parallel scan (mambapy): "
        + ", ".join(f"{length}: {seconds:.2f} s" for length, seconds in mamba_times.items())
        + f"; per token {mamba_long} / {mamba_short}: x{mamba_ratio:.2f}; at {loop_length} tokens transformers' loop "
        f"{loop_seconds:.2f} s (x{loop_seconds / mamba_times[loop_length]:.1f})"
    )
    print_checks("Recurrent revival", checks)
    payload = {
        "sizes": {"size": size, "batch": batch, "length": length, "vocab": VOCAB},
        "training_step": step_rows,
        "mamba_training_step_s": {str(length): round(seconds, 3) for length, seconds in mamba_times.items()},
        f"mamba_loop_step_s_at_{loop_length}": round(loop_seconds, 3),
        "scan_ms": {name: round(seconds * 1000, 2) for name, seconds in scan_times.items()},
        "per_token_ms": {str(context): round(seconds * 1000, 4) for context, seconds in per_token.items()},
        "checks": checks,
    }
    write_results("revival", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, a few seconds")
