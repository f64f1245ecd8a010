"""Dynamic int8 quantization of a recurrent language model with torch's own `quantize_dynamic`.

Dynamic quantization stores weights as int8 and quantizes the activations on the fly at every call, so it needs no
calibration data; it runs on CPU (fbgemm/x86 or qnnpack kernels). What becomes int8, per family:

- lstm, gru: every `nn.LSTM`/`nn.GRU` layer (`DynamicQuantizedLSTM`/`GRU`) and every `nn.Linear` (the output
  projection and the head);
- mingru, minlstm: every `nn.Linear` (gates, recurrence output, feed-forward, head): their scan has no weights;
- rnn: the `nn.Linear` layers only. torch has no dynamic quantized `nn.RNN` (its dynamic modules are `Linear`, `LSTM`,
  `GRU` and the single-step cells `RNNCell`, `LSTMCell`, `GRUCell`), so the RNN family keeps float32 recurrent
  weights; running `RNNCell` in a Python loop over time would trade the fused kernel for a slower one.

Always float32: the token embedding (a lookup, no matrix product to speed up), LayerNorms, and every bias (fbgemm adds
biases in float). The embedding dominates the size of a small model (72% of the `small` LSTM's file at a vocabulary
of 8,192), so the saved file shrinks far less than 4x: benchmarks/quantization.py has the figures.

Tied head: `quantize_dynamic` gives `lm_head` its own int8 copy of the tied embedding, so the model is untied: an int8
head beside the float embedding, one more byte per weight in the file, and the largest matrix product of a decoding
step in int8. `include_head=False` keeps the head float and tied instead: a smaller file, that product in float.
Activations are quantized per tensor over the whole call, so a row's int8 logits depend slightly on the other rows of
its batch (float ones do not). A quantized model is for inference only (it has no gradients and stays in eval mode).

A saved folder (`save_quantized`) holds `config.json` (the float model's, unchanged), `generation_config.json`, the
tokenizer, `quantization.json` (what was quantized, and with which torch) and `quantized_model.pt`, a state dict that
loads with `torch.load(weights_only=True)`. torch's own state dict of a quantized model does not: it keeps each LSTM or
GRU layer's packed weights as a TorchScript object (`torch.ScriptObject`), which the safe unpickler refuses, so those
entries are saved unpacked (int8 tensors with their scale, float biases, named as in `nn.LSTM`) and repacked on load;
the quantized Linear entries are plain tensors already. `load_quantized` rebuilds the float model from the config,
quantizes it and loads these weights; `from_pretrained` cannot read the folder.

torch marks `torch.ao.quantization` deprecated in favour of torchao, yet 2.13 still ships it; its deprecation warnings
are silenced here, where it is called on purpose.

    hf-evolution quantize MODEL_DIR OUT_DIR [--keep-float-head] [--overwrite]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import os
import warnings
from pathlib import Path

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from ..families import RECURRENT_FAMILIES, check_recurrent_lm_folder, describe_model
from ..modeling_recurrent import RecurrentForCausalLM, RecurrentPreTrainedModel
from ..runs import check_output_folder, write_folder_atomically, write_json

WEIGHTS_NAME = "quantized_model.pt"
QUANTIZATION_NAME = "quantization.json"
FORMAT = "hf_evolution dynamic int8"
FLOAT_WEIGHT_FILES = ("model.safetensors", "model-*.safetensors", "pytorch_model*.bin")
QUANTIZED_TYPES = (nn.Linear, nn.LSTM, nn.GRU)
DYNAMIC_RNNS = (nnqd.LSTM, nnqd.GRU)
# Why a module with weights stays float32.
KEPT_FLOAT = {
    nn.Embedding: "a lookup: kept float by design",
    nn.RNN: "torch has no dynamic quantized nn.RNN",
    nn.LayerNorm: "not quantized by dynamic quantization",
    nn.Linear: "the head, kept float (include_head=False)",
}


@contextlib.contextmanager
def quiet_deprecations():
    """Silence torch's notices that eager-mode quantization and quantized tensors are deprecated (see above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated", category=Warning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions", category=Warning)
        warnings.filterwarnings("ignore", message=r".*torch\.quantize_per_tensor", category=Warning)
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated", category=Warning)  # loading qint8
        yield


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, (nnqd.Linear, *DYNAMIC_RNNS)) for module in model.modules())


def quantize_dynamic_int8(model: RecurrentPreTrainedModel, *, include_head: bool = True) -> RecurrentPreTrainedModel:
    """An int8 copy of `model` (which is left as it was), in eval mode: `nn.LSTM`, `nn.GRU` and `nn.Linear` quantized
    dynamically, everything else float (see the module docstring). `include_head=False` keeps a causal LM's head float
    (and tied, if it was)."""
    if not isinstance(model, RecurrentPreTrainedModel):
        raise ValueError(
            f"quantize_dynamic_int8 takes a model of hf_evolution ({', '.join(RECURRENT_FAMILIES)}), got "
            f"{type(model).__name__}."
        )
    if is_quantized(model):
        raise ValueError("The model is quantized already; quantize the float model.")
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(
            f"Dynamic int8 quantization runs on CPU from float32 weights; the model is {parameter.dtype} on "
            f"{parameter.device}. Call model.float().cpu() first."
        )
    quantized = copy.deepcopy(model).eval()  # deepcopy keeps a tied head tied to the embedding
    with quiet_deprecations():
        spec = {kind: torch.ao.quantization.default_dynamic_qconfig for kind in QUANTIZED_TYPES}
        if not include_head:
            spec["lm_head"] = None  # a module name wins over its type; None leaves it float
        torch.ao.quantization.quantize_dynamic(quantized, spec, dtype=torch.qint8, inplace=True)
    return quantized


def quantization_summary(model: nn.Module) -> dict[str, dict[str, str]]:
    """The modules with weights, by name: `int8` ones with their float kind, `float` ones with the reason."""
    int8, kept = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, nnqd.Linear):
            int8[name] = "Linear"
        elif isinstance(module, DYNAMIC_RNNS):
            int8[name] = "LSTM" if isinstance(module, nnqd.LSTM) else "GRU"
        else:
            reason = next((why for kind, why in KEPT_FLOAT.items() if type(module) is kind), None)
            if reason is not None:
                kept[name] = f"{type(module).__name__}: {reason}"
    return {"int8": int8, "float": kept}


def quantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each LSTM/GRU layer's packed TorchScript weights replaced by their unpacked int8 tensors
    and float biases, so that `torch.load(weights_only=True)` reads it."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, DYNAMIC_RNNS):
            prefix = f"{name}." if name else ""
            for key in [key for key in state if key.startswith(f"{prefix}_all_weight_values.")]:
                del state[key]
            with quiet_deprecations():
                weights = module._weight_bias()  # torch's own unpacking, the inverse of `set_weight_bias`
            for kind in ("weight", "bias"):
                state.update({f"{prefix}{key}": value.detach() for key, value in weights[kind].items()})
    return dict(state)


def layout(value):
    """What a saved entry must match: a tensor's shape and dtype, a tuple's entries (a Linear's packed weight and
    bias), anything else (a dtype) itself."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.dtype
    if isinstance(value, (tuple, list)):
        return tuple(layout(item) for item in value)
    return value


def described(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(described(item) for item in value) + ")"
    return str(value)


def check_quantized_weights(model: nn.Module, state, path: Path) -> None:
    """Refuse weights that do not fit `model` (quantized from the folder's config) before they reach a kernel: the
    same names, and every entry of the same shape and dtype."""
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not the state dict save_quantized writes.")
    expected = quantized_state_dict(model)
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [key for key in expected if key in state and layout(state[key]) != layout(expected[key])]
    if missing or unexpected or wrong:
        parts = [
            f"{key} is {described(state[key])} where the config's model has {described(expected[key])}"
            for key in wrong
        ]
        for what, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{what} {', '.join(keys[:4])}" + (", ..." if len(keys) > 4 else ""))
        shown = "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")
        raise ValueError(
            f"{path} does not fit the model of {path.parent / 'config.json'} ({shown}); the weights and the config come "
            "from different models. Quantize the float model again."
        )


def load_quantized_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what `quantized_state_dict` wrote into a model quantized the same way (every key must match)."""
    state = collections.OrderedDict(state)
    # The format versions of torch's quantized modules travel in a state dict's metadata, which a plain dict has not:
    # take them from the model itself, quantized by this same torch.
    state._metadata = model.state_dict()._metadata
    for name, module in model.named_modules():
        if isinstance(module, DYNAMIC_RNNS):
            prefix = f"{name}." if name else ""
            names = [key for key in state if key.startswith(prefix) and "." not in key[len(prefix) :]]
            with quiet_deprecations():
                module.set_weight_bias({key[len(prefix) :]: state.pop(key) for key in names})
            state.update(
                (f"{prefix}_all_weight_values.{index}.param", packed.param)
                for index, packed in enumerate(module._all_weight_values)
            )
    model.load_state_dict(state, strict=True)


def save_quantized(model: RecurrentForCausalLM, tokenizer, folder: str | os.PathLike, *, overwrite: bool = False):
    """Write a quantized causal LM, its config and `tokenizer` (None: none) into `folder`, atomically: everything goes
    into a temporary sibling folder that is renamed into place. A folder holding files hf_evolution did not write is
    refused; one holding an earlier output is replaced only with `overwrite`. Returns the folder."""
    folder = Path(folder).expanduser()
    check_output_folder(folder, overwrite=overwrite)
    if not isinstance(model, RecurrentForCausalLM) or not is_quantized(model):
        raise ValueError("save_quantized takes a causal LM of hf_evolution quantized by quantize_dynamic_int8.")
    summary = quantization_summary(model)

    def write(temporary: Path) -> None:
        model.config.to_json_file(temporary / "config.json")
        if model.generation_config is not None:
            model.generation_config.save_pretrained(temporary)
        if tokenizer is not None:
            tokenizer.save_pretrained(temporary)
        torch.save(quantized_state_dict(model), temporary / WEIGHTS_NAME)
        write_json(
            temporary / QUANTIZATION_NAME,
            {
                "format": FORMAT,
                "method": "torch.ao.quantization.quantize_dynamic, dtype torch.qint8",
                "torch": torch.__version__,
                "quantized_engine": torch.backends.quantized.engine,
                "include_head": model.get_output_embeddings().__class__ is nnqd.Linear,
                "weights": WEIGHTS_NAME,
                **summary,
            },
        )

    write_folder_atomically(folder, write)
    return folder


def load_quantized(folder: str | os.PathLike) -> RecurrentForCausalLM:
    """The quantized causal LM `save_quantized` wrote: the float model rebuilt from the config (no float weights are
    read), quantized as recorded, then loaded with the int8 weights (`torch.load(weights_only=True)`). The tokenizer
    loads as usual: `AutoTokenizer.from_pretrained(folder)`."""
    folder = Path(folder).expanduser()
    record_path = folder / QUANTIZATION_NAME
    if not record_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} holds no quantized model of hf_evolution ({QUANTIZATION_NAME} and {WEIGHTS_NAME}); write one "
            "with save_quantized or `hf-evolution quantize`."
        )
    record = json.loads(record_path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{record_path} is not a record of {FORMAT!r}.")
    config = AutoConfig.from_pretrained(folder)
    float_model = AutoModelForCausalLM.from_config(config)
    model = quantize_dynamic_int8(float_model, include_head=record["include_head"])
    del float_model
    if quantization_summary(model)["int8"] != record["int8"]:
        raise ValueError(
            f"{folder} was quantized with other modules ({', '.join(record['int8'])}) than this version of "
            "hf_evolution quantizes; quantize the float model again."
        )
    with quiet_deprecations():
        state = torch.load(folder / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    check_quantized_weights(model, state, folder / WEIGHTS_NAME)
    load_quantized_state_dict(model, state)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


# --- hf-evolution quantize ------------------------------------------------------------------------------------------


def float_weight_files(folder: Path) -> list[Path]:
    return sorted({path for pattern in FLOAT_WEIGHT_FILES for path in folder.glob(pattern)})


def check_weight_files(folder: Path) -> None:
    """Refuse a safetensors file that is cut short or is no safetensors file at all, before loading anything.
    `safe_open` reads the header alone and checks that its tensors' data offsets cover the rest of the file exactly,
    so a truncated file (an interrupted copy or download) fails here, not in a traceback from `from_pretrained`."""
    for path in float_weight_files(folder):
        if path.suffix != ".safetensors":
            continue
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as error:
            raise ValueError(
                f"{path} is truncated or not a safetensors file ({error}); save or copy the model again."
            ) from None


def check_model_folder(folder: Path):
    """Refuse, before loading anything, what is not a saved causal LM of hf_evolution with its float weights; return
    its config."""
    if (folder / QUANTIZATION_NAME).is_file():
        raise ValueError(f"{folder} holds a quantized model already; quantize the float model's folder.")
    config = check_recurrent_lm_folder(folder, "quantize")
    if not float_weight_files(folder):
        raise FileNotFoundError(f"{folder} has no weights ({', '.join(FLOAT_WEIGHT_FILES)}).")
    check_weight_files(folder)
    return config


def grouped(modules: dict[str, str]) -> str:
    """`LSTM x2 (model.layers.0.rnn, model.layers.1.rnn); Linear x1 (lm_head)`, long lists cut to their ends."""
    kinds: dict[str, list[str]] = {}
    for name, kind in modules.items():
        kinds.setdefault(kind, []).append(name)
    parts = []
    for kind, names in kinds.items():
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]}, ..., {names[-1]}"
        what, _, why = kind.partition(": ")
        parts.append(f"{what} x{len(names)} ({shown})" + (f": {why}" if why else ""))
    return "; ".join(parts) or "none"


def run(args) -> int:
    source, output = Path(args.model_dir).expanduser(), Path(args.out_dir).expanduser()
    config = check_model_folder(source)
    check_output_folder(output, overwrite=args.overwrite, protected=[source])

    from ..tokenization import folder_tokenizer

    tokenizer = folder_tokenizer(source, config.vocab_size)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    quantized = quantize_dynamic_int8(model, include_head=not args.keep_float_head)
    save_quantized(quantized, tokenizer, output, overwrite=args.overwrite)

    before = sum(path.stat().st_size for path in float_weight_files(source))
    after = (output / WEIGHTS_NAME).stat().st_size
    summary = quantization_summary(quantized)
    print(f"Quantized {source} ({describe_model(model)}) into {output}")
    print(f"  weights: {before:,} bytes (float32) -> {after:,} bytes ({WEIGHTS_NAME}, int8): {after / before:.3f}x")
    print(f"  int8: {grouped(summary['int8'])}")
    print(f"  float: {grouped(summary['float'])}")
    if after > before and not args.keep_float_head:
        print("  Larger: the int8 head is a copy beside the float embedding; --keep-float-head keeps the two shared.")
    if tokenizer is None:
        print(f"  {source} has no tokenizer, so {output} has none either.")
    print(f"  Load it with hf_evolution.deploy.quantization.load_quantized({str(output)!r}).")
    return 0


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "quantize",
        help="dynamic int8 quantization of a saved recurrent LM (torch's quantize_dynamic)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a folder a causal LM of hf_evolution was saved to")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the quantized model goes (new or empty)")
    parser.add_argument(
        "--keep-float-head",
        action="store_true",
        help="keep the output layer float and tied to the embedding: a smaller file, a slower step than an int8 head",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command")
    parser.set_defaults(run=run)
