"""Vanilla RNN, LSTM and GRU models for transformers.

One implementation serves the three families: each layer runs torch's fused `nn.RNN`/`nn.LSTM`/`nn.GRU` kernel over
the whole sequence (cuDNN on GPU, oneDNN on CPU), never a Python loop over time steps. The recurrent state lives in a
`transformers.Cache` under the name `cache`, as in Mamba, so `generate()` feeds the prompt once and then one token per
step at a constant cost. Padding never enters the state: padded rows run as packed sequences.

Generation, in the order generate() calls it: `RecurrentForCausalLM.generate` (what only the caller's arguments tell),
`_prepare_cache_for_generation` (the cache), `prepare_inputs_for_generation` (the tokens of each call), then `forward`,
which reads every call, prompt or decoding step, in `RecurrentModel.prepare_step` and runs it in `run_layers`; the
minGRU/minLSTM models share all of it.

This file imports only torch, transformers and `.configuration_recurrent`, so `save_pretrained` can ship it as remote
code that loads where hf_evolution is not installed.
"""

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules import module as module_hooks
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.dynamic_module_utils import custom_object_save
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple

from .configuration_recurrent import GRUConfig, LSTMConfig, RecurrentConfig, RNNConfig

RECURRENT_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES_PER_FAMILY = {"rnn": 1, "lstm": 4, "gru": 3}
HEAD_SUFFIXES = {
    "AutoModel": "Model",
    "AutoModelForCausalLM": "ForCausalLM",
    "AutoModelForSequenceClassification": "ForSequenceClassification",
    "AutoModelForTokenClassification": "ForTokenClassification",
}


def remote_code_auto_map(config_class: type, modeling_module: str) -> dict[str, str]:
    """The `auto_map` of a saved folder: every head of the family, so any Auto class loads it with remote code.

    A family's classes are named after its config (`LSTMConfig`, `LSTMForCausalLM`, ...) and live in the files of
    `config_class` and `modeling_module`."""
    prefix = config_class.__name__.removesuffix("Config")
    config_file = config_class.__module__.rsplit(".", 1)[-1]
    modeling_file = modeling_module.rsplit(".", 1)[-1]
    auto_map = {"AutoConfig": f"{config_file}.{config_class.__name__}"}
    auto_map.update({auto: f"{modeling_file}.{prefix}{suffix}" for auto, suffix in HEAD_SUFFIXES.items()})
    return auto_map


class RecurrentCache(DynamicCache):
    """A `DynamicCache` of fixed-size recurrent states (batch first, so beam search reorders them) that also counts the
    tokens folded into them.

    The count plays the part of a KV cache's length: `generate()` can continue from a returned cache given the whole
    sequence so far, as with GPT-2, and a sequence shorter than what the state has seen is refused instead of being fed
    on top of it. `generate()` works on a copy of a cache it is given, so one cache can seed several continuations.
    """

    def __init__(self, config: RecurrentConfig):
        super().__init__(config=config)
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reset(self):
        super().reset()
        self.seen_tokens = 0

    def layer_state(self, layer_idx: int) -> tuple[torch.Tensor, ...] | None:
        """The (batch, hidden) states of one layer, or None before its first token."""
        layer = self.layers[layer_idx]
        if not layer.is_recurrent_states_initialized[0]:
            return None
        return tuple(layer.recurrent_states[index] for index in range(layer.number_of_states))

    def update_layer_state(self, layer_idx: int, states: tuple[torch.Tensor, ...]) -> None:
        layer = self.layers[layer_idx]
        for index, state in enumerate(states):
            layer.update_recurrent_state(state, state_idx=index)
            layer.has_previous_state[index] = True  # what `get_recurrent_state` and `has_previous_state` read

    def detach_(self) -> None:
        """Keep the states, drop their history: truncated backpropagation through time between training batches."""
        for layer in self.layers:
            for index, state in layer.recurrent_states.items():
                if state is not None:
                    layer.recurrent_states[index] = state.detach()

    @property
    def batch_size(self) -> int | None:
        state = self.layer_state(0) if self.layers else None
        return None if state is None else state[0].shape[0]

    def copy(self, repeats: int = 1) -> "RecurrentCache":
        """An independent copy; `repeats` > 1 repeats each row (for beams or several sequences per prompt)."""
        copied = copy.deepcopy(self)
        if repeats > 1:
            for layer in copied.layers:
                for index, state in layer.recurrent_states.items():
                    if state is not None:
                        layer.recurrent_states[index] = state.repeat_interleave(repeats, dim=0)
        return copied


def check_token_ids(input_ids: torch.LongTensor, vocab_size: int) -> None:
    smallest, largest = (int(value) for value in torch.aminmax(input_ids))
    if smallest < 0 or largest >= vocab_size:
        bad_id = smallest if smallest < 0 else largest
        raise ValueError(
            f"Token id {bad_id} is outside the vocabulary [0, {vocab_size}). Use the tokenizer the model was "
            "trained with, or call `model.resize_token_embeddings(len(tokenizer))` after adding tokens."
        )


def check_cache(cache, batch_size: int) -> None:
    """A cache of another kind or batch would fail deep inside torch, or silently mix rows: say what is expected."""
    if not isinstance(cache, RecurrentCache):
        raise ValueError(
            f"A recurrent model keeps its state in a RecurrentCache, got {type(cache).__name__}. Leave `cache` unset "
            "(the model makes one), or pass the cache a previous call returned."
        )
    if cache.batch_size is not None and cache.batch_size != batch_size:
        raise ValueError(
            f"The cache holds the state of {cache.batch_size} sequences but the input has {batch_size}; continue "
            "from a cache with the batch it was made for."
        )


class LockedDropout(nn.Module):
    """Drops the same units at every time step of a sequence (variational dropout, Gal & Ghahramani 2016).

    Fresh noise at each step would let the recurrence average it away; one mask per sequence regularises the state."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return hidden_states
        batch_size, _, width = hidden_states.shape
        mask = hidden_states.new_empty(batch_size, 1, width).bernoulli_(1 - self.p) / (1 - self.p)
        return hidden_states * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RecurrentLayer(GradientCheckpointingLayer):
    """One recurrent layer: locked dropout on its input, then the fused kernel over the whole sequence."""

    def __init__(self, config: RecurrentConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_states = config.number_of_conv_states
        num_directions = 2 if config.bidirectional else 1
        input_size = config.embedding_size if layer_idx == 0 else config.hidden_size * num_directions
        rnn_kwargs = {"nonlinearity": config.nonlinearity} if config.model_type == "rnn" else {}
        self.rnn = RECURRENT_MODULES[config.model_type](
            input_size, config.hidden_size, batch_first=True, bidirectional=config.bidirectional, **rnn_kwargs
        )
        self.input_dropout = LockedDropout(config.input_dropout if layer_idx == 0 else config.hidden_dropout)
        self.weight_dropout = config.weight_dropout

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: "RecurrentCache | None" = None,
    ) -> torch.Tensor:
        if self.training:  # generation calls this once per token: skip even the module call when it is a no-op
            hidden_states = self.input_dropout(hidden_states)
        initial_states = cache.layer_state(self.layer_idx) if cache is not None else None
        if initial_states is not None and self.can_step_without_module_call(hidden_states, attention_mask):
            final_states = self.cell_step(hidden_states[:, 0], initial_states)
            cache.update_layer_state(self.layer_idx, final_states)
            return final_states[0].unsqueeze(1)
        hx = None
        if initial_states is not None:
            states = tuple(state.unsqueeze(0) for state in initial_states)
            if torch.is_grad_enabled():  # copies, so that the in-place write of the new state spares the old one
                states = tuple(state.clone() for state in states)
            hx = states if self.num_states == 2 else states[0]
        output, final_state = self.run_recurrence(hidden_states, attention_mask, hx)
        if cache is not None:
            final_states = final_state if isinstance(final_state, tuple) else (final_state,)
            cache.update_layer_state(self.layer_idx, tuple(state[0] for state in final_states))
        return output

    def can_step_without_module_call(self, hidden_states, attention_mask) -> bool:
        """Whether a step can go to torch's cell function directly (`cell_step`): one token of generation (no padding,
        no gradient, no autocast) of a float kernel module, and nothing that the module call would run and this would
        skip: no hook on that module and no global hook. A hook there sends the step through the module call."""
        rnn = self.rnn
        return (
            isinstance(rnn, nn.RNNBase)  # not torch's int8 layers, which keep their weights packed
            and hidden_states.shape[1] == 1
            and attention_mask is None
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled(hidden_states.device.type)
            and not (rnn._forward_hooks or rnn._forward_pre_hooks)
            and not (module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks)
        )

    def cell_step(self, inputs, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One time step of the kernel module's own weights through torch's cell function (`torch.lstm_cell` and its
        kin: the single-step kernels that `nn.LSTMCell` calls), on (batch, hidden) states as the cache keeps them,
        without the module's per-call Python (argument checks, weight flattening, reshaping): this is what a
        decoding step of `generate()` runs. Returns the new states; the output is the first."""
        rnn = self.rnn
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        if isinstance(rnn, nn.LSTM):
            return torch.lstm_cell(inputs, states, *weights)
        if isinstance(rnn, nn.GRU):
            return (torch.gru_cell(inputs, states[0], *weights),)
        cell = torch.rnn_tanh_cell if rnn.nonlinearity == "tanh" else torch.rnn_relu_cell
        return (cell(inputs, states[0], *weights),)

    def run_recurrence(self, inputs, attention_mask, hx):
        """Run the kernel; rows with padding run packed so that padding never touches the state, wherever it sits."""
        rnn = self.rnn
        if self.training and self.weight_dropout > 0:
            # DropConnect on hidden-to-hidden weights (Wan et al. 2013; AWD-LSTM), still through the fused kernel.
            dropped = {
                name: nn.functional.dropout(weight, self.weight_dropout, training=True)
                for name, weight in self.rnn.named_parameters()
                if name.startswith("weight_hh")
            }

            def rnn(*args):
                return functional_call(self.rnn, dropped, args)

        if attention_mask is None:
            if inputs.shape[1] == 1 and inputs.device.type == "cpu":
                return run_one_cpu_step(rnn, inputs, hx)
            return rnn(inputs, hx)

        is_real = attention_mask.bool()
        lengths = is_real.sum(dim=1)
        # Real tokens first, in their order: left, right or scattered padding all become right padding.
        order = torch.argsort((~is_real).to(torch.uint8), dim=1, stable=True)
        gathered = inputs.gather(1, order.unsqueeze(-1).expand_as(inputs))
        packed = pack_padded_sequence(gathered, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        packed_output, final_state = rnn(packed, hx)
        output, _ = pad_packed_sequence(packed_output, batch_first=True, total_length=inputs.size(1))
        output = torch.zeros_like(output).scatter(1, order.unsqueeze(-1).expand_as(output), output)
        empty_rows = lengths == 0
        if bool(empty_rows.any()):
            # A row of padding alone outputs zeros and keeps its state (the kernel needs at least one step per row).
            output = output.masked_fill(~is_real.unsqueeze(-1), 0.0)
            final_state = keep_initial_state(final_state, hx, empty_rows)
        return output, final_state


def run_one_cpu_step(rnn, inputs, hx):
    """One time step on CPU, as generation runs, through torch's native kernel rather than oneDNN's.

    oneDNN's LSTM is 2-3x faster over whole sequences but costs up to 14x more for a single step (one layer of 462
    units on one thread: 1.84 ms against 0.13 ms), so decoding would pay that at every token."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        return rnn(inputs, hx)
    finally:
        torch.backends.mkldnn.enabled = enabled


def keep_initial_state(final_state, initial_state, rows: torch.Tensor):
    """The final state, except for `rows`, which get the initial state back (zeros when there was none)."""
    finals = final_state if isinstance(final_state, tuple) else (final_state,)
    if initial_state is None:
        initials = tuple(torch.zeros_like(state) for state in finals)
    else:
        initials = initial_state if isinstance(initial_state, tuple) else (initial_state,)
    kept = tuple(
        torch.where(rows.view(1, -1, 1), initial, final) for initial, final in zip(initials, finals, strict=True)
    )
    return kept if isinstance(final_state, tuple) else kept[0]


class RecurrentPreTrainedModel(PreTrainedModel):
    config: RecurrentConfig
    config_class = RecurrentConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RecurrentLayer", "MinRNNBlock"]
    _is_stateful = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config, with an `auto_map` that covers every head of the family, and the code files it
        names, so that the folder loads with `trust_remote_code=True` where hf_evolution is not installed.

        The files are copied here rather than by marking the classes as remote code (`_auto_class`): that mark
        makes `generate()` inspect the forward signature at every step."""
        self.config.auto_map = remote_code_auto_map(type(self.config), type(self).__module__)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            custom_object_save(self, save_directory)
        return result

    def _init_weights(self, module):
        """Recurrent-network initialisation: orthogonal recurrent weights keep the state's norm through time, forget-gate
        bias 1 lets an LSTM remember by default (Jozefowicz et al. 2015), uniform embeddings and output layers."""
        bound = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, tuple(RECURRENT_MODULES.values())):
            init_recurrent_weights(
                module,
                GATES_PER_FAMILY[self.config.model_type],
                is_lstm=isinstance(module, nn.LSTM),
                orthogonal=self.config.recurrent_initialization == "orthogonal",
            )


def init_recurrent_weights(module: nn.RNNBase, num_gates: int, is_lstm: bool, orthogonal: bool) -> None:
    """`orthogonal`, or else torch's own `reset_parameters` (everything uniform in +-1/sqrt(hidden_size))."""
    hidden_size = module.hidden_size
    input_bound = 1 / math.sqrt(hidden_size)
    for name, param in module.named_parameters():
        # Slices lose the flag that marks weights loaded from a checkpoint, so check it on the whole tensor.
        if getattr(param, "_is_hf_initialized", False):
            continue
        if name.startswith("weight_ih") or not orthogonal:
            init.uniform_(param, -input_bound, input_bound)
        elif name.startswith("weight_hh"):
            for gate in range(num_gates):
                init.orthogonal_(param[gate * hidden_size : (gate + 1) * hidden_size])
        else:
            init.zeros_(param)
            if is_lstm and name.startswith("bias_ih"):
                # torch orders the LSTM gates input, forget, cell, output.
                init.constant_(param[hidden_size : 2 * hidden_size], 1.0)


@dataclass
class Step:
    """What one forward call runs through the layers, as `RecurrentModel.prepare_step` works it out."""

    hidden_states: torch.Tensor  # the tokens to feed, embedded: (batch, length, embedding_size)
    attention_mask: torch.Tensor | None  # their mask columns; None when no token is padding: plain kernels
    cache: RecurrentCache | None  # the state to continue from and update in place; None: from zeros, nothing kept


class RecurrentModel(RecurrentPreTrainedModel):
    """Embeddings and stacked recurrent layers; returns the hidden states of the last layer (both directions joined)."""

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList([RecurrentLayer(config, idx) for idx in range(config.num_hidden_layers)])
        self.norm = None  # the classic layers need no final norm; minGRU and minLSTM end with a LayerNorm
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    @property
    def output_size(self) -> int:
        """Width of the hidden states the model returns: the state of the last layer, both directions joined."""
        return self.config.hidden_size * (2 if self.config.bidirectional else 1)

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Embedding dropout drops whole word types for a step (Gal & Ghahramani 2016), not single coordinates."""
        p = self.config.embedding_dropout
        if not self.training or p == 0:
            return self.embeddings(input_ids)
        weight = self.embeddings.weight
        keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        return nn.functional.embedding(input_ids, weight * keep)

    def check_input_ids(self, input_ids: torch.LongTensor) -> None:
        """Fail with the offending id instead of an IndexError from inside the embedding.

        The values are read on CPU tensors only: reading them on an accelerator would wait for the device at every
        call, and so at every decoding step; `generate()` checks its prompt there once (see `check_token_ids`)."""
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(f"`input_ids` must hold integer token ids, got a tensor of {input_ids.dtype}.")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, sequence), got {tuple(input_ids.shape)}.")
        if input_ids.numel() == 0:
            raise ValueError(
                f"Empty input: `input_ids` has shape {tuple(input_ids.shape)}; give at least one token per sequence."
            )
        if input_ids.device.type == "cpu":
            check_token_ids(input_ids, self.embeddings.num_embeddings)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for real tokens, 0 for padding. Padding (left, right or anywhere) never changes the recurrent state and
            gets zero outputs. With a cache, the mask may cover the cached tokens too; its last columns are used.
        cache (`Cache`, *optional*):
            Recurrent state after earlier tokens: the model continues from it as if those tokens preceded `input_ids`.
        use_cache (`bool`, *optional*):
            Return the state after the last token in `cache` (defaults to `config.use_cache` outside training).
        """
        step = self.prepare_step(input_ids, attention_mask, inputs_embeds, cache, use_cache)
        hidden_states, all_hidden_states = self.run_layers(step, output_hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, cache=step.cache, hidden_states=all_hidden_states
        )

    def prepare_step(self, input_ids, attention_mask, inputs_embeds, cache, use_cache) -> Step:
        """What this forward call runs through the layers: the one place that reads a call's inputs, for every family
        and head, a prompt and a decoding step of `generate()` alike (`prepare_inputs_for_generation` picks the tokens
        of each call). Checks them so that a mistake fails here, by name, rather than deep inside torch."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            self.check_input_ids(input_ids)
            inputs_embeds = self.embed(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[0] * inputs_embeds.shape[1] == 0:
            raise ValueError(
                "`inputs_embeds` must be a non-empty (batch, sequence, embedding) tensor, "
                f"got {tuple(inputs_embeds.shape)}."
            )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and not self.config.bidirectional
        if use_cache and self.config.bidirectional:
            raise ValueError(
                "A bidirectional model has no state to carry forward (its backward direction needs the whole sequence); "
                "call it with `use_cache=False`."
            )
        if use_cache and cache is None:
            cache = RecurrentCache(self.config)
        if cache is not None:
            check_cache(cache, inputs_embeds.shape[0])
        attention_mask = self.align_attention_mask(attention_mask, inputs_embeds.shape[:2], cache)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: every layer takes the plain kernel, checked once here
        return Step(inputs_embeds, attention_mask, cache if use_cache else None)

    def run_layers(self, step: Step, output_hidden_states: bool | None = None):
        """The layers over a prepared step, then the final norm of the families that have one: the last hidden states
        and, if asked, those of the embeddings and of every layer (the last one normed)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden_states = step.hidden_states
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=step.attention_mask, cache=step.cache)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        if step.cache is not None:
            step.cache.seen_tokens += hidden_states.shape[1]
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
            if step.attention_mask is not None:  # padding keeps its zero outputs
                hidden_states = hidden_states.masked_fill(~step.attention_mask.bool().unsqueeze(-1), 0.0)
            if output_hidden_states:
                all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return hidden_states, all_hidden_states

    @staticmethod
    def align_attention_mask(attention_mask, input_shape, cache):
        """The mask columns of the tokens in this call; `generate()` passes the mask of the whole sequence so far."""
        if attention_mask is None:
            return None
        batch_size, seq_length = input_shape
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch_size:
            raise ValueError(
                f"`attention_mask` must have shape (batch={batch_size}, length), got {tuple(attention_mask.shape)}."
            )
        mask_length = attention_mask.shape[1]
        has_state = cache is not None and cache.seen_tokens > 0
        if mask_length < seq_length or (mask_length > seq_length and not has_state):
            raise ValueError(
                f"`attention_mask` covers {mask_length} tokens but the input has {seq_length}; give one mask column per "
                "token (or, when continuing from a cache, the mask of the whole sequence)."
            )
        return attention_mask[:, -seq_length:]


class RecurrentForCausalLM(RecurrentPreTrainedModel, GenerationMixin):
    """A recurrent language model. The output layer shares the input embeddings when `tie_word_embeddings` is set,
    behind a projection if `hidden_size != embedding_size`."""

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    backbone_class = RecurrentModel

    def __init__(self, config: RecurrentConfig):
        if config.bidirectional:
            raise ValueError(
                "A causal language model cannot be bidirectional: the backward direction would read the tokens it must "
                "predict. Set `bidirectional=False`, or use a classification head."
            )
        super().__init__(config)
        self.model = self.backbone_class(config)
        self.output_dropout = LockedDropout(config.hidden_dropout)
        output_size = self.model.output_size
        head_size = config.embedding_size if config.tie_word_embeddings else output_size
        self.output_projection = nn.Linear(output_size, head_size, bias=False) if head_size != output_size else None
        self.lm_head = nn.Linear(head_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def generate(self, inputs=None, *args, **kwargs):
        """`GenerationMixin.generate`, after two things that only the caller's own arguments tell.

        The prompt's token ids are checked once on an accelerator, where the forward does not read them (that would
        wait for the device at every step). With a cache to continue from, the number of given tokens its state has
        not read is worked out here (`unread_tokens`): generate() drops an all-ones mask, and with it the length that
        says whether `input_ids` is the whole sequence so far or only its new tokens (as with GPT-2, both work)."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(prompt, torch.Tensor) and not prompt.is_floating_point():
            if prompt.device.type != "cpu":
                check_token_ids(prompt, self.config.vocab_size)
            cache, mask = kwargs.get("cache"), kwargs.get("attention_mask")
            if isinstance(cache, RecurrentCache) and cache.seen_tokens > 0 and kwargs.get("inputs_embeds") is None:
                mask_length = prompt.shape[-1] if mask is None else mask.shape[-1]
                kwargs["unread_tokens"] = count_unread_tokens(prompt.shape[-1], mask_length, cache.seen_tokens)
        return super().generate(inputs, *args, **kwargs)

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size, *args):
        """The one private `GenerationMixin` hook overridden here: transformers has no public way to give generate() a
        cache class of the model's own, and its default `DynamicCache` lacks what `RecurrentCache` adds.

        generate() keeps its state in a `RecurrentCache`: a new one, or a copy of the one it is given, so that that
        one stays as it was and can seed several continuations (a recurrent state cannot be rewound like a KV cache);
        the copy repeats each row for beams and returned sequences."""
        cache = model_kwargs.get("cache")
        if cache is not None:
            expand = max(generation_config.num_beams or 1, generation_config.num_return_sequences or 1)
            check_cache(cache, cache.batch_size or batch_size)
            if cache.batch_size not in (None, batch_size, batch_size * expand):
                raise ValueError(
                    f"The cache holds the state of {cache.batch_size} sequences but generate() was given {batch_size}; "
                    "continue from a cache with the batch it was made for."
                )
            model_kwargs["cache"] = cache.copy(expand if cache.batch_size == batch_size else 1)
        elif generation_config.use_cache is not False:
            model_kwargs["cache"] = RecurrentCache(self.config)
        return super()._prepare_cache_for_generation(
            generation_config, model_kwargs, generation_mode, batch_size, *args
        )

    def prepare_inputs_for_generation(
        self,
        input_ids,
        next_sequence_length=None,
        cache=None,
        attention_mask=None,
        inputs_embeds=None,
        is_first_iteration=False,
        unread_tokens=None,
        **kwargs,
    ):
        """The tokens each forward call of generate() feeds.

        After the prompt, the one token generate() just appended. It is never padding, and the state skipped the
        prompt's padding, so it goes without a mask (as in Mamba) and every layer takes its plain kernel; the parent's
        general work (input cloning, mask creation, remote-code checks) is skipped too, as it costs about as much as
        a small model's step. Continuing from a cache, the prompt is cut to the tokens its state has not read
        (`unread_tokens`, from `generate`): transformers cuts it by the cache length for KV caches only."""
        if cache is not None and not is_first_iteration and next_sequence_length == 1:
            step_ids = input_ids[:, -1:]
            device = self.model.embeddings.weight.device
            model_inputs = {
                "input_ids": step_ids if step_ids.device == device else step_ids.to(device),
                "cache": cache,
            }
            model_inputs.update((key, value) for key, value in kwargs.items() if key != "labels")
            return model_inputs
        if is_first_iteration and unread_tokens is not None and cache is not None and cache.seen_tokens > 0:
            next_sequence_length = unread_tokens
        return super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )

    def activation_penalties(self, raw, dropped, labels, num_items_in_batch=None) -> torch.Tensor | float:
        """AR and TAR (Merity et al. 2018): keep the last layer's outputs small and slowly changing. With gradient
        accumulation (`num_items_in_batch`), each micro-batch weighs by its share of the tokens, as the loss does."""
        alpha, beta = self.config.activation_regularization, self.config.temporal_activation_regularization
        if alpha == 0 and beta == 0:
            return 0.0
        penalty = alpha * dropped.pow(2).mean() if alpha else 0.0
        if beta and raw.shape[1] > 1:
            penalty = penalty + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
        if num_items_in_batch is not None:
            penalty = penalty * labels.numel() / num_items_in_batch
        return penalty

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Target token ids; shifted inside the model, so `labels = input_ids` works. -100 is ignored.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            Compute logits for the last `logits_to_keep` positions only (0 keeps all), as `generate()` asks.
        """
        # Through the backbone's module call, so that hooks on it (accelerate's device placement, feature extraction)
        # run for the prompt and every decoding step alike.
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        raw = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        hidden_states = self.output_dropout(raw) if self.training else raw
        dropped = hidden_states
        if self.output_projection is not None:
            hidden_states = self.output_projection(hidden_states)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            if self.training:
                loss = loss + self.activation_penalties(raw, dropped, labels, kwargs.get("num_items_in_batch"))
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )


def count_unread_tokens(length: int, mask_length: int, seen: int) -> int:
    """How many of `length` given tokens a state that has read `seen` has not: all of them when the mask is longer
    (it covers the cached tokens too: only the new tokens were given), else those past `seen` (the whole sequence)."""
    if mask_length == length:  # the whole sequence so far
        if length <= seen:
            raise ValueError(
                f"The cache already holds {seen} tokens but `input_ids` and `attention_mask` cover {length}. Pass "
                "the whole sequence so far (e.g. `output.sequences`), or only the new tokens together with the "
                "attention mask of the whole sequence."
            )
        return length - seen
    if mask_length != seen + length:
        raise ValueError(
            f"The cache holds {seen} tokens and `input_ids` has {length} new ones, but `attention_mask` covers "
            f"{mask_length}; give the mask of the whole sequence ({seen + length} columns)."
        )
    return length


def pool_sequence(hidden_states, attention_mask, mode: str, bidirectional: bool) -> torch.Tensor:
    """Summarise each sequence over its real tokens only ("last", "mean" or "max")."""
    if attention_mask is None:
        attention_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
    is_real = attention_mask.bool().unsqueeze(-1)
    if mode == "mean":
        return (hidden_states * is_real).sum(dim=1) / is_real.sum(dim=1).clamp(min=1)
    if mode == "max":  # a row of padding alone pools to zeros, as "mean" gives, not to the dtype's minimum
        pooled = hidden_states.masked_fill(~is_real, torch.finfo(hidden_states.dtype).min).max(dim=1).values
        return pooled.masked_fill(~is_real.any(dim=1), 0.0)
    positions = torch.arange(attention_mask.shape[1], device=hidden_states.device)
    rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
    last = (positions * attention_mask.bool()).argmax(dim=1)
    if not bidirectional:
        return hidden_states[rows, last]
    # The forward direction has read the sequence at its last real token, the backward one at its first.
    first = attention_mask.bool().int().argmax(dim=1)
    half = hidden_states.shape[-1] // 2
    return torch.cat([hidden_states[rows, last, :half], hidden_states[rows, first, half:]], dim=-1)


def mask_from_padding(input_ids, attention_mask, pad_token_id):
    """Without a mask, take padding from the pad token, as GPT-2's classification heads do."""
    if attention_mask is None and input_ids is not None and pad_token_id is not None:
        return input_ids.ne(pad_token_id).long()
    return attention_mask


class RecurrentEncoderWithClassifier(RecurrentPreTrainedModel):
    """What the sequence and token classification heads share: the encoder, dropout and a linear classifier over
    the hidden states of both directions."""

    backbone_class = RecurrentModel

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = self.backbone_class(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.model.output_size, config.num_labels)
        self.post_init()

    def encode(self, input_ids, attention_mask, inputs_embeds, output_hidden_states):
        """The encoder's outputs and the mask that marks padding (from the pad token when none is given)."""
        attention_mask = mask_from_padding(input_ids, attention_mask, self.config.pad_token_id)
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
        )
        return outputs, attention_mask


class RecurrentForSequenceClassification(RecurrentEncoderWithClassifier):
    """A recurrent encoder with a classification (or regression) head on a pooled summary of each sequence."""

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices in `[0, num_labels)`; float targets for regression when `num_labels == 1`.
        """
        outputs, attention_mask = self.encode(input_ids, attention_mask, inputs_embeds, output_hidden_states)
        pooled = pool_sequence(
            outputs.last_hidden_state, attention_mask, self.config.classifier_pooling, self.config.bidirectional
        )
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class RecurrentForTokenClassification(RecurrentEncoderWithClassifier):
    """A recurrent encoder with a label for every token (tagging, NER); bidirectional models see both contexts."""

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            A label index per token; -100 marks tokens without a label (padding, special tokens, sub-words).
        """
        outputs, _ = self.encode(input_ids, attention_mask, inputs_embeds, output_hidden_states)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, config=self.config, **kwargs)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# Each family gets its own classes so that it has its own `model_type` in the Auto* mappings and on the Hub.
class RNNModel(RecurrentModel):
    config_class = RNNConfig


class RNNForCausalLM(RecurrentForCausalLM):
    config_class = RNNConfig


class RNNForSequenceClassification(RecurrentForSequenceClassification):
    config_class = RNNConfig


class RNNForTokenClassification(RecurrentForTokenClassification):
    config_class = RNNConfig


class LSTMModel(RecurrentModel):
    config_class = LSTMConfig


class LSTMForCausalLM(RecurrentForCausalLM):
    config_class = LSTMConfig


class LSTMForSequenceClassification(RecurrentForSequenceClassification):
    config_class = LSTMConfig


class LSTMForTokenClassification(RecurrentForTokenClassification):
    config_class = LSTMConfig


class GRUModel(RecurrentModel):
    config_class = GRUConfig


class GRUForCausalLM(RecurrentForCausalLM):
    config_class = GRUConfig


class GRUForSequenceClassification(RecurrentForSequenceClassification):
    config_class = GRUConfig


class GRUForTokenClassification(RecurrentForTokenClassification):
    config_class = GRUConfig


__all__ = [
    "RecurrentCache",
    "RecurrentPreTrainedModel",
    "RecurrentModel",
    "RecurrentForCausalLM",
    "RecurrentForSequenceClassification",
    "RecurrentForTokenClassification",
    "RNNModel",
    "RNNForCausalLM",
    "RNNForSequenceClassification",
    "RNNForTokenClassification",
    "LSTMModel",
    "LSTMForCausalLM",
    "LSTMForSequenceClassification",
    "LSTMForTokenClassification",
    "GRUModel",
    "GRUForCausalLM",
    "GRUForSequenceClassification",
    "GRUForTokenClassification",
]
