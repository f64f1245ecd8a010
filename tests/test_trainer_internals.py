"""The private parts of transformers' `Trainer` that hf_evolution relies on, checked against the installed version.

`hf_evolution/training/trainer_internals.py` is the one place that touches them; when transformers renames, moves or
changes one, a test here fails and its message names the private and what depends on it. Fix the adapter (and raise
the transformers pin only then), not the tests that fail further downstream.
"""

import inspect

import pytest
import torch
import transformers
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_evolution.training.trainer_internals import TrainerHooks

VERSION = transformers.__version__
ADAPTER = "hf_evolution/training/trainer_internals.py"


def changed(name: str, what: str, why: str) -> str:
    return (
        f"transformers {VERSION} changed Trainer.{name}: {what}. {ADAPTER} relies on it ({why}); adapt TrainerHooks "
        "to the new Trainer before trusting a resumed run."
    )


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


class Linear(torch.nn.Module):
    """y = w * x, squared error: a model Trainer can train in milliseconds."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([0.5]))

    def forward(self, x, labels=None):
        return {"loss": ((self.weight * x - labels) ** 2).mean()}


class Recorder(TrainerHooks, Trainer):
    """Trainer with the adapter, recording every hook call (and the private state the adapter reads)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def should_run_epoch(self) -> bool:
        self.calls.append(("epoch", self.state.global_step))
        return True

    def before_checkpoint(self, folder):
        self.calls.append(("before_checkpoint", folder, folder.exists(), self.loss_sum_of_this_call()))
        self.calls.append(("private types", type(self._tr_loss), type(self._total_loss_scalar)))

    def after_checkpoint(self, folder):
        self.calls.append(("after_checkpoint", folder, sorted(path.name for path in folder.iterdir())))

    def before_save_model(self, output_dir, by_trainer):
        self.calls.append(("before_save_model", output_dir, by_trainer))


def train(output_dir, logging_steps: int, trainer_class=Recorder, max_steps: int = 2):
    data = Dataset.from_dict({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "labels": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]})
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        max_steps=max_steps,
        learning_rate=0.01,
        logging_steps=logging_steps,
        save_steps=max_steps,
        save_strategy="steps",
        use_cpu=True,
        dataloader_pin_memory=False,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = trainer_class(model=Linear(), args=args, train_dataset=data)
    output = trainer.train()
    return trainer, output


@pytest.mark.parametrize(
    "name, expected, why",
    [
        ("_run_epoch", None, "TrainerHooks overrides it to skip an epoch: should_run_epoch()"),
        ("_save_checkpoint", ["self", "model", "trial"], "overridden to write our run state into each checkpoint"),
        ("_get_output_dir", ["self", "trial"], "called with trial= to name the checkpoint folder"),
        ("save_model", ["self", "output_dir", "_internal_call"], "overridden; _internal_call marks Trainer's saves"),
    ],
)
def test_the_private_methods_the_adapter_overrides_or_calls_exist_with_their_signature(name, expected, why):
    method = getattr(Trainer, name, None)
    assert callable(method), changed(name, "it is gone", why)
    if expected is not None:
        assert parameters(method) == expected, changed(name, f"its parameters are {parameters(method)}", why)


def test_the_private_methods_of_trainer_that_our_tests_patch_or_read_exist():
    """tests/fault_injection.py kills a run inside `_save_optimizer_and_scheduler`; tests/test_families.py reads
    `_loss_shifts_labels`. Not the adapter's, but the same kind of dependency."""
    method = getattr(Trainer, "_save_optimizer_and_scheduler", None)
    assert callable(method), changed("_save_optimizer_and_scheduler", "it is gone", "tests/fault_injection.py")
    assert parameters(method) == ["self", "output_dir"], changed(
        "_save_optimizer_and_scheduler", f"its parameters are {parameters(method)}", "tests/fault_injection.py"
    )
    assert "_loss_shifts_labels" in inspect.getsource(Trainer.__init__), changed(
        "_loss_shifts_labels", "__init__ no longer sets it", "tests/test_families.py"
    )


def test_a_plain_trainer_keeps_the_loss_in_tr_loss_and_total_loss_scalar(tmp_path):
    """After a short run Trainer holds the unlogged loss as a tensor `_tr_loss` and the logged sum as a float
    `_total_loss_scalar`; the adapter adds them up for the run state of each checkpoint."""
    trainer, _ = train(tmp_path, logging_steps=1, trainer_class=Trainer)
    why = "loss_sum_of_this_call() reads it for the exact loss sum a checkpoint saves"
    assert isinstance(getattr(trainer, "_tr_loss", None), torch.Tensor), changed(
        "_tr_loss", f"after train() it is {type(getattr(trainer, '_tr_loss', None)).__name__}, not a tensor", why
    )
    assert isinstance(getattr(trainer, "_total_loss_scalar", None), float), changed(
        "_total_loss_scalar",
        f"after train() it is {type(getattr(trainer, '_total_loss_scalar', None)).__name__}, not a float",
        why,
    )


@pytest.mark.parametrize("logging_steps", [1, 100], ids=["logged", "not-yet-logged"])
def test_the_hooks_run_at_their_moments_and_the_loss_sum_is_what_trainer_reports(tmp_path, logging_steps):
    trainer, output = train(tmp_path, logging_steps=logging_steps)
    folder = tmp_path / "checkpoint-2"
    calls = [call[0] for call in trainer.calls]
    assert calls[0] == "epoch", changed("_run_epoch", "train() did not call it before the first step", "hooks")
    assert calls[1:] == [
        "before_checkpoint",
        "private types",
        "before_save_model",
        "after_checkpoint",
    ], changed("_save_checkpoint", f"the hooks ran as {calls}", "before/after_checkpoint, before_save_model")
    _, before_folder, existed, loss_sum = trainer.calls[1]
    assert before_folder == folder and not existed, changed(
        "_get_output_dir", f"the checkpoint folder computed is {before_folder}, Trainer wrote {folder}", "hooks"
    )
    assert trainer.calls[2][1:] == (torch.Tensor, float), changed(
        "_tr_loss / _total_loss_scalar", f"their types during a save are {trainer.calls[2][1:]}", "loss sum"
    )
    assert trainer.calls[3][1:] == (str(folder), True), changed(
        "save_model", f"_save_checkpoint called it as {trainer.calls[3][1:]}", "by_trainer of before_save_model"
    )
    assert "trainer_state.json" in trainer.calls[4][2], changed(
        "_save_checkpoint", "it returned before writing trainer_state.json", "after_checkpoint"
    )
    assert loss_sum == pytest.approx(output.training_loss * output.global_step, rel=1e-6), changed(
        "_tr_loss / _total_loss_scalar",
        f"their sum at the checkpoint ({loss_sum}) is not the loss Trainer reports for the run "
        f"({output.training_loss} x {output.global_step} steps)",
        "exact training loss of a resumed run",
    )


def test_a_final_save_is_ours_not_trainers(tmp_path):
    trainer, _ = train(tmp_path, logging_steps=1)
    trainer.save_model(str(tmp_path / "final"))
    assert trainer.calls[-1] == ("before_save_model", str(tmp_path / "final"), False)
