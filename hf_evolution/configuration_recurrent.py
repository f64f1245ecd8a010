"""Configurations of the vanilla RNN, LSTM and GRU models.

The three families share one configuration (`RecurrentConfig`) and one implementation; each has its own class only so
that it has its own `model_type` ("rnn", "lstm", "gru") on the Hub, in `AutoConfig` and in `run_clm.py --model_type`.
Fields are checked the way transformers' own configs are: `@strict` (huggingface_hub) checks every value against its
annotation (a `Literal` lists the allowed values) and its validator, at construction and at every assignment. The
error names the field, and is a `ValueError` too (`InvalidConfigError`), as an invalid value has always raised. This file imports nothing but transformers and huggingface_hub so that
it can travel as remote code.
"""

import functools
import math
from typing import Literal, get_args

from huggingface_hub.dataclasses import as_validated_field, strict
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig

PoolingMode = Literal["last", "mean", "max"]
POOLING_MODES = get_args(PoolingMode)


def bounded(low: float, high: float = math.inf, *, above: bool = False):
    """A field whose number must lie in [low, high), or in (low, high) when `above`; None passes (optional fields)."""
    allowed = f"{'(' if above else '['}{low}, {high})"

    @as_validated_field
    def check(value):
        if value is not None and not ((low < value if above else low <= value) and value < high):
            raise ValueError(f"must be in {allowed}, got {value!r}.")

    return check


class InvalidConfigError(StrictDataclassError, ValueError):
    """A config value its field refuses: `@strict`'s error, and the `ValueError` a user's code may catch."""


def checked_config(cls):
    """`@strict`, with its errors raised as `InvalidConfigError` at construction, assignment and validation."""
    cls = strict(cls)
    for name in ("__init__", "__setattr__", "validate"):
        setattr(cls, name, raising_value_errors(getattr(cls, name)))
    return cls


def raising_value_errors(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except StrictDataclassError as error:
            if isinstance(error, ValueError):
                raise
            raise InvalidConfigError(str(error)) from error

    return wrapper


@checked_config
class RecurrentConfig(PreTrainedConfig):
    r"""
    Configuration of a recurrent language model or encoder. The defaults give a 2-layer, 512-unit network with tied
    embeddings and the regularisation that made recurrent language models strong (AWD-LSTM, Merity et al. 2018).

    Args:
        vocab_size (`int`, defaults to 32000): Number of tokens in the vocabulary.
        embedding_size (`int`, *optional*): Size of the token embeddings fed to the first layer; `hidden_size` if unset.
            When it differs from `hidden_size` and the embeddings are tied, the causal LM projects its hidden states to
            it before the output layer.
        hidden_size (`int`, defaults to 512): Size of the recurrent state of each layer (per direction).
        num_hidden_layers (`int`, defaults to 2): Number of stacked recurrent layers.
        bidirectional (`bool`, defaults to `False`): Run a second layer backwards in time. Encoder heads only
            (sequence and token classification, feature extraction); a causal LM refuses it.
        embedding_dropout (`float`, defaults to 0.0): Probability of dropping a whole word type from the embedding
            matrix for a training step ("embedding dropout").
        input_dropout (`float`, defaults to 0.1): Locked (variational) dropout on the embeddings: the same units are
            dropped at every time step of a sequence.
        hidden_dropout (`float`, defaults to 0.1): Locked dropout between layers and on the output of the last layer.
        weight_dropout (`float`, defaults to 0.0): DropConnect on the hidden-to-hidden weights, resampled every step.
        activation_regularization (`float`, defaults to 0.0): AR of AWD-LSTM (its alpha, 2 there): the causal LM's
            training loss gains `alpha * mean(h ** 2)` of the last layer's dropped-out outputs.
        temporal_activation_regularization (`float`, defaults to 0.0): TAR of AWD-LSTM (its beta, 1 there): the loss
            gains `beta * mean((h[t + 1] - h[t]) ** 2)` of the last layer's outputs before dropout.
        classifier_dropout (`float`, *optional*): Dropout before a classification head; `hidden_dropout` if unset.
        classifier_pooling (`str`, defaults to `"last"`): How the sequence classifier summarises a sequence: `"last"`
            (state after the last real token; with `bidirectional`, joined with the backward state at the first real
            token), `"mean"` or `"max"` over real tokens. Padding never takes part.
        tie_word_embeddings (`bool`, defaults to `True`): Share the input embeddings with the LM output layer.
        initializer_range (`float`, defaults to 0.3): Embeddings and output layers start uniform in
            `[-initializer_range, initializer_range]`. With the classic 0.1 the current token reaches the first
            recurrent layer as a pre-activation of about 0.02, drowned by the recurrent term: trained with AdamW, a
            vanilla RNN then stays on the unigram plateau, and gated ones leave it late (measured in the README).
        recurrent_initialization (`str`, defaults to `"orthogonal"`): How the recurrent layers start. `"orthogonal"`:
            orthogonal hidden-to-hidden weights, zero biases and, in an LSTM, forget-gate bias 1 (see `_init_weights`).
            `"torch"`: torch's own default, every weight and bias uniform in `[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]`,
            as PyTorch's word language model example trains them (in `benchmarks/classic_lm.py` it learned faster).
        use_cache (`bool`, defaults to `True`): Return the recurrent state so that generation feeds one token a step.
    """

    model_type = "recurrent"

    vocab_size: int = bounded(1)(default=32000)
    embedding_size: int | None = bounded(1)(default=None)
    hidden_size: int = bounded(1)(default=512)
    num_hidden_layers: int = bounded(1)(default=2)
    bidirectional: bool = False
    embedding_dropout: int | float = bounded(0, 1)(default=0.0)
    input_dropout: int | float = bounded(0, 1)(default=0.1)
    hidden_dropout: int | float = bounded(0, 1)(default=0.1)
    weight_dropout: int | float = bounded(0, 1)(default=0.0)
    activation_regularization: int | float = bounded(0)(default=0.0)
    temporal_activation_regularization: int | float = bounded(0)(default=0.0)
    classifier_dropout: int | float | None = bounded(0, 1)(default=None)
    classifier_pooling: PoolingMode = "last"
    tie_word_embeddings: bool = True
    initializer_range: int | float = bounded(0, above=True)(default=0.3)
    recurrent_initialization: Literal["orthogonal", "torch"] = "orthogonal"
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        super().__post_init__(**kwargs)

    def validate_token_ids(self):
        """Refuse special tokens outside the vocabulary (transformers only warns; the embedding lookup fails later)."""
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            ids = getattr(self, name)
            for token_id in ids if isinstance(ids, list) else [ids]:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"`{name}` must be a token id in [0, vocab_size={self.vocab_size}), got {token_id}."
                    )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """Refuse a checkpoint of another model type: transformers would only warn and load mismatched weights."""
        found = config_dict.get("model_type")
        if found is not None and found != cls.model_type:
            raise ValueError(
                f"This checkpoint holds a {found!r} model, which {cls.__name__} ({cls.model_type!r}) cannot load. "
                "Load it with the Auto classes (e.g. AutoModelForCausalLM.from_pretrained), which pick the right "
                f"class, or with the classes of {found!r}."
            )
        return super().from_dict(config_dict, **kwargs)

    @property
    def layer_types(self) -> list[str]:
        """Every layer keeps a fixed-size recurrent state, which `DynamicCache` stores as a linear-attention layer."""
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def number_of_conv_states(self) -> int:
        """States per layer in the cache: an LSTM carries (h, c), the others h alone."""
        return 2 if self.model_type == "lstm" else 1


@checked_config
class RNNConfig(RecurrentConfig):
    r"""
    Configuration of a vanilla (Elman) RNN. Takes every argument of [`RecurrentConfig`], plus:

    Args:
        nonlinearity (`str`, defaults to `"tanh"`): `"tanh"` or `"relu"`.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_evolution import RNNConfig
    >>> model = AutoModelForCausalLM.from_config(RNNConfig(vocab_size=1000, hidden_size=256))
    ```
    """

    model_type = "rnn"

    nonlinearity: Literal["tanh", "relu"] = "tanh"


@checked_config
class LSTMConfig(RecurrentConfig):
    r"""
    Configuration of an LSTM (Hochreiter & Schmidhuber 1997). Takes every argument of [`RecurrentConfig`].

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_evolution import LSTMConfig
    >>> model = AutoModelForCausalLM.from_config(LSTMConfig(vocab_size=1000, hidden_size=256))
    ```
    """

    model_type = "lstm"


@checked_config
class GRUConfig(RecurrentConfig):
    r"""
    Configuration of a GRU (Cho et al. 2014). Takes every argument of [`RecurrentConfig`].

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_evolution import GRUConfig
    >>> model = AutoModelForCausalLM.from_config(GRUConfig(vocab_size=1000, hidden_size=256))
    ```
    """

    model_type = "gru"


__all__ = ["RecurrentConfig", "RNNConfig", "LSTMConfig", "GRUConfig"]
