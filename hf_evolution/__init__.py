"""hf_evolution: vanilla RNN, LSTM and GRU, and minGRU and minLSTM, as first-class transformers models.

Importing the package registers every configuration and head with the `Auto*` classes, so that
`AutoModelForCausalLM.from_config(LSTMConfig(...))`, `from_pretrained(folder)` and `pipeline(...)` work as for GPT-2.
"""

from .configuration_minrnn import MinGRUConfig, MinLSTMConfig, MinRNNConfig
from .configuration_recurrent import GRUConfig, LSTMConfig, RecurrentConfig, RNNConfig
from .families import FAMILIES, Family, register_with_auto_classes
from .modeling_minrnn import (
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
from .modeling_recurrent import (
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

for _family in FAMILIES.values():
    if _family.is_ours:
        register_with_auto_classes(_family)

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
    "Family",
]
