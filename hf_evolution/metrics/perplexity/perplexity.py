"""Perplexity from per-token losses, or from logits and labels: exp of the mean token loss in nats.

Unlike the Hub's ``perplexity`` metric this loads no model: it scores what the model already produced, so it
loads offline with ``evaluate.load(path)``. This file is copied alone by ``evaluate``: it imports nothing from
hf_evolution.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Perplexity = exp(mean per-token cross-entropy in nats)."""

_KWARGS_DESCRIPTION = """
Args:
    losses: per-token losses in nats, flat, one float per scored token (leave out ignored positions).
    logits: instead of losses, logits of shape (..., seq_len, vocab_size) ...
    labels: ... with labels of shape (..., seq_len); positions equal to ignore_index are not scored.
    causal_shift (default True): logits at position t predict the label at t + 1, as in a causal LM whose labels
        are its input_ids (GPT-2 convention). Set False when labels are already aligned with the logits (masked LM).
    ignore_index (default -100): the label value that marks positions to skip.
    num_bytes: accepted and ignored, so that evaluate.combine([perplexity, bits_per_byte]) can pass it.
Returns:
    perplexity: exp of the mean token loss.
Examples:
    >>> perplexity = evaluate.load("hf_evolution/metrics/perplexity")
    >>> perplexity.compute(losses=[1.0, 2.0, 3.0])
    {'perplexity': 7.38905609893065}
"""


def token_losses(logits, labels, causal_shift=True, ignore_index=-100):
    """Cross-entropy in nats of each scored label under softmax(logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if causal_shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    scored = labels != ignore_index
    logits, labels = logits[scored], labels[scored]
    top = logits.max(axis=-1)
    log_normalizer = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    return log_normalizer - logits[np.arange(len(labels)), labels]


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"losses": datasets.Value("float64")}),
        )

    # Logits are turned into token losses before evaluate stores them: a vocabulary-sized row per token
    # would cost far more memory and disk than one float.
    def add_batch(self, *, logits=None, labels=None, causal_shift=True, ignore_index=-100, **kwargs):
        """Add per-token losses, or logits with labels (turned into losses here)."""
        if logits is not None:
            kwargs["losses"] = token_losses(logits, labels, causal_shift, ignore_index)
        return super().add_batch(**kwargs)

    def compute(self, *, logits=None, labels=None, causal_shift=True, ignore_index=-100, **kwargs):
        """Compute from what was added plus these per-token losses, or logits with labels."""
        if logits is not None:
            kwargs["losses"] = token_losses(logits, labels, causal_shift, ignore_index)
        return super().compute(**kwargs)

    def _compute(self, losses, num_bytes=None):
        if len(losses) == 0:
            raise ValueError("No token losses to compute perplexity from (were all labels ignore_index?).")
        return {"perplexity": math.exp(float(np.mean(losses)))}
