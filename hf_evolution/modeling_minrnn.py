"""minGRU and minLSTM models for transformers (Feng et al. 2024, "Were RNNs All We Needed?").

Both recurrences have the form `h_t = a_t * h_{t-1} + b_t` with `a_t` and `b_t` computed from the input alone, so a
whole sequence runs as one parallel scan (`blocked_scan`): cumulative sums in linear space inside blocks of `BLOCK`
steps, the same scan again over the blocks' ends, and so on up; every number stays inside float32's range at any
length and any gate. The paper's log-space form (`log h_t = a*_t + logcumsumexp(log b_t - a*_t)`, `log_space_scan`)
stays as the reference: on CPU its `logcumsumexp` makes it 2.6 times slower, forward and backward
(`benchmarks/revival.py`). The candidate state is kept positive by `g`, as in the paper. Padding gets `a = 1, b = 0`: it never
changes the state, wherever it sits, without packing.

Everything around the recurrence (embeddings, cache, generation, padding checks, heads) is the one implementation of
`modeling_recurrent.py`; this file adds the scan, the two cells and the residual blocks. It imports only torch, transformers and its
sibling files, so `save_pretrained` ships it as remote code.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_minrnn import MinGRUConfig, MinLSTMConfig, MinRNNConfig
from .modeling_recurrent import (
    LockedDropout,
    RecurrentCache,
    RecurrentForCausalLM,
    RecurrentForSequenceClassification,
    RecurrentForTokenClassification,
    RecurrentModel,
    RecurrentPreTrainedModel,
)

SCAN_CHUNK = 64
# The log of a zero: finite, so that logcumsumexp's gradient stays finite where a row starts with padding.
LOG_ZERO = torch.finfo(torch.float32).min / 4
BLOCK = 4
# The smallest decay a step of `blocked_scan` keeps, e^-16: a state forgotten faster keeps at most 1.1e-7 of itself
# (float32's own rounding), and a block's decay stays above e^-64, so that dividing by it stays finite.
LOG_DECAY_FLOOR = -16.0


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's g: x + 0.5 for x >= 0 and sigmoid(x) below, a positive candidate state, continuous at 0."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x), computed without forming g(x) (so without underflow for very negative x)."""
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


def mask_padding(
    log_a: torch.Tensor, log_b: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded steps (mask 0) get `a = 1, b = 0`, so that they keep the state."""
    if attention_mask is None:
        return log_a, log_b
    padding = ~attention_mask.bool().unsqueeze(-1)
    return log_a.masked_fill(padding, 0.0), log_b.masked_fill(padding, LOG_ZERO)


def blocked_scan(
    log_a: torch.Tensor, log_b: torch.Tensor, initial_state: torch.Tensor | None, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Every `h_t = a_t * h_{t-1} + b_t` of a (batch, time, hidden) sequence, given in logs, from `initial_state` (zeros
    if None); padded steps (mask 0) keep the state. Within 1e-5 of the recurrence in float64 (tested to 65,536 steps
    and with gates and candidates of 1e30)."""
    log_a, log_b = mask_padding(log_a, log_b, attention_mask)
    return linear_scan(log_a, log_b.exp(), None if initial_state is None else initial_state.float())


def linear_scan(log_a: torch.Tensor, b: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
    """`blocked_scan` in linear space. Each block of `BLOCK` steps is solved from a zero state as
    `h_t = A_t * sum_{s<=t} b_s / A_s`, with `A_t = a_1 * ... * a_t` from a cumulative sum of logs; the state entering
    each block comes from this same scan over the blocks (a sequence `BLOCK` times shorter) and is added with its
    decay `A_t`."""
    batch_size, length, hidden_size = log_a.shape
    blocks = -(-length // BLOCK)
    if blocks * BLOCK != length:  # pad the end with steps that keep the state
        log_a = F.pad(log_a, (0, 0, 0, blocks * BLOCK - length))
        b = F.pad(b, (0, 0, 0, blocks * BLOCK - length))
    log_decay = log_a.clamp(min=LOG_DECAY_FLOOR).view(batch_size, blocks, BLOCK, hidden_size).cumsum(dim=2)
    decay = log_decay.exp()  # A_t, at least e^-64
    b = b.view(batch_size, blocks, BLOCK, hidden_size)
    # Scaled by the block's largest |b| (it cancels), so that b_s / A_s stays below e^64 however large b is; 1 / A_s is
    # its own exp rather than a division, whose gradient (1 / A_s^2) would overflow.
    scale = b.detach().abs().amax(dim=2, keepdim=True).clamp(min=1.0)
    states = (decay * scale) * (b * ((-log_decay).exp() / scale)).cumsum(dim=2)
    if blocks > 1:
        after_each_block = linear_scan(log_decay[:, :, -1], states[:, :, -1], initial_state)
        first = states.new_zeros(batch_size, hidden_size) if initial_state is None else initial_state
        entering = torch.cat([first.unsqueeze(1), after_each_block[:, :-1]], dim=1)
    elif initial_state is not None:
        entering = initial_state.unsqueeze(1)
    else:
        return states.view(batch_size, BLOCK, hidden_size)[:, :length]
    states = states + decay * entering.unsqueeze(2)
    return states.view(batch_size, blocks * BLOCK, hidden_size)[:, :length]


def log_space_scan(
    log_a: torch.Tensor, log_b: torch.Tensor, initial_state: torch.Tensor | None, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """`blocked_scan` in the paper's log-space form, the reference that the tests and `benchmarks/revival.py` hold it to.

    The sequence is cut into chunks of `SCAN_CHUNK` steps, all scanned at once in log space from a zero state; the
    state entering each chunk is then carried from chunk to chunk in linear space, and its decay added to every step.
    """
    log_a, log_b = mask_padding(log_a, log_b, attention_mask)
    batch_size, length, hidden_size = log_a.shape
    chunk_size = min(SCAN_CHUNK, length)
    chunks = -(-length // chunk_size)
    if chunks * chunk_size != length:  # pad the end with steps that keep the state
        extra = chunks * chunk_size - length
        log_a = F.pad(log_a, (0, 0, 0, extra), value=0.0)
        log_b = F.pad(log_b, (0, 0, 0, extra), value=LOG_ZERO)
    log_a = log_a.view(batch_size, chunks, chunk_size, hidden_size)
    log_b = log_b.view(batch_size, chunks, chunk_size, hidden_size)
    a_star = log_a.cumsum(dim=2)
    states = (a_star + (log_b - a_star).logcumsumexp(dim=2)).exp()
    if chunks > 1 or initial_state is not None:
        decay = a_star.exp()  # a_1 * ... * a_t within each chunk
        state = log_a.new_zeros(batch_size, hidden_size) if initial_state is None else initial_state.float()
        entering = []
        for chunk in range(chunks):
            entering.append(state)
            state = states[:, chunk, -1] + decay[:, chunk, -1] * state
        states = states + decay * torch.stack(entering, dim=1).unsqueeze(2)
    return states.view(batch_size, chunks * chunk_size, hidden_size)[:, :length]


def sequential_scan(a: torch.Tensor, b: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Every `h_t = a_t * h_{t-1} + b_t`, one step after the other: what an ONNX graph runs (scripted into a loop
    over time by `torch.onnx.export`, whose tracer would fix the block count of `blocked_scan` to one length)."""
    states = []
    for step in range(a.size(1)):
        state = a[:, step] * state + b[:, step]
        states.append(state)
    return torch.stack(states, dim=1)


class MinRNNCell(nn.Module):
    """A minimal recurrence over a whole sequence: its gates map the input to `log a_t` and `log b_t`
    (`log_coefficients`, per cell) and the scan does the rest. A decoding step (one token, a carried state, no padding)
    runs the recurrence itself instead (`step`). Returns the states of every step and the last one, to carry."""

    number_of_projections: int

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.gates = nn.Linear(input_size, self.number_of_projections * hidden_size)

    def forward(self, inputs, initial_state=None, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.shape[1] == 1 and initial_state is not None and attention_mask is None:
            state = self.step(inputs[:, 0], initial_state.float())
            return state.unsqueeze(1).to(inputs.dtype), state
        log_a, log_b = self.log_coefficients(inputs)
        if torch.onnx.is_in_onnx_export() and attention_mask is None:
            if initial_state is None:
                initial_state = log_a.new_zeros(log_a.shape[0], log_a.shape[2])
            states = torch.jit.script(sequential_scan)(log_a.exp(), log_b.exp(), initial_state.float())
            return states.to(inputs.dtype), states[:, -1]
        states = blocked_scan(log_a, log_b, initial_state, attention_mask)
        return states.to(inputs.dtype), states[:, -1]


class MinGRUCell(MinRNNCell):
    """h_t = (1 - z_t) * h_{t-1} + z_t * g(W_h x_t), z_t = sigmoid(W_z x_t)."""

    number_of_projections = 2

    def log_coefficients(self, inputs):
        gate, candidate = self.gates(inputs).float().chunk(2, dim=-1)
        return -F.softplus(gate), -F.softplus(-gate) + log_g(candidate)

    def step(self, inputs, state):
        gate, candidate = self.gates(inputs).float().chunk(2, dim=-1)
        return torch.lerp(state, g(candidate), torch.sigmoid(gate))


class MinLSTMCell(MinRNNCell):
    """h_t = f'_t * h_{t-1} + i'_t * g(W_h x_t), where f' = f / (f + i) and i' = i / (f + i) for the forget and input
    gates f, i = sigmoid(W_f x_t), sigmoid(W_i x_t); in logs, log f' = -softplus(log i - log f)."""

    number_of_projections = 3

    def log_coefficients(self, inputs):
        forget, input_gate, candidate = self.gates(inputs).float().chunk(3, dim=-1)
        log_input_over_forget = F.softplus(-forget) - F.softplus(-input_gate)
        return -F.softplus(log_input_over_forget), -F.softplus(-log_input_over_forget) + log_g(candidate)

    def step(self, inputs, state):
        forget, input_gate, candidate = self.gates(inputs).float().chunk(3, dim=-1)
        forget, input_gate = torch.sigmoid(forget), torch.sigmoid(input_gate)
        return torch.lerp(g(candidate), state, forget / (forget + input_gate))


MIN_RNN_CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}


class MinRNNBlock(GradientCheckpointingLayer):
    """One residual block, pre-LayerNorm as in the paper's language models: the recurrence, projected back to the
    residual stream, then a feed-forward part."""

    def __init__(self, config: MinRNNConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        width = config.embedding_size
        self.input_dropout = LockedDropout(config.input_dropout) if layer_idx == 0 else None
        self.recurrence_norm = nn.LayerNorm(width, eps=config.layer_norm_epsilon)
        self.recurrence = MIN_RNN_CELLS[config.model_type](width, config.hidden_size)
        self.recurrence_output = nn.Linear(config.hidden_size, width, bias=False)
        self.feed_forward_norm = nn.LayerNorm(width, eps=config.layer_norm_epsilon)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, config.intermediate_size), nn.GELU(), nn.Linear(config.intermediate_size, width)
        )
        self.dropout = nn.Dropout(config.hidden_dropout) if config.hidden_dropout > 0 else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: RecurrentCache | None = None,
    ) -> torch.Tensor:
        if self.training and self.input_dropout is not None:
            hidden_states = self.input_dropout(hidden_states)
        initial_state = None
        if cache is not None and cache.layer_state(self.layer_idx) is not None:
            initial_state = cache.layer_state(self.layer_idx)[0]
            if torch.is_grad_enabled():  # a copy, so that the in-place write of the new state spares the old one
                initial_state = initial_state.clone()
        states, final_state = self.recurrence(self.recurrence_norm(hidden_states), initial_state, attention_mask)
        if cache is not None:
            cache.update_layer_state(self.layer_idx, (final_state,))
        hidden_states = hidden_states + self.dropout(self.recurrence_output(states))
        return hidden_states + self.dropout(self.feed_forward(self.feed_forward_norm(hidden_states)))


class MinRNNModel(RecurrentModel):
    """Embeddings, residual minGRU or minLSTM blocks and a final LayerNorm; everything else, from reading a call's
    inputs to the generation path, is `RecurrentModel`'s (which applies `norm` and keeps padding at zero)."""

    def __init__(self, config: MinRNNConfig):
        RecurrentPreTrainedModel.__init__(self, config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList([MinRNNBlock(config, idx) for idx in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_epsilon)
        self.post_init()

    @property
    def output_size(self) -> int:
        return self.config.embedding_size


class MinRNNForCausalLM(RecurrentForCausalLM):
    backbone_class = MinRNNModel


class MinRNNForSequenceClassification(RecurrentForSequenceClassification):
    backbone_class = MinRNNModel


class MinRNNForTokenClassification(RecurrentForTokenClassification):
    backbone_class = MinRNNModel


# Each family gets its own classes so that it has its own `model_type` in the Auto* mappings and on the Hub.
class MinGRUModel(MinRNNModel):
    config_class = MinGRUConfig


class MinGRUForCausalLM(MinRNNForCausalLM):
    config_class = MinGRUConfig


class MinGRUForSequenceClassification(MinRNNForSequenceClassification):
    config_class = MinGRUConfig


class MinGRUForTokenClassification(MinRNNForTokenClassification):
    config_class = MinGRUConfig


class MinLSTMModel(MinRNNModel):
    config_class = MinLSTMConfig


class MinLSTMForCausalLM(MinRNNForCausalLM):
    config_class = MinLSTMConfig


class MinLSTMForSequenceClassification(MinRNNForSequenceClassification):
    config_class = MinLSTMConfig


class MinLSTMForTokenClassification(MinRNNForTokenClassification):
    config_class = MinLSTMConfig


__all__ = [
    "MinRNNModel",
    "MinRNNForCausalLM",
    "MinRNNForSequenceClassification",
    "MinRNNForTokenClassification",
    "MinGRUModel",
    "MinGRUForCausalLM",
    "MinGRUForSequenceClassification",
    "MinGRUForTokenClassification",
    "MinLSTMModel",
    "MinLSTMForCausalLM",
    "MinLSTMForSequenceClassification",
    "MinLSTMForTokenClassification",
]
