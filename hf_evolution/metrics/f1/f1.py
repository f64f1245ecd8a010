"""F1 score (scikit-learn's f1_score), macro-averaged over classes by default.

An offline twin of the Hub's ``f1`` metric with the same inputs, except that ``average`` defaults to
``"macro"`` instead of ``"binary"``: the corpora here have more than two classes. This file is copied alone
by ``evaluate``: it imports nothing from hf_evolution.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = """F1 = harmonic mean of precision and recall, averaged over classes as `average` says."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids.
    references: true class ids.
    average (default "macro"): "macro" (unweighted mean over classes), "micro" (from global counts; equals
        accuracy for single-label data), "weighted", "binary", or None for one score per class.
    labels: the classes to include (default: all that occur).
    pos_label (default 1): the positive class when average="binary".
    sample_weight: optional weight per example.
Returns:
    f1: a float, or a list with one score per class when average is None.
Examples:
    >>> f1 = evaluate.load("hf_evolution/metrics/f1")
    >>> f1.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'f1': 0.7777777777777777}
"""


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="macro", labels=None, pos_label=1, sample_weight=None):
        score = f1_score(
            references, predictions, average=average, labels=labels, pos_label=pos_label, sample_weight=sample_weight
        )
        return {"f1": score.tolist() if average is None else float(score)}
