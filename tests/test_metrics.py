import math
import shutil

import datasets
import evaluate
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)

from hf_evolution.data import tokenize_for_classification
from hf_evolution.metrics import (
    METRIC_NAMES,
    classification_compute_metrics,
    lm_metrics,
    load_metric,
    metric_path,
)
from hf_evolution.tokenization import train_tokenizer


def test_perplexity_is_exp_of_the_mean_token_loss():
    assert load_metric("perplexity").compute(losses=[0.5, 1.5, 2.5]) == {"perplexity": pytest.approx(math.exp(1.5))}


def test_perplexity_from_logits_ignores_minus_100_and_shifts_for_causal_lms():
    probabilities = [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]
    logits = np.log([probabilities])  # softmax(log p) = p, so each loss is -log p of the label
    labels = [[-100, 0, 1, -100]]
    perplexity = load_metric("perplexity")
    # Causal: position t predicts label t + 1, so p(0) = 0.5 at t = 0, p(1) = 0.8 at t = 1; the last is ignored.
    shifted = perplexity.compute(logits=logits, labels=labels)["perplexity"]
    assert shifted == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.8)) / 2))
    # Aligned: position t predicts label t: p(0) = 0.1 at t = 1, p(1) = 0.2 at t = 2.
    aligned = perplexity.compute(logits=logits, labels=labels, causal_shift=False)["perplexity"]
    assert aligned == pytest.approx(math.exp(-(math.log(0.1) + math.log(0.2)) / 2))


def test_perplexity_accumulates_batches_of_logits():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(4, 6, 5)), rng.integers(0, 5, size=(4, 6))
    perplexity = load_metric("perplexity")
    for batch in range(0, 4, 2):
        perplexity.add_batch(logits=logits[batch : batch + 2], labels=labels[batch : batch + 2])
    assert perplexity.compute() == pytest.approx(load_metric("perplexity").compute(logits=logits, labels=labels))


def test_bits_per_byte_is_the_same_for_two_tokenizations_of_the_same_text():
    text = "abcdefgh"
    bits_per_byte = load_metric("bits_per_byte")
    # Characters, each with probability 1/2, or pairs of characters, each with probability 1/4.
    characters = bits_per_byte.compute(losses=[math.log(2)] * 8, num_bytes=len(text.encode()))
    pairs = bits_per_byte.compute(losses=[math.log(4)] * 4, num_bytes=len(text.encode()))
    assert characters == pairs == {"bits_per_byte": pytest.approx(1.0)}
    # The same through logits: uniform over a vocabulary of 2 (characters) and of 4 (pairs).
    from_characters = bits_per_byte.compute(logits=np.zeros((8, 2)), labels=[0] * 8, causal_shift=False, num_bytes=8)
    from_pairs = bits_per_byte.compute(logits=np.zeros((4, 4)), labels=[3] * 4, causal_shift=False, num_bytes=8)
    assert from_characters["bits_per_byte"] == pytest.approx(1.0) == from_pairs["bits_per_byte"]


def test_bits_per_byte_asks_for_num_bytes():
    with pytest.raises(ValueError, match="needs num_bytes="):
        load_metric("bits_per_byte").compute(losses=[1.0])


def test_metrics_combine_with_evaluate_combine():
    language_model = evaluate.combine([metric_path("perplexity"), metric_path("bits_per_byte")])
    assert language_model.compute(losses=[math.log(2)] * 8, num_bytes=8) == {
        "perplexity": pytest.approx(2.0),
        "bits_per_byte": pytest.approx(1.0),
    }


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_each_metric_loads_from_a_copy_of_its_file_alone(tmp_path, name):
    (tmp_path / name).mkdir()
    shutil.copy(f"{metric_path(name)}/{name}.py", tmp_path / name / f"{name}.py")
    assert isinstance(evaluate.load(str(tmp_path / name)), evaluate.Metric)


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown metric 'bleu'; the offline metrics are \("):
        metric_path("bleu")


def test_lm_metrics_turns_eval_loss_into_perplexity_and_bits_per_byte():
    assert lm_metrics(2.0, num_tokens=1000, num_bytes=4000) == {
        "perplexity": pytest.approx(math.exp(2.0)),
        "bits_per_byte": pytest.approx(2.0 * 1000 / (math.log(2) * 4000)),
    }


def test_classification_compute_metrics_by_hand():
    # Predictions 0, 1, 2, 2 for labels 0, 1, 1, 2: per-class F1 1, 2/3, 2/3; macro is their mean, micro equals accuracy.
    logits = np.eye(3)[[0, 1, 2, 2]][None]
    metrics = classification_compute_metrics()(EvalPrediction(predictions=logits, label_ids=np.array([[0, 1, 1, 2]])))
    assert metrics == {"accuracy": 0.75, "f1_macro": pytest.approx(7 / 9), "f1_micro": 0.75}


def test_classification_compute_metrics_skips_minus_100_for_token_classification():
    logits = np.array([[[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]], [[0.0, 2.0], [2.0, 0.0], [2.0, 0.0]]])
    labels = np.array([[-100, 1, 0], [1, 0, -100]])  # predictions 1, 1 | 1, 0 where labels are 1, 0 | 1, 0
    metrics = classification_compute_metrics()(EvalPrediction(predictions=logits, label_ids=labels))
    assert metrics == {
        "accuracy": 0.75,
        "f1_macro": pytest.approx(f1_score([1, 0, 1, 0], [1, 1, 1, 0], average="macro")),
        "f1_micro": 0.75,
    }


# The hooks inside Trainer, with tiny models built from config (no download).


def training_arguments(tmp_path):
    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        dataloader_pin_memory=False,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )


TOPIC_TEXTS = {0: "the match ended in a draw", 1: "shares fell on the market", 2: "the film won an award"}


@pytest.fixture(scope="module")
def tiny_texts():
    texts = [f"{text} {i}" for i in range(8) for text in TOPIC_TEXTS.values()]
    return datasets.Dataset.from_dict({"text": texts, "label": [label for _ in range(8) for label in TOPIC_TEXTS]})


def test_classification_compute_metrics_in_trainer(tmp_path, tiny_texts):
    tokenizer = train_tokenizer(tiny_texts, "char")
    encoded = tokenize_for_classification(tiny_texts, tokenizer, max_length=24)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=32,
        num_labels=3,
        pad_token_id=tokenizer.pad_token_id,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=training_arguments(tmp_path),
        train_dataset=encoded,
        eval_dataset=encoded,
        processing_class=tokenizer,
        compute_metrics=classification_compute_metrics(),
    )
    trainer.train()
    metrics = trainer.evaluate()
    predicted = trainer.predict(encoded).predictions.argmax(-1)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy_score(encoded["label"], predicted))
    assert metrics["eval_f1_macro"] == pytest.approx(f1_score(encoded["label"], predicted, average="macro"))
    assert metrics["eval_f1_micro"] == pytest.approx(f1_score(encoded["label"], predicted, average="micro"))
