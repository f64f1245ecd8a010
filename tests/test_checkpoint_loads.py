"""What a training checkpoint holds besides Trainer's own files (the carried streams' state, NT-ASGD's averaged
weights) loads with `torch.load(weights_only=True)`: tensors come back, and a file that would run code is refused.

torch >= 2.6 defaults to weights_only=True, torch 2.4 and 2.5 (which pyproject allows) to False, and any torch loads
with weights_only=False under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 unless the call says weights_only itself: the tests
set that variable, so that a load which does not say weights_only=True runs the hostile file's code and fails them."""

import pickle
from types import SimpleNamespace

import pytest
import torch
from conftest import make_model
from test_stateful import stateful_trainer, stream_dataset
from torch.optim.swa_utils import AveragedModel

from hf_evolution.training.averaging import AVERAGED_WEIGHTS_NAME, WeightAveraging
from hf_evolution.training.streams import stream_state_name

RAN = []


def run_code(*args):
    RAN.append(args)
    return args


@pytest.fixture(autouse=True)
def loads_default_to_unpickling(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    RAN.clear()


class RunsCodeWhenUnpickled:
    """What a hostile file holds: unpickling it calls `run_code`, unless the loader refuses the global."""

    def __reduce__(self):
        return run_code, ("unpickled",)


def test_the_carried_state_round_trips_and_a_file_that_runs_code_is_refused(tmp_path):
    model = make_model("lstm")
    trainer = stateful_trainer(tmp_path / "run", model, stream_dataset(rows=2, block_size=4, steps=2))
    with torch.no_grad():
        trainer.stream_cache = model(torch.randint(5, 320, (2, 4)), use_cache=True).cache
    trainer.save_stream_state(tmp_path)
    loaded = trainer.load_stream_state(tmp_path)
    assert loaded.seen_tokens == trainer.stream_cache.seen_tokens
    for layer in range(model.config.num_hidden_layers):
        for ours, saved in zip(loaded.layer_state(layer), trainer.stream_cache.layer_state(layer), strict=True):
            torch.testing.assert_close(ours, saved)

    torch.save({"states": [], "seen_tokens": RunsCodeWhenUnpickled()}, tmp_path / stream_state_name(0))
    with pytest.raises(pickle.UnpicklingError, match="run_code"):
        trainer.load_stream_state(tmp_path)
    assert RAN == []


def test_the_averaged_weights_round_trip_and_a_file_that_runs_code_is_refused(tmp_path):
    model = make_model("gru")
    averaging = WeightAveraging(SimpleNamespace(model=model, is_in_train=True), nonmono=2)
    averaging.averaged = AveragedModel(model)
    averaging.averaged.update_parameters(model)
    averaging.save(tmp_path)
    resumed = WeightAveraging(SimpleNamespace(model=model, is_in_train=True), nonmono=2)
    resumed.load(tmp_path, model)
    expected = averaging.averaged.state_dict()
    assert resumed.averaged.state_dict().keys() == expected.keys()
    for name, tensor in resumed.averaged.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], msg=name)

    torch.save({"n_averaged": RunsCodeWhenUnpickled()}, tmp_path / AVERAGED_WEIGHTS_NAME)
    with pytest.raises(pickle.UnpicklingError, match="run_code"):
        resumed.load(tmp_path, model)
    assert RAN == []
