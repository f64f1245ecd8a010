"""Synthetic long-range tasks for `probe memory`, generated on the fly from a seed: copy after a delay, the adding
problem and multi-query associative recall. Each batch is (inputs, targets) token ids, the targets IGNORE_INDEX except
where an answer is due."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # targets that are not scored, as in transformers' losses


@dataclass(frozen=True)
class SyntheticTask:
    """A long-range task: `make_batch(batch_size, distance, generator)` returns (inputs, targets) token ids, the
    targets IGNORE_INDEX except where an answer is due."""

    make_batch: Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    vocab_size: int
    chance: float  # accuracy of the best answer that ignores the input
    distance: str  # what the distance counts in this task
    min_distance: int = 1


COPY_SYMBOLS, COPY_LENGTH = 8, 4
MQAR_KEYS, MQAR_VALUES, MQAR_PAIRS = 16, 16, 4


def copy_batch(batch_size: int, distance: int, generator: torch.Generator):
    """Copy after a delay (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): 4 symbols out of 8, blanks, a go
    marker `distance` tokens after the last symbol; from the go marker on, the 4 symbols are due in order, one per
    position (the inputs there are blanks). Symbols are tokens 0-7, blank 8, go 9."""
    blank, go = COPY_SYMBOLS, COPY_SYMBOLS + 1
    symbols = torch.randint(COPY_SYMBOLS, (batch_size, COPY_LENGTH), generator=generator)
    go_position = COPY_LENGTH - 1 + distance
    inputs = torch.full((batch_size, go_position + COPY_LENGTH), blank)
    inputs[:, :COPY_LENGTH] = symbols
    inputs[:, go_position] = go
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, go_position:] = symbols
    return inputs, targets


def adding_batch(batch_size: int, distance: int, generator: torch.Generator):
    """The adding problem (Hochreiter & Schmidhuber 1997) with digits: `distance` random digits, one marked in each
    half, then "=", where the sum of the two marked digits is due. Digit d is token d, a marked digit 10 + d, "=" is
    token 20; the sum s (0-18) is answered as token s."""
    digits = torch.randint(10, (batch_size, distance), generator=generator)
    half = distance // 2
    first = torch.randint(half, (batch_size,), generator=generator)
    second = torch.randint(half, distance, (batch_size,), generator=generator)
    rows = torch.arange(batch_size)
    inputs = torch.cat([digits, torch.full((batch_size, 1), 20)], dim=1)
    inputs[rows, first] += 10
    inputs[rows, second] += 10
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = digits[rows, first] + digits[rows, second]
    return inputs, targets


def mqar_batch(batch_size: int, distance: int, generator: torch.Generator):
    """Multi-query associative recall (Zoology, Arora et al. 2023): 4 key-value pairs, blanks, then the 4 keys again
    in a random order, the first one `distance` tokens after the last pair; each key's value is due at its query.
    Keys are tokens 0-15 (distinct within a sequence), values 16-31, blank 32."""
    blank = MQAR_KEYS + MQAR_VALUES
    keys = torch.rand(batch_size, MQAR_KEYS, generator=generator).argsort(dim=1)[:, :MQAR_PAIRS]
    values = torch.randint(MQAR_KEYS, blank, (batch_size, MQAR_PAIRS), generator=generator)
    order = torch.rand(batch_size, MQAR_PAIRS, generator=generator).argsort(dim=1)
    first_query = 2 * MQAR_PAIRS - 1 + distance
    inputs = torch.full((batch_size, first_query + MQAR_PAIRS), blank)
    inputs[:, 0 : 2 * MQAR_PAIRS : 2] = keys
    inputs[:, 1 : 2 * MQAR_PAIRS : 2] = values
    inputs[:, first_query:] = keys.gather(1, order)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, first_query:] = values.gather(1, order)
    return inputs, targets


SYNTHETIC_TASKS = {
    "copy": SyntheticTask(
        copy_batch, COPY_SYMBOLS + 2, 1 / COPY_SYMBOLS, "tokens from the last symbol to the go marker"
    ),
    "adding": SyntheticTask(
        adding_batch, 21, 0.1, "number of digits (one marked digit in each half); chance = always answering 9", 2
    ),
    "mqar": SyntheticTask(
        mqar_batch,
        MQAR_KEYS + MQAR_VALUES + 1,
        1 / MQAR_VALUES,
        "tokens from the last key-value pair to the first query",
    ),
}
