"""Wrapper overhead: a training step (forward + backward) of our causal LMs against the same network written directly
with nn.Embedding + nn.LSTM/GRU/RNN + nn.Linear, at the same sizes; for minGRU and minLSTM, against their residual
blocks written directly around the same recurrence (our cell: gates and scan, as nn.GRU is for the GRU). Target: at
most 1.05x.

    python benchmarks/wrapper_overhead.py [--smoke]
"""

import torch
from common import check, interleaved_times, print_checks, run_from_command_line, write_results
from torch import nn

from hf_evolution.families import build_model
from hf_evolution.modeling_minrnn import MIN_RNN_CELLS

TARGET = 1.05


class PlainLanguageModel(nn.Module):
    """The network as PyTorch's word_language_model example writes it (no dropout, untied, multi-layer kernel)."""

    def __init__(self, family: str, vocab_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        recurrent = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[family]
        self.rnn = recurrent(hidden_size, hidden_size, num_layers, batch_first=True)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, input_ids):
        hidden, _ = self.rnn(self.embedding(input_ids))
        logits = self.decoder(hidden)
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())


class PlainMinRNNLanguageModel(nn.Module):
    """minGRU or minLSTM as one writes it without transformers: pre-LayerNorm residual blocks (recurrence, then a
    4x feed-forward part), a final LayerNorm, an untied decoder."""

    def __init__(self, family: str, vocab_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_1": nn.LayerNorm(hidden_size),
                    "cell": MIN_RNN_CELLS[family](hidden_size, hidden_size),
                    "out": nn.Linear(hidden_size, hidden_size, bias=False),
                    "norm_2": nn.LayerNorm(hidden_size),
                    "ffn": nn.Sequential(
                        nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size)
                    ),
                }
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, input_ids):
        hidden = self.embedding(input_ids)
        for block in self.blocks:
            hidden = hidden + block["out"](block["cell"](block["norm_1"](hidden))[0])
            hidden = hidden + block["ffn"](block["norm_2"](hidden))
        logits = self.decoder(self.norm(hidden))
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())


def ours(family: str, vocab_size: int, hidden_size: int, num_layers: int):
    """Our causal LM at the plain network's sizes: the builder with every shape field given, dropout off, untied."""
    fields = dict(hidden_size=hidden_size, embedding_size=hidden_size, num_hidden_layers=num_layers)
    return build_model(
        family, "lm", "small", vocab_size, input_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False, **fields
    )


def main(smoke: bool = False) -> dict:
    torch.manual_seed(0)
    batch, length, hidden, layers, vocab = (4, 32, 64, 2, 1000) if smoke else (32, 128, 512, 2, 10000)
    repeats = 3 if smoke else 7
    input_ids = torch.randint(0, vocab, (batch, length))
    rows, checks = [], []
    for family in ("lstm", "gru", "rnn", "mingru", "minlstm"):
        plain_class = PlainMinRNNLanguageModel if family in MIN_RNN_CELLS else PlainLanguageModel
        plain = plain_class(family, vocab, hidden, layers).train()
        wrapped = ours(family, vocab, hidden, layers).train()

        def step_plain():
            plain.zero_grad(set_to_none=True)
            plain(input_ids).backward()

        def step_ours():
            wrapped.zero_grad(set_to_none=True)
            wrapped(input_ids, labels=input_ids).loss.backward()

        times = interleaved_times({"plain": step_plain, "ours": step_ours}, repeats=repeats)
        ratio = times["ours"] / times["plain"]
        rows.append(
            {
                "family": family,
                "plain_s": round(times["plain"], 4),
                "ours_s": round(times["ours"], 4),
                "ratio": round(ratio, 3),
            }
        )
        checks.append(check(f"{family} training step, ours / plain PyTorch", ratio, TARGET, higher_is_better=False))
    print(
        f"Training step (forward + backward), batch {batch} x {length} tokens, hidden {hidden}, {layers} layers, "
        f"vocab {vocab}, median of {repeats} interleaved runs"
    )
    for row in rows:
        print(
            f"  {row['family']:7s} plain {row['plain_s'] * 1000:8.1f} ms   ours {row['ours_s'] * 1000:8.1f} ms   "
            f"ratio {row['ratio']:.3f}"
        )
    print_checks("Wrapper overhead", checks)
    payload = {
        "sizes": {"batch": batch, "length": length, "hidden": hidden, "layers": layers, "vocab": vocab},
        "rows": rows,
        "checks": checks,
    }
    write_results("wrapper_overhead", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    run_from_command_line(main, __doc__, "tiny sizes, a few seconds")
