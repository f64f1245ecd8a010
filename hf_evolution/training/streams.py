"""Stateful training data: the streams of a `batchify_for_lm` layout read in order by each process, reset at each
epoch, and AWD-LSTM's variable backpropagation length."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from transformers import TrainerCallback


def stream_state_name(rank: int) -> str:
    return f"stream_state_rank{rank}.pt"


class StreamSampler(Sampler):
    """This process's rows of a `batchify_for_lm` layout, in order: global batch i holds `batch_size * world_size`
    rows, of which process r reads the r-th `batch_size`, so each process carries the state of its own streams."""

    def __init__(self, num_rows: int, batch_size: int, world_size: int = 1, rank: int = 0):
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.steps = num_rows // (batch_size * world_size)

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def __iter__(self):
        width = self.batch_size * self.world_size
        for step in range(self.steps):
            first = step * width + self.rank * self.batch_size
            yield from range(first, first + self.batch_size)


class ResetStreamsEachEpoch(TrainerCallback):
    """Each epoch reads the streams from their start, from a zero state; a resume within an epoch keeps the state
    the checkpoint saved."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        resumed_mid_epoch = self.trainer.stream_cache is not None and state.epoch % 1 != 0
        if not resumed_mid_epoch:
            self.trainer.stream_cache = None


class VariableLengthStreams(Dataset):
    """AWD-LSTM's variable BPTT over this process's streams: each batch's length is `block_size` with probability
    0.95, else half of it, then drawn from a normal of that mean and deviation 5 (at least 5 tokens); the schedule of
    an epoch follows from the seed and the epoch, so a resume reads the same batches. Every epoch has the number of
    batches fixed-length blocks would give (Trainer plans with it); lengths that would overrun the streams are
    scaled down to fit, and tokens left after the last batch are not read.

    An item is a whole batch: read it with `DataLoader(batch_size=None)`."""

    def __init__(self, blocks, batch_size: int, world_size: int, rank: int, block_size: int, seed: int, epoch):
        """`epoch()` tells the epoch being read (Trainer's state), which picks its schedule."""
        inputs, targets = np.asarray(blocks["input_ids"]), np.asarray(blocks["shift_labels"])
        width = batch_size * world_size
        steps = len(inputs) // width
        mine = [step * width + rank * batch_size + row for step in range(steps) for row in range(batch_size)]
        rows = inputs[mine].reshape(steps, batch_size, -1).transpose(1, 0, 2).reshape(batch_size, -1)
        last = targets[mine].reshape(steps, batch_size, -1)[-1, :, -1:]
        self.rows = torch.tensor(np.concatenate([rows, last], axis=1), dtype=torch.long)
        self.block_size, self.seed, self.epoch = block_size, seed, epoch
        self.steps = (self.rows.shape[1] - 1) // block_size

    def __len__(self) -> int:
        return self.steps

    def schedule(self, epoch: int) -> list[tuple[int, int]]:
        """(start, length) of every batch of `epoch`."""
        generator = np.random.default_rng([self.seed, epoch])
        lengths = []
        for _ in range(self.steps):
            mean = self.block_size if generator.random() < 0.95 else self.block_size / 2
            lengths.append(max(5, int(generator.normal(mean, 5))))
        available = self.rows.shape[1] - 1
        if sum(lengths) > available:
            lengths = [max(1, length * available // sum(lengths)) for length in lengths]
        starts = np.cumsum([0, *lengths[:-1]])
        return [(int(start), length) for start, length in zip(starts, lengths, strict=True)]

    def __getitem__(self, index: int) -> dict:
        start, length = self.schedule(self.epoch())[index]
        inputs = self.rows[:, start : start + length].contiguous()
        targets = self.rows[:, start + 1 : start + length + 1].contiguous()
        return {
            "input_ids": inputs,
            "labels": inputs,
            "shift_labels": targets,
            "length_scale": length / self.block_size,
        }
