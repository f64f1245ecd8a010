"""hf_evolution: vanilla RNN, LSTM and GRU, and minGRU and minLSTM, as first-class transformers models.

Importing the package registers every configuration and head with the `Auto*` classes, so that
`AutoModelForCausalLM.from_config(LSTMConfig(...))`, `from_pretrained(folder)` and `pipeline(...)` work as for GPT-2.
"""

import os

# OpenMP threads that spin while they wait make torch's CPU RNN kernels up to 27x slower as soon as another process
# holds a core (an LSTM training step: 4.2 s instead of 0.16 s); passive waiting removes that. It only takes effect
# when set before torch loads (as for the `hf-evolution` command), and a value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_minrnn import MinGRUConfig, MinLSTMConfig, MinRNNConfig  # noqa: E402
from .configuration_recurrent import GRUConfig, LSTMConfig, RecurrentConfig, RNNConfig  # noqa: E402
from .modeling_minrnn import (  # noqa: E402
    MinGRUForCausalLM,
    MinGRUForSequenceClassification,
    MinGRUForTokenClassification,
    MinGRUModel,
    MinLSTMForCausalLM,
    MinLSTMForSequenceClassification,
    MinLSTMForTokenClassification,
    MinLSTMModel,
    MinRNNForCausalLM,
    MinRNNForSequenceClassification,
    MinRNNForTokenClassification,
    MinRNNModel,
)
from .modeling_recurrent import (  # noqa: E402
    GRUForCausalLM,
    GRUForSequenceClassification,
    GRUForTokenClassification,
    GRUModel,
    LSTMForCausalLM,
    LSTMForSequenceClassification,
    LSTMForTokenClassification,
    LSTMModel,
    RecurrentCache,
    RecurrentForCausalLM,
    RecurrentForSequenceClassification,
    RecurrentForTokenClassification,
    RecurrentModel,
    RecurrentPreTrainedModel,
    RNNForCausalLM,
    RNNForSequenceClassification,
    RNNForTokenClassification,
    RNNModel,
)

__version__ = "0.1.0"

# Per family: the configuration, then its heads in the order of `AUTO_CLASSES`.
FAMILIES = {
    "rnn": (RNNConfig, RNNModel, RNNForCausalLM, RNNForSequenceClassification, RNNForTokenClassification),
    "lstm": (LSTMConfig, LSTMModel, LSTMForCausalLM, LSTMForSequenceClassification, LSTMForTokenClassification),
    "gru": (GRUConfig, GRUModel, GRUForCausalLM, GRUForSequenceClassification, GRUForTokenClassification),
    "mingru": (
        MinGRUConfig,
        MinGRUModel,
        MinGRUForCausalLM,
        MinGRUForSequenceClassification,
        MinGRUForTokenClassification,
    ),
    "minlstm": (
        MinLSTMConfig,
        MinLSTMModel,
        MinLSTMForCausalLM,
        MinLSTMForSequenceClassification,
        MinLSTMForTokenClassification,
    ),
}
AUTO_CLASSES = (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification)

for _model_type, (_config_class, *_heads) in FAMILIES.items():
    AutoConfig.register(_model_type, _config_class, exist_ok=True)
    for _auto_class, _head in zip(AUTO_CLASSES, _heads, strict=True):
        _auto_class.register(_config_class, _head, exist_ok=True)

__all__ = [
    "RecurrentConfig",
    "RNNConfig",
    "LSTMConfig",
    "GRUConfig",
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
    "MinRNNConfig",
    "MinGRUConfig",
    "MinLSTMConfig",
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
    "FAMILIES",
]
