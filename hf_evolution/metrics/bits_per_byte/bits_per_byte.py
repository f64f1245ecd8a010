"""Bits per byte: the total loss of a text in bits divided by its UTF-8 bytes, sum(losses) / (ln 2 * num_bytes).

The denominator does not depend on the tokenizer, so BPE, word and character models evaluated on the same text
are comparable (perplexities are not). A word-level model maps rare words to <unk> and never pays for spelling
them, so its figure is a lower bound. This file is copied alone by ``evaluate``: it imports nothing from
hf_evolution.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Bits per UTF-8 byte = sum of token losses in nats / (ln 2 * number of UTF-8 bytes of the text)."""

_KWARGS_DESCRIPTION = """
Args:
    losses: token losses in nats over the whole text, flat (any grouping works: only their sum counts, so the
        mean loss times the number of tokens is fine too).
    logits, labels, causal_shift, ignore_index: instead of losses, as in the perplexity metric.
    num_bytes (required): UTF-8 bytes of the text the losses cover, len(text.encode("utf-8")).
Returns:
    bits_per_byte: sum(losses) / (ln 2 * num_bytes).
Examples:
    >>> bits_per_byte = evaluate.load("hf_evolution/metrics/bits_per_byte")
    >>> bits_per_byte.compute(losses=[math.log(2)] * 8, num_bytes=8)
    {'bits_per_byte': 1.0}
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


class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"losses": datasets.Value("float64")}),
        )

    # As in perplexity: store one loss per token, not a vocabulary-sized row of logits.
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
        if not num_bytes or num_bytes <= 0:
            raise ValueError(
                f"bits_per_byte needs num_bytes=, the positive UTF-8 byte count of the evaluated text "
                f"(got {num_bytes!r}); hf_evolution.data.corpus_stats gives it per split."
            )
        return {"bits_per_byte": float(np.sum(losses)) / (math.log(2) * num_bytes)}
