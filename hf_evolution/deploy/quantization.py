"""Dynamic int8 quantization of a recurrent language model with torch's own `quantize_dynamic`.

Dynamic quantization stores weights as int8 and quantizes the activations on the fly at every call, so it needs no
calibration data; it runs on CPU (fbgemm/x86 or qnnpack kernels). What becomes int8, per family:

- lstm, gru: every `nn.LSTM`/`nn.GRU` layer (`DynamicQuantizedLSTM`/`GRU`) and every `nn.Linear` (the output
  projection and the head);
- mingru, minlstm: every `nn.Linear` (gates, recurrence output, feed-forward, head): their scan has no weights;
- rnn: the `nn.Linear` layers only. torch has no dynamic quantized `nn.RNN` (its dynamic modules are `Linear`, `LSTM`,
  `GRU` and the single-step cells `RNNCell`, `LSTMCell`, `GRUCell`), so the RNN family keeps float32 recurrent
  weights; running `RNNCell` in a Python loop over time would trade the fused kernel for a slower one;
- every family: the token embedding, weight-only (torch's quantized `Embedding`: quint8 rows, a float scale and zero
  point per row, `float_qparams_weight_only_qconfig`). It is most of a small model (72% of the `small` LSTM's float
  file at a vocabulary of 8,192), so without it the file barely shrinks.

Weights are int8 with one scale per tensor (`default_dynamic_qconfig`), except the head's: one symmetric scale per
output row, that is per token (`per_channel_dynamic_qconfig`). Always float32: LayerNorms and every bias (fbgemm adds
biases in float).

Tied head: `quantize_dynamic` would give `lm_head` its own int8 copy of the tied embedding. Here the head is quantized,
and the embedding is made from its int8 rows: the same bytes plus 128 (qint8 to quint8), the same scale per row, a
zero point of 128, so that an embedding row and a head row dequantize to the same floats, bit for bit. The file holds
the vocabulary matrix once, as the head's rows, and `load_quantized` rebuilds the embedding from them; in memory each
keeps the layout its kernel needs (the head packed for fbgemm's matrix product, the embedding for its lookup). An
untied embedding is quantized on its own (a float scale and zero point per row). `include_head=False`
(`--keep-float-head`) keeps the head float32 and tied to a float32 embedding: the vocabulary matrix stays at four
bytes a weight, so the file shrinks by the recurrent layers alone (0.80x of the float file at the `small` size,
against 0.28x by default), and the largest matrix product of a decoding step stays in float.

Speed: int8 pays where the weight matrices, not the per-token work of `generate()`, set a decoding step's time. At
batch 1 and the `small` size (2 x 157, vocabulary 8,192) int8 decodes about as fast as float; from 2 x 462, or at a
vocabulary of 33,278, it is 2.7-5.6x faster (benchmarks/quantization.py has the sweep; docs/performance.md the run).

Activations are quantized per tensor over the whole call, so a row's int8 logits depend slightly on the other rows of
its batch (float ones do not). A quantized model is for inference only (it has no gradients and stays in eval mode).

A saved folder (`save_quantized`) holds `config.json` (the float model's, unchanged), `generation_config.json`, the
tokenizer, `quantization.json` (what was quantized, and with which torch) and `quantized_model.pt`, a state dict that
loads with `torch.load(weights_only=True)`: quantized tensors (int8 values with their scales and zero points), float
biases and norms. torch's own state dict of a quantized model does not: it keeps each LSTM or GRU layer's packed
weights as a TorchScript object (`torch.ScriptObject`), which the safe unpickler refuses, so those entries are saved
unpacked (int8 tensors with their scale, float biases, named as in `nn.LSTM`) and repacked on load; a tied embedding's
entries are left out (rebuilt from `lm_head`'s). `load_quantized` rebuilds the float model from the config, quantizes
it and loads these weights; `from_pretrained` cannot read the folder.

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
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.ao import quantization as tq
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from ..families import RECURRENT_FAMILIES, check_recurrent_lm_folder, describe_model
from ..modeling_recurrent import RecurrentForCausalLM, RecurrentPreTrainedModel
from ..runs import check_output_folder, write_folder_atomically, write_json

WEIGHTS_NAME = "quantized_model.pt"
QUANTIZATION_NAME = "quantization.json"
FORMAT = "hf_evolution dynamic int8"
FLOAT_WEIGHT_FILES = ("model.safetensors", "model-*.safetensors", "pytorch_model*.bin")
DYNAMIC_RNNS = (nnqd.LSTM, nnqd.GRU)
METHOD = (
    "torch.ao.quantization.quantize_dynamic: LSTM, GRU and Linear weights qint8 per tensor (default_dynamic_qconfig), "
    "lm_head's qint8 per row, symmetric (per_channel_dynamic_qconfig), the embedding quint8 per row "
    "(float_qparams_weight_only_qconfig; tied: lm_head's rows + 128)"
)
SHARED_ROWS = "lm_head's rows, stored once"
# Why a module with weights stays float32.
KEPT_FLOAT = {
    nn.Embedding: "tied to the float head (include_head=False)",
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
        warnings.filterwarnings("ignore", message=r".*torch\.quantize_per_(tensor|channel)", category=Warning)
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated", category=Warning)  # loading qint8
        yield


class Int8Embedding(nnq.Embedding):
    """torch's quantized `Embedding` (quint8 rows, a float scale and zero point per row), read as the model reads an
    `nn.Embedding`. `weight` is the quantized rows, an attribute: torch's is a method that unpacks them at every call
    (milliseconds at 8,192 x 128), and the model reads `embeddings.weight.device` at every decoding step; the rows are
    unpacked once per packing and kept. `anchor`, an empty float32 parameter, keeps a model whose weights are all int8
    answering `model.device` and `next(model.parameters())`, which read the first parameter (an int8 LSTM has none)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self.unpacked = None  # (the packed object, its rows): unpacked again after a new packing

    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant=False):
        """torch's conversion, which builds its own class whatever `cls` is, into this one."""
        quantized = super().from_float(mod, use_precomputed_fake_quant)
        return cls(mod.num_embeddings, mod.embedding_dim, _weight=quantized.weight())

    @property
    def weight(self) -> torch.Tensor:
        packed = self._packed_params._packed_weight
        if self.unpacked is None or self.unpacked[0] is not packed:
            self.unpacked = (packed, self._packed_params._weight())
        return self.unpacked[1]

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return super().forward(indices.contiguous())  # torch's kernel refuses a slice; generate() passes one

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, dtype={self.dtype}, "
            f"qscheme={self.weight.qscheme()}"
        )


def rows_from_head(head_weight: torch.Tensor) -> torch.Tensor:
    """The quint8 embedding rows that dequantize exactly as `head_weight`, a head's qint8 weight with one symmetric
    scale per row: the same values plus 128, the same scales, 128 as every (float) zero point, so that
    (q + 128 - 128) * scale gives each row's floats bit for bit."""
    zero_points = (
        head_weight.q_per_channel_zero_points() if head_weight.qscheme() == torch.per_channel_affine else None
    )
    if zero_points is None or bool(zero_points.any()):
        raise ValueError(f"The head's int8 weight is {head_weight.qscheme()}, not symmetric per row; quantize again.")
    scales = head_weight.q_per_channel_scales().float()
    with quiet_deprecations():
        return torch.quantize_per_channel(
            head_weight.dequantize(), scales, torch.full_like(scales, 128.0), axis=0, dtype=torch.quint8
        )


def shares_vocabulary_rows(model: nn.Module) -> bool:
    """Whether `model`'s int8 embedding is made from its int8 head's rows (a tied causal LM, head quantized)."""
    return (
        getattr(model.config, "tie_word_embeddings", False)
        and isinstance(getattr(model, "lm_head", None), nnqd.Linear)
        and isinstance(model.get_input_embeddings(), Int8Embedding)
    )


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, (nnqd.Linear, nnq.Embedding, *DYNAMIC_RNNS)) for module in model.modules())


def quantize_dynamic_int8(model: RecurrentPreTrainedModel, *, include_head: bool = True) -> RecurrentPreTrainedModel:
    """An int8 copy of `model` (which is left as it was), in eval mode: `nn.LSTM`, `nn.GRU`, `nn.Linear` and the
    embedding quantized, everything else float (see the module docstring). A tied embedding is made from the int8
    head's rows; `include_head=False` keeps a causal LM's head float, and a tied embedding float and tied to it."""
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
    head = getattr(quantized, "lm_head", None)
    tied = head is not None and head.weight is quantized.get_input_embeddings().weight
    with quiet_deprecations():
        spec = {kind: tq.default_dynamic_qconfig for kind in (nn.Linear, nn.LSTM, nn.GRU)}
        if head is not None:  # a module name wins over its type; None leaves it float
            spec["lm_head"] = tq.per_channel_dynamic_qconfig if include_head else None
        if not tied:
            spec[nn.Embedding] = tq.float_qparams_weight_only_qconfig
        mapping = {**tq.get_default_dynamic_quant_module_mappings(), nn.Embedding: Int8Embedding}
        tq.quantize_dynamic(quantized, spec, mapping=mapping, inplace=True)
        if tied and include_head:
            rows = rows_from_head(quantized.lm_head.weight())
            quantized.set_input_embeddings(Int8Embedding(*rows.shape, _weight=rows))
    return quantized


def quantization_summary(model: nn.Module) -> dict[str, dict[str, str]]:
    """The modules with weights, by name: `int8` ones with their float kind, `float` ones with the reason."""
    int8, kept = {}, {}
    shared = shares_vocabulary_rows(model)
    for name, module in model.named_modules():
        if isinstance(module, nnqd.Linear):
            int8[name] = "Linear"
        elif isinstance(module, DYNAMIC_RNNS):
            int8[name] = "LSTM" if isinstance(module, nnqd.LSTM) else "GRU"
        elif isinstance(module, nnq.Embedding):
            int8[name] = f"Embedding: {SHARED_ROWS}" if shared else "Embedding"
        else:
            reason = next((why for kind, why in KEPT_FLOAT.items() if type(module) is kind), None)
            if reason is not None:
                kept[name] = f"{type(module).__name__}: {reason}"
    return {"int8": int8, "float": kept}


def shared_embedding_keys(model: nn.Module) -> tuple[str, str, str] | None:
    """When the embedding is made from the head's rows: the state-dict keys of its packed rows and their dtype (left
    out of the file), and of the head's packed weight and bias (they are made from)."""
    if not shares_vocabulary_rows(model):
        return None
    name = next(name for name, module in model.named_modules() if module is model.get_input_embeddings())
    return (
        f"{name}._packed_params._packed_weight",
        f"{name}._packed_params.dtype",
        "lm_head._packed_params._packed_params",
    )


def quantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each LSTM/GRU layer's packed TorchScript weights replaced by their unpacked int8 tensors
    and float biases, so that `torch.load(weights_only=True)` reads it, and without a tied embedding's rows, which
    are the head's (`load_quantized_state_dict` makes them again)."""
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
    shared = shared_embedding_keys(model)
    if shared is not None:
        del state[shared[0]], state[shared[1]]
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
    shared = shared_embedding_keys(model)
    if shared is not None:  # the embedding's rows from the head's, as quantize_dynamic_int8 makes them
        rows_key, dtype_key, head_key = shared
        state[rows_key], state[dtype_key] = rows_from_head(state[head_key][0]), torch.quint8
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
                "method": METHOD,
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
        help="keep the output layer float32 and tied to a float32 embedding: the vocabulary matrix at four bytes a "
        "weight (a file about 2.9x the default's at the small size) and a slower decoding step",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command")
    parser.set_defaults(run=run)
