"""Configurations of minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Their gates read the input only, never the previous state, so a whole sequence trains as one parallel scan and
generation still carries a fixed-size state. They share every field of `RecurrentConfig` that applies to them and the
validation that comes with it. This file imports nothing but transformers, huggingface_hub and its sibling, so that it
travels as remote code.
"""

from typing import Literal

from .configuration_recurrent import RecurrentConfig, bounded, checked_config


@checked_config
class MinRNNConfig(RecurrentConfig):
    r"""
    Configuration of a minGRU or minLSTM language model or encoder, stacked as residual blocks the way the paper's
    language models are: `x + W_o minRNN(LayerNorm(x))`, then `x + FFN(LayerNorm(x))`, and a final LayerNorm.

    Takes the arguments of [`RecurrentConfig`], which mean here:

    Args:
        embedding_size (`int`, *optional*): Width of the residual stream (the token embeddings); `hidden_size` if unset.
        hidden_size (`int`, defaults to 512): Size of the recurrent state of each block, projected back to
            `embedding_size` by the block's output layer.
        hidden_dropout (`float`, defaults to 0.1): Dropout on each block's residual branches and on the last block's
            output.
        initializer_range (`float`, defaults to 0.02): Embeddings and linear layers start uniform in
            `[-initializer_range, initializer_range]`.
        intermediate_size (`int`, *optional*): Width of each block's feed-forward part; `4 * embedding_size` if unset.
        layer_norm_epsilon (`float`, defaults to 1e-5): Epsilon of the LayerNorms.

    The recurrence has no hidden-to-hidden weights and runs forward in time only, so `weight_dropout` must stay 0,
    `bidirectional` False and `recurrent_initialization` `"torch"` (torch's own initialisation of the linear layers).
    """

    model_type = "minrnn"

    initializer_range: int | float = bounded(0, above=True)(default=0.02)
    intermediate_size: int | None = bounded(1)(default=None)
    layer_norm_epsilon: int | float = bounded(0, above=True)(default=1e-5)
    # What the recurrence does not have: it runs forward in time only and has no hidden-to-hidden weights to drop or to
    # make orthogonal.
    bidirectional: Literal[False] = False
    weight_dropout: Literal[0, 0.0] = 0.0
    recurrent_initialization: Literal["torch"] = "torch"

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * (self.embedding_size or self.hidden_size)
        super().__post_init__(**kwargs)


@checked_config
class MinGRUConfig(MinRNNConfig):
    r"""
    Configuration of a minGRU: `h_t = (1 - z_t) * h_{t-1} + z_t * g(W_h x_t)` with `z_t = sigmoid(W_z x_t)`. Takes every
    argument of [`MinRNNConfig`].

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_evolution import MinGRUConfig
    >>> model = AutoModelForCausalLM.from_config(MinGRUConfig(vocab_size=1000, hidden_size=256))
    ```
    """

    model_type = "mingru"


@checked_config
class MinLSTMConfig(MinRNNConfig):
    r"""
    Configuration of a minLSTM: `h_t = f'_t * h_{t-1} + i'_t * g(W_h x_t)` with the forget and input gates
    `sigmoid(W_f x_t)`, `sigmoid(W_i x_t)` normalised to sum to one. Takes every argument of [`MinRNNConfig`].

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_evolution import MinLSTMConfig
    >>> model = AutoModelForCausalLM.from_config(MinLSTMConfig(vocab_size=1000, hidden_size=256))
    ```
    """

    model_type = "minlstm"


__all__ = ["MinRNNConfig", "MinGRUConfig", "MinLSTMConfig"]
