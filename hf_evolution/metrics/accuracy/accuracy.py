"""Accuracy: the fraction of predictions equal to their references (scikit-learn's accuracy_score).

An offline twin of the Hub's ``accuracy`` metric with the same inputs. This file is copied alone by
``evaluate``: it imports nothing from hf_evolution.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """Accuracy = correct predictions / all predictions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids.
    references: true class ids.
    normalize (default True): the fraction correct; False gives the count.
    sample_weight: optional weight per example.
Returns:
    accuracy.
Examples:
    >>> accuracy = evaluate.load("hf_evolution/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
