"""ONNX export of a recurrent causal LM, its state an explicit input and output (`hf-evolution export onnx`).

ONNX Runtime keeps nothing between two calls, so the graph takes the recurrent state in and gives the next one out:

- inputs: `input_ids` (batch, sequence) int64, and `state_h` (layers, batch, hidden) float32 — plus `state_c` for an
  LSTM;
- outputs: `logits` (batch, sequence, vocab) and `next_state_h` (and `next_state_c`).

Batch and sequence are dynamic axes, so one graph reads a prompt (from a zero state) and then runs single decoding
steps, each fed the state the last call returned. Rows are read in full: the graph has no padding mask, so a batch of
prompts of different lengths runs one prompt at a time or through `generate()` in PyTorch.

The classic families export through torch's ONNX `LSTM`/`GRU`/`RNN` operators; minGRU and minLSTM run their recurrence
as an ONNX loop over time. The export is checked before it is kept: ONNX Runtime must reproduce PyTorch's logits and
states on a sample to 1e-4 plus 1e-5 of their size (`numpy.allclose`'s rule: float32 rounding grows with the values).

The output folder's config.json has no `auto_map`: the folder ships no Python code and no PyTorch weights, so the
config names no remote code to run (which would make `AutoTokenizer.from_pretrained` ask whether to run it).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ..families import check_recurrent_lm_folder
from ..modeling_recurrent import RecurrentCache, RecurrentForCausalLM
from ..runs import check_output_folder, write_folder_atomically
from .quantization import check_weight_files

ONNX_FILE = "model.onnx"
STATE_NAMES = ("h", "c")
TOLERANCE = 1e-4  # absolute, for values near zero
RELATIVE_TOLERANCE = 1e-5  # of the value, for large ones (numpy.allclose's default)


class TracedCache(RecurrentCache):
    """A cache that keeps each new state as it is: `RecurrentCache` copies into fixed buffers (a static address for
    CUDA graphs), an in-place write the ONNX exporter cannot turn into a graph output."""

    def __init__(self, config):
        super().__init__(config)
        self.states: dict[int, tuple[torch.Tensor, ...]] = {}

    def layer_state(self, layer_idx: int) -> tuple[torch.Tensor, ...] | None:
        return self.states.get(layer_idx)

    def update_layer_state(self, layer_idx: int, states: tuple[torch.Tensor, ...]) -> None:
        self.states[layer_idx] = states


class StatefulCausalLM(nn.Module):
    """The model as the ONNX graph sees it: token ids and the state in, logits and the next state out."""

    def __init__(self, model: RecurrentForCausalLM):
        super().__init__()
        self.model = model
        self.num_layers = model.config.num_hidden_layers

    def forward(self, input_ids: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = TracedCache(self.model.config)
        for layer_idx in range(self.num_layers):
            cache.update_layer_state(layer_idx, tuple(state[layer_idx] for state in states))
        logits = self.model(input_ids, cache=cache, use_cache=True).logits
        next_states = (
            torch.stack([cache.layer_state(layer_idx)[index] for layer_idx in range(self.num_layers)])
            for index in range(len(states))
        )
        return (logits, *next_states)


def state_names(model: RecurrentForCausalLM) -> list[str]:
    """One state input per kind of state: `state_h`, and `state_c` for an LSTM."""
    return [f"state_{name}" for name in STATE_NAMES[: model.config.number_of_conv_states]]


def zero_states(model: RecurrentForCausalLM, batch_size: int) -> list[torch.Tensor]:
    """The state before the first token, as the graph takes it: zeros of (layers, batch, hidden)."""
    config = model.config
    return [torch.zeros(config.num_hidden_layers, batch_size, config.hidden_size) for _ in state_names(model)]


def export_onnx(model: RecurrentForCausalLM, path: str | os.PathLike, *, opset_version: int = 18) -> Path:
    """Write `model` (a recurrent causal LM of hf_evolution) as an ONNX graph at `path`, checked against PyTorch with
    ONNX Runtime before it is kept; returns the path. The model is exported in float32 and evaluation mode, from the
    CPU (a model on an accelerator is moved there for the export and back)."""
    if not isinstance(model, RecurrentForCausalLM):
        raise ValueError(
            f"ONNX export with an explicit state takes a recurrent causal LM of hf_evolution (rnn, lstm, gru, mingru, "
            f"minlstm), got {type(model).__name__}; transformers' own models export with optimum."
        )
    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise ModuleNotFoundError(
                f"ONNX export needs {package}, which is not installed: pip install 'hf-evolution[deploy]'."
            )
    path = Path(path)
    was_training, dtype, device = model.training, model.dtype, model.device
    model.eval().to("cpu", torch.float32)  # a graph for ONNX Runtime's CPU provider, checked there
    wrapper = StatefulCausalLM(model).eval()  # eval before export, which restores the wrapper's mode on its children
    names = state_names(model)
    dynamic_axes = {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    for name in names:
        dynamic_axes[name] = dynamic_axes[f"next_{name}"] = {1: "batch"}
    sample = torch.randint(0, model.config.vocab_size, (2, 3))
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about the input checks and shape tests it folds into constants for valid input.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (sample, *zero_states(model, 2)),
                str(temporary),
                dynamo=False,  # the TorchScript exporter maps nn.LSTM/GRU/RNN to ONNX's operators, time axis dynamic
                input_names=["input_ids", *names],
                output_names=["logits", *(f"next_{name}" for name in names)],
                dynamic_axes=dynamic_axes,
                opset_version=opset_version,
            )
        check_onnx_against_pytorch(temporary, model)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        model.to(device, dtype).train(was_training)
    return path


def run_onnx(session, input_ids, states) -> tuple[np.ndarray, list[np.ndarray]]:
    """One call of the graph: logits and the next states, for int64 token ids and float32 states (NumPy arrays)."""
    names = [item.name for item in session.get_inputs()]
    outputs = session.run(None, dict(zip(names, [input_ids, *states], strict=True)))
    return outputs[0], outputs[1:]


def check_close(name: str, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> None:
    """Refuse `actual` where it is further from `expected` than `atol + rtol * |expected|` (`numpy.allclose`'s rule;
    a NaN is never close)."""
    difference = np.abs(actual - expected)
    outside = ~(difference <= atol + rtol * np.abs(expected))
    if outside.any():
        worst = np.flatnonzero(outside)[np.argmax(np.nan_to_num(difference[outside], nan=np.inf))]
        raise RuntimeError(
            f"The ONNX graph's {name} differ from PyTorch's at {int(outside.sum())} of {outside.size} values, by up to "
            f"{difference.flat[worst]:.2e} (at a value of {expected.flat[worst]:.3g}; allowed: {atol:g} + {rtol:g} of "
            "the value); the export is not kept."
        )


def check_onnx_against_pytorch(
    path: Path, model: RecurrentForCausalLM, tolerance: float = TOLERANCE, relative: float = RELATIVE_TOLERANCE
) -> None:
    """Run a prompt, then one decoding step from the state it returned, in ONNX Runtime and in PyTorch (batch 3, a
    length the export never saw); any logit or state further apart than `tolerance + relative * |PyTorch's value|`
    fails the export."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (3, 7), generator=generator)
    step = torch.randint(0, model.config.vocab_size, (3, 1), generator=generator)
    wrapper = StatefulCausalLM(model)
    states = zero_states(model, 3)
    onnx_states = [state.numpy() for state in states]
    with torch.no_grad():
        for input_ids in (prompt, step):
            expected = wrapper(input_ids, *states)
            logits, onnx_states = run_onnx(session, input_ids.numpy(), onnx_states)
            for name, ours, theirs in zip(
                ["logits", *state_names(model)], (logits, *onnx_states), expected, strict=True
            ):
                check_close(name, ours, theirs.numpy(), tolerance, relative)
            states = list(expected[1:])


def export_folder(model_dir: str | os.PathLike, output_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Export a saved model folder: `model.onnx` beside the model's config and tokenizer, so that the output folder is
    all a runtime needs (the config gives the sizes, the tokenizer the ids). Returns the path of the graph."""
    model_dir, output_dir = Path(model_dir).expanduser(), Path(output_dir).expanduser()
    config = check_recurrent_lm_folder(model_dir, "ONNX export")
    check_weight_files(model_dir)
    check_output_folder(output_dir, overwrite=overwrite, protected=[model_dir])
    from ..tokenization import folder_tokenizer  # datasets loads slowly: not at every command's start

    tokenizer = folder_tokenizer(model_dir, config.vocab_size)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    runtime_config = copy.deepcopy(model.config)
    if hasattr(runtime_config, "auto_map"):
        del runtime_config.auto_map  # it names Python files the folder does not ship (see the module docstring)

    def write(temporary: Path) -> None:
        export_onnx(model, temporary / ONNX_FILE)
        runtime_config.save_pretrained(temporary)
        if tokenizer is not None:
            tokenizer.save_pretrained(temporary)

    return write_folder_atomically(output_dir, write) / ONNX_FILE


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "export",
        help="export a trained recurrent LM (ONNX with an explicit state)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    formats = parser.add_subparsers(dest="format", required=True, metavar="{onnx}")
    onnx = formats.add_parser("onnx", help="an ONNX graph whose recurrent state is an input and an output")
    onnx.add_argument("model_dir", help="a saved hf_evolution causal LM (a folder with config.json and weights)")
    onnx.add_argument("output_dir", help="where model.onnx, the config and the tokenizer go")
    onnx.add_argument("--overwrite", action="store_true", help="replace an earlier export in output_dir")
    onnx.set_defaults(run=run_export)


def run_export(args) -> int:
    path = export_folder(args.model_dir, args.output_dir, overwrite=args.overwrite)
    print(
        f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB), checked against PyTorch to {TOLERANCE:g} + "
        f"{RELATIVE_TOLERANCE:g} of each value."
    )
    return 0
