"""Stateful training (truncated BPTT over contiguous streams) and evaluation of whole splits as one stream."""

import numpy as np
import pytest
import torch
from conftest import make_model
from datasets import Dataset
from transformers import default_data_collator

from hf_evolution.data import batchify_for_lm, stream_rows, token_stream
from hf_evolution.evaluation import sliding_window_loss, stateful_loss
from hf_evolution.families import build_model
from hf_evolution.tokenization import train_tokenizer
from hf_evolution.training import EvolutionTrainer, EvolutionTrainingArguments
from hf_evolution.training.trainer import StreamSampler

STREAM = np.random.default_rng(0).integers(5, 320, size=403)


def full_row_loss(model, rows: np.ndarray) -> tuple[float, int]:
    """The hand loop: each row read in one forward pass, every token after the first scored."""
    ids = torch.as_tensor(rows, dtype=torch.long)
    logits = model(ids[:, :-1], use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
    return loss.item(), ids[:, 1:].numel()


@pytest.mark.parametrize("model_type", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("block_size", [1, 7, 35, 500])
def test_stateful_evaluation_equals_reading_each_row_at_once(model_type, block_size):
    model = make_model(model_type)
    total, count = stateful_loss(model, STREAM, block_size=block_size, rows=4)
    expected_total, expected_count = full_row_loss(model, stream_rows(STREAM, 4))
    assert count == expected_count == 4 * (len(STREAM) // 4 - 1)
    assert total == pytest.approx(expected_total, rel=1e-5)


def test_sliding_window_scores_every_token_once_with_the_most_context_a_window_gives(tiny_tokenizer):
    model = build_model("gpt2", "lm", "tiny", tiny_tokenizer).eval()
    stream = STREAM[:200]
    whole, whole_count = sliding_window_loss(model, stream, window=256, stride=128)
    expected, expected_count = full_row_loss(model, stream[None])
    assert whole_count == expected_count == 199 and whole == pytest.approx(expected, rel=1e-5)
    total, count = sliding_window_loss(model, stream, window=64, stride=16)
    assert count == 199 and total != pytest.approx(whole)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_loss(model, stream, window=16, stride=32)


def test_each_process_reads_its_own_streams_in_order():
    # 2 global batches of 3 rows per process and 2 processes: process 1 reads rows 3-5 then 9-11.
    assert list(StreamSampler(12, 3, world_size=2, rank=1)) == [3, 4, 5, 9, 10, 11]
    assert list(StreamSampler(13, 3, world_size=2, rank=0)) == [0, 1, 2, 6, 7, 8]
    assert list(StreamSampler(4, 4)) == [0, 1, 2, 3]


def stream_dataset(rows: int, block_size: int, steps: int) -> Dataset:
    """A batchify_for_lm layout of random streams: block i * rows + j is step i of row j."""
    stream = np.random.default_rng(1).integers(5, 320, size=rows * (steps * block_size + 1))
    layout = stream_rows(stream, rows)
    inputs = layout[:, :-1].reshape(rows, steps, block_size).transpose(1, 0, 2).reshape(-1, block_size)
    targets = layout[:, 1:].reshape(rows, steps, block_size).transpose(1, 0, 2).reshape(-1, block_size)
    return Dataset.from_dict({"input_ids": inputs, "labels": inputs, "shift_labels": targets})


def record_initial_states(model, seen: list):
    """Record, for every training call, the state it starts from and the state it leaves."""
    forward = model.forward

    def recording(*args, cache=None, **kwargs):
        state = None if cache is None else cache.layer_state(0)
        seen.append(None if state is None else [tensor.clone() for tensor in state])
        if state is not None:
            assert all(tensor.grad_fn is None for tensor in state), "the state arrives detached"
        output = forward(*args, cache=cache, **kwargs)
        seen[-1] = (seen[-1], [tensor.detach().clone() for tensor in output.cache.layer_state(0)])
        return output

    model.forward = recording


def stateful_trainer(tmp_path, model, dataset, eval_dataset=None, **arguments):
    defaults = {"per_device_train_batch_size": 2, "learning_rate": 0.1, "logging_steps": 1}
    args = EvolutionTrainingArguments(
        output_dir=str(tmp_path), report_to="none", save_strategy="no", disable_tqdm=True, **{**defaults, **arguments}
    )
    return EvolutionTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=default_data_collator,
        stateful=True,
    )


def test_the_state_is_carried_detached_between_steps_and_reset_each_epoch(tmp_path):
    model = make_model("lstm").train()
    seen = []
    record_initial_states(model, seen)
    trainer = stateful_trainer(tmp_path, model, stream_dataset(rows=2, block_size=5, steps=3), num_train_epochs=2)
    trainer.train()
    assert len(seen) == 6, "3 steps per epoch, 2 epochs"
    assert seen[0][0] is None and seen[3][0] is None, "each epoch starts from a zero state"
    for step in (1, 2, 4, 5):  # each step starts where the previous one ended
        for carried, ended in zip(seen[step][0], seen[step - 1][1], strict=True):
            torch.testing.assert_close(carried, ended)


def test_gradient_accumulation_carries_the_state_through_the_micro_batches(tmp_path):
    dataset = stream_dataset(rows=2, block_size=4, steps=2)
    model = make_model("gru").train()
    reference = make_model("gru").train()
    trainer = stateful_trainer(tmp_path, model, dataset, max_steps=1, gradient_accumulation_steps=2, max_grad_norm=0)
    trainer.train()
    # By hand: both blocks of the two streams, the state carried and detached between them, one SGD-like step of
    # AdamW on the mean loss over all their tokens.
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.1, weight_decay=0.0)
    cache, total = None, 0.0
    for step in range(2):
        block = dataset[step * 2 : step * 2 + 2]
        output = reference(
            torch.tensor(block["input_ids"]),
            labels=torch.tensor(block["labels"]),
            shift_labels=torch.tensor(block["shift_labels"]),
            num_items_in_batch=torch.tensor(16),
            cache=cache,
            use_cache=True,
        )
        output.loss.backward()
        cache = output.cache
        cache.detach_()
        total += output.loss.item()
    optimizer.step()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(total, rel=1e-5)
    for (name, trained), expected in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_stateful_training_refuses_a_model_without_a_carried_state(tmp_path, tiny_tokenizer):
    gpt2 = build_model("gpt2", "lm", "tiny", tiny_tokenizer)
    with pytest.raises(ValueError, match="GPT2LMHeadModel has none"):
        stateful_trainer(tmp_path, gpt2, stream_dataset(rows=2, block_size=4, steps=2))


def test_activation_and_temporal_activation_regularization_add_their_awd_values():
    ids = torch.randint(5, 320, (3, 9))
    plain = make_model("lstm", hidden_dropout=0.0).train()
    regularized = make_model("lstm", activation_regularization=2.0, temporal_activation_regularization=1.0).train()
    base = plain(ids, labels=ids).loss
    outputs = regularized(ids, labels=ids, output_hidden_states=True)
    last = outputs.hidden_states[-1]  # dropout off: the dropped and the raw outputs are the same
    expected = base + 2.0 * last.pow(2).mean() + 1.0 * (last[:, 1:] - last[:, :-1]).pow(2).mean()
    torch.testing.assert_close(outputs.loss, expected)
    regularized.eval()
    torch.testing.assert_close(regularized(ids, labels=ids).loss, plain.eval()(ids, labels=ids).loss)
    with pytest.raises(ValueError, match=r"'activation_regularization':\s+ValueError: must be in \[0, inf\)"):
        make_model("lstm", activation_regularization=-1.0)


def test_nt_asgd_averages_the_weights_of_every_step_once_the_validation_loss_stalls():
    from types import SimpleNamespace

    from hf_evolution.training.averaging import WeightAveraging

    model = make_model("gru")
    averaging = WeightAveraging(SimpleNamespace(model=model, is_in_train=True), nonmono=2)
    state = SimpleNamespace(global_step=0)
    for loss in (5.0, 4.0, 3.0, 3.5):  # 3.5 is not worse than the best before the last two (4.0 and 5.0)
        averaging.on_evaluate(None, state, None, metrics={"eval_loss": loss})
    assert averaging.averaged is None
    averaging.on_evaluate(None, state, None, metrics={"eval_loss": 3.2})  # worse than 3.0, the best before
    assert averaging.averaged is not None
    weight = model.model.layers[0].rnn.weight_hh_l0
    snapshots = [weight.detach().clone()]
    for step in range(3):  # three optimizer steps after the switch
        with torch.no_grad():
            weight.add_(float(step + 1))
        snapshots.append(weight.detach().clone())
        averaging.on_step_end(None, state, None)
    expected = torch.stack(snapshots[1:]).mean(dim=0)  # the weights after each step since the switch, as ASGD
    with averaging.swapped_in(model):
        torch.testing.assert_close(model.model.layers[0].rnn.weight_hh_l0, expected)
    torch.testing.assert_close(weight, snapshots[-1], msg="the trained weights come back after an evaluation")
    averaging.on_train_end(None, state, None)
    torch.testing.assert_close(model.model.layers[0].rnn.weight_hh_l0, expected, msg="training ends on the average")


def test_variable_bptt_reads_the_streams_contiguously_in_awd_lengths_fixed_by_seed_and_epoch():
    from hf_evolution.training.streams import VariableLengthStreams

    blocks = stream_dataset(rows=4, block_size=30, steps=40)
    epoch = [0]
    streams = VariableLengthStreams(blocks, 2, world_size=2, rank=1, block_size=30, seed=3, epoch=lambda: epoch[0])
    rows = streams.rows
    assert rows.shape == (2, 40 * 30 + 1)
    inputs = np.asarray(blocks["input_ids"])
    torch.testing.assert_close(rows[0, :30], torch.as_tensor(inputs[2]), msg="process 1 reads streams 2 and 3")
    spans = streams.schedule(0)
    assert len(streams) == len(spans) == 40
    lengths = [length for _, length in spans]
    assert all(length >= 5 for length in lengths) and sum(length < 22 for length in lengths) <= 8
    assert abs(np.median(lengths) - 30) <= 3, "mostly around block_size"
    assert [start for start, _ in spans[1:]] == list(np.cumsum(lengths[:-1])), "each batch continues the last"
    first = streams[5]
    torch.testing.assert_close(first["shift_labels"][:, :-1], first["input_ids"][:, 1:])
    assert first["length_scale"] == spans[5][1] / 30
    assert streams.schedule(0) == spans and streams.schedule(1) != spans, "a schedule per epoch, fixed by the seed"


def test_stateful_training_with_variable_bptt_and_averaging_runs_end_to_end(tmp_path):
    model = make_model("lstm").train()
    dataset = stream_dataset(rows=2, block_size=8, steps=12)
    held_out = dataset.select(range(4)).remove_columns("shift_labels")
    trainer = stateful_trainer(
        tmp_path,
        model,
        dataset,
        held_out,
        variable_bptt=True,
        average_when_stalled=1,
        eval_strategy="steps",
        eval_steps=2,
        num_train_epochs=1,
    )
    result = trainer.train()
    assert result.global_step == 12 and np.isfinite(result.training_loss)
    assert trainer.averaging.losses and len(trainer.averaging.losses) == 6


def block_loss(model, stream: np.ndarray, block_size: int) -> float:
    """Today's common protocol: the stream cut into blocks, each read from a zero state, its first token unscored."""
    blocks = torch.tensor(stream[: len(stream) // block_size * block_size].reshape(-1, block_size), dtype=torch.long)
    with torch.no_grad():
        logits = model(blocks[:, :-1], use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten()).item()


def test_a_stateful_trained_lstm_scores_better_with_its_state_carried_than_on_blocks(tmp_path, bbc_news):
    """Trained with its state carried, the model learns to use context beyond a block, so reading the split as one
    stream beats reading it in blocks from nothing by a wide margin: 3.16 against 3.46 nats per character here, where
    the same model trained on shuffled blocks of 9 gives 3.16 and 3.17."""
    corpus = {split: bbc_news[split].select(range(40)) for split in ("train", "validation")}
    tokenizer = train_tokenizer(corpus["train"], "char")
    block_size, rows = 8, 16
    train = batchify_for_lm(corpus["train"], tokenizer, block_size, rows)
    model = build_model("lstm", "lm", "tiny", tokenizer, seed=0, input_dropout=0.0, hidden_dropout=0.0)
    trainer = stateful_trainer(
        tmp_path,
        model,
        train,
        per_device_train_batch_size=rows,
        learning_rate=1.0,
        optim="sgd",
        max_grad_norm=0.25,
        max_steps=300,
    )
    trainer.train()
    model.eval()
    stream = token_stream(corpus["validation"], tokenizer)
    total, count = stateful_loss(model, stream, block_size=block_size, rows=4)
    assert total / count < 0.95 * block_loss(model, stream, block_size)
