"""Offline ``evaluate`` metrics of language models and the Trainer hooks for both tasks.

Perplexity and bits per byte are standalone modules in ``metrics/<name>/<name>.py`` that
``evaluate.load(metric_path(name))`` loads without the Hub, and that ``evaluate.combine`` accepts (the Hub's perplexity
downloads a model; ours takes losses or logits). Classification is scored with scikit-learn directly. The helpers below
plug into ``Trainer(compute_metrics=...)`` or turn ``Trainer.evaluate()``'s ``eval_loss`` into perplexity and bits per
byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction

METRIC_NAMES = ("bits_per_byte", "perplexity")


def metric_path(name: str) -> str:
    """Absolute path of the metric's module folder, for ``evaluate.load`` and ``evaluate.combine``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; the offline metrics are {METRIC_NAMES}.")
    return str(Path(__file__).resolve().parent / name)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` of one of :data:`METRIC_NAMES`, offline."""
    return evaluate.load(metric_path(name), **kwargs)


def classification_compute_metrics() -> Callable[[EvalPrediction], dict]:
    """``compute_metrics`` for sequence or token classification: accuracy, macro F1 and micro F1 (scikit-learn's).

    Predictions are the argmax of the logits; positions labelled -100 (special tokens, non-first subwords,
    padding) are left out, so the same hook serves token classification.
    """

    def compute_metrics(eval_prediction: EvalPrediction) -> dict:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):  # models that also return hidden states or attentions
            logits = logits[0]
        predictions = np.argmax(logits, axis=-1).reshape(-1)
        references = np.asarray(eval_prediction.label_ids).reshape(-1)
        scored = references != -100
        predictions, references = predictions[scored], references[scored]
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "f1_macro": float(f1_score(references, predictions, average="macro")),
            "f1_micro": float(f1_score(references, predictions, average="micro")),
        }

    return compute_metrics


def lm_metrics(eval_loss: float, num_tokens: int, num_bytes: int) -> dict:
    """Perplexity and bits per byte from a mean token loss (``Trainer.evaluate()["eval_loss"]``, in nats), as the
    ``perplexity`` and ``bits_per_byte`` metrics define them.

    ``num_tokens`` and ``num_bytes`` describe the evaluated text (:func:`hf_evolution.data.corpus_stats`); the
    total loss is taken as ``eval_loss * num_tokens``, i.e. tokens that packing dropped or could not score (a
    block's first token) are assumed to cost the mean.
    """
    return {"perplexity": math.exp(eval_loss), "bits_per_byte": eval_loss * num_tokens / (math.log(2) * num_bytes)}
