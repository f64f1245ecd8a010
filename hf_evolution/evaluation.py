"""Perplexity over a whole split read as one stream, each family the way it is evaluated at its best.

Recurrent language models carry their state through the split, as PyTorch's `word_language_model` evaluates them
(`batchify` into `batch_size` rows, blocks of `block_size`, every token but the first of a row scored); transformers
read it through a sliding window, as in transformers' "Perplexity of fixed-length models" guide (windows of the
context the model was trained with, half of each window's tokens scored, the other half their context). The block evaluation of
`Trainer.evaluate()` (blocks read from nothing) stays the common protocol beside these.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import stream_rows
from .families import position_limit
from .modeling_recurrent import RecurrentPreTrainedModel

STATEFUL_EVAL_ROWS = 10  # the classic example's eval batch size


def is_stateful(model) -> bool:
    """A model whose state after one block continues exactly into the next: ours. transformers' Mamba carries a cache
    too, but without the `mamba_ssm` kernels its scan starts every block of several tokens from a zero state (logits
    off by 2e-3 at random init), so it reads a stream through a sliding window, as a transformer does."""
    return isinstance(model, RecurrentPreTrainedModel)


@torch.no_grad()
def stateful_loss(model, stream: np.ndarray, *, block_size: int, rows: int = STATEFUL_EVAL_ROWS) -> tuple[float, int]:
    """Summed next-token loss (nats) and the number of tokens scored, reading `rows` contiguous rows of the stream
    in blocks of `block_size` with the state carried from each block to the next."""
    batch = torch.tensor(stream_rows(stream, rows), dtype=torch.long)  # a copy: Arrow arrays are read-only
    if batch.shape[1] < 2:
        raise ValueError(f"A stream of {len(stream)} tokens is too short for {rows} rows of at least 2 tokens.")
    device = next(model.parameters()).device
    model.eval()
    cache, total, count = None, 0.0, 0
    for start in range(0, batch.shape[1] - 1, block_size):
        inputs = batch[:, start : start + block_size].to(device)
        targets = batch[:, start + 1 : start + 1 + inputs.shape[1]].to(device)
        inputs = inputs[:, : targets.shape[1]]
        output = model(input_ids=inputs, cache=cache, use_cache=True)
        cache = output.cache
        total += F.cross_entropy(output.logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    return total, count


@torch.no_grad()
def sliding_window_loss(
    model, stream: np.ndarray, *, window: int, stride: int, batch_size: int = 16
) -> tuple[float, int]:
    """Summed next-token loss (nats) and the number of tokens scored: windows of `window` tokens moving by
    `stride`, each scoring only the tokens the window before it did not (all but the stream's first token), read
    `batch_size` windows at a time."""
    if not 0 < stride <= window:
        raise ValueError(f"The stride ({stride}) must be between 1 and the window ({window}).")
    ids = torch.tensor(stream, dtype=torch.long)
    device = next(model.parameters()).device
    windows, scored_until = [], 1
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        windows.append((begin, end, scored_until - begin - 1))  # targets before the last index were scored
        scored_until = end
        if end == len(ids):
            break
    model.eval()
    total, count = 0.0, 0
    for length in sorted({end - begin for begin, end, _ in windows}):
        same = [item for item in windows if item[1] - item[0] == length]
        for first in range(0, len(same), batch_size):
            group = same[first : first + batch_size]
            batch = torch.stack([ids[begin:end] for begin, end, _ in group]).to(device)
            targets = batch[:, 1:].clone()
            for row, (_, _, already) in enumerate(group):
                targets[row, :already] = -100
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            total += F.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
            ).item()
            count += int((targets != -100).sum())
    return total, count


def stream_loss(model, stream: np.ndarray, *, block_size: int) -> tuple[float, int, str]:
    """The loss of a split read as one stream, the way the family reads best, and a name for that protocol."""
    if is_stateful(model):
        total, count = stateful_loss(model, stream, block_size=block_size)
        return total, count, f"state carried, {STATEFUL_EVAL_ROWS} rows, blocks of {block_size}"
    window = min(position_limit(model.config) or block_size, block_size)  # the context it was trained with
    total, count = sliding_window_loss(model, stream, window=window, stride=window // 2)
    return total, count, f"sliding window of {window}, stride {window // 2}"
