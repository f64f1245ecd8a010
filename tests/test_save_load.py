"""safetensors round trips, remote code without the package, cross-head loading and pipelines."""

import json

import pytest
import torch
from conftest import CLASSIC_FAMILIES, FAMILIES, class_prefix, code_files, make_model, run_without_hf_evolution
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    pipeline,
)

import hf_evolution
from hf_evolution import LSTMForCausalLM

HEADS = ("base", "causal", "sequence", "token")
AUTO_BY_HEAD = {
    "base": AutoModel,
    "causal": AutoModelForCausalLM,
    "sequence": AutoModelForSequenceClassification,
    "token": AutoModelForTokenClassification,
}
IDS = torch.tensor([[5, 17, 99, 3, 250, 41], [0, 0, 8, 9, 10, 11]])
MASK = IDS.ne(0).long()


def first_output(model, ids=IDS, mask=MASK):
    out = model(ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("head", HEADS)
def test_safetensors_round_trip_gives_identical_outputs(tmp_path, model_type, head):
    model = make_model(model_type, head, num_labels=3)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    loaded = AUTO_BY_HEAD[head].from_pretrained(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    torch.testing.assert_close(first_output(loaded), first_output(model), rtol=1e-6, atol=1e-7)
    if head == "causal":
        assert loaded.lm_head.weight is loaded.model.embeddings.weight, "tied weights stay tied"


@pytest.mark.parametrize("model_type", FAMILIES)
def test_saved_folder_carries_code_and_an_auto_map_for_every_head(tmp_path, model_type):
    make_model(model_type).save_pretrained(tmp_path)
    config_file, modeling_file = (name.removesuffix(".py") for name in code_files(model_type))
    shared = {"configuration_recurrent.py", "modeling_recurrent.py"}  # minGRU and minLSTM build on them
    assert {path.name for path in tmp_path.glob("*.py")} == shared | {f"{config_file}.py", f"{modeling_file}.py"}
    prefix = class_prefix(model_type)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": f"{config_file}.{prefix}Config",
        "AutoModel": f"{modeling_file}.{prefix}Model",
        "AutoModelForCausalLM": f"{modeling_file}.{prefix}ForCausalLM",
        "AutoModelForSequenceClassification": f"{modeling_file}.{prefix}ForSequenceClassification",
        "AutoModelForTokenClassification": f"{modeling_file}.{prefix}ForTokenClassification",
    }


@pytest.mark.parametrize("model_type", FAMILIES)
def test_causal_lm_checkpoint_loads_into_every_head_with_only_the_new_head_missing(tmp_path, model_type):
    lm = make_model(model_type)
    lm.save_pretrained(tmp_path)
    base_output = lm.model(IDS, attention_mask=MASK).last_hidden_state
    for head, auto_class in AUTO_BY_HEAD.items():
        model, info = auto_class.from_pretrained(tmp_path, num_labels=4, output_loading_info=True)
        expected_missing = {"classifier.weight", "classifier.bias"} if head in ("sequence", "token") else set()
        assert set(info["missing_keys"]) == expected_missing, head
        assert not info["mismatched_keys"]
        encoder = model if head == "base" else model.model
        torch.testing.assert_close(encoder(IDS, attention_mask=MASK).last_hidden_state, base_output)


def test_loading_a_folder_of_another_model_type_is_refused(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=320)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="holds a 'gpt2' model"):
        LSTMForCausalLM.from_pretrained(tmp_path / "gpt2")
    make_model("rnn").save_pretrained(tmp_path / "rnn")
    with pytest.raises(ValueError, match="holds a 'rnn' model, which LSTMConfig"):
        LSTMForCausalLM.from_pretrained(tmp_path / "rnn")
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "rnn")).__name__ == "RNNForCausalLM"


def test_loading_a_missing_folder_says_so(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        LSTMForCausalLM.from_pretrained(tmp_path / "nowhere")


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    model_type=st.sampled_from(FAMILIES),
    head=st.sampled_from(HEADS),
    hidden_size=st.integers(1, 20),
    embedding_size=st.integers(1, 20),
    num_hidden_layers=st.integers(1, 3),
    tie=st.booleans(),
    bidirectional=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_save_load_equality(
    tmp_path_factory, model_type, head, hidden_size, embedding_size, num_hidden_layers, tie, bidirectional, seed
):
    bidirectional = bidirectional and head != "causal" and model_type in CLASSIC_FAMILIES
    model = make_model(
        model_type,
        head,
        seed=seed,
        hidden_size=hidden_size,
        embedding_size=embedding_size,
        num_hidden_layers=num_hidden_layers,
        tie_word_embeddings=tie,
        bidirectional=bidirectional,
        num_labels=3,
    )
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    loaded = AUTO_BY_HEAD[head].from_pretrained(folder)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    # Equal weights, but torch may take another kernel for weights laid out anew (2e-7 seen on a bidirectional RNN).
    torch.testing.assert_close(first_output(loaded), first_output(model), rtol=1e-6, atol=1e-6)


# --- pipelines ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_lms(tmp_path_factory, tiny_tokenizer):
    """A causal-LM folder (weights, code, tokenizer) per family."""
    folders = {}
    for model_type in FAMILIES:
        folder = tmp_path_factory.mktemp(model_type)
        make_model(model_type, vocab_size=len(tiny_tokenizer)).save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)
        folders[model_type] = folder
    return folders


@pytest.mark.parametrize("model_type", FAMILIES)
def test_pipelines_with_model_objects_and_folders(saved_lms, tiny_tokenizer, model_type):
    folder = saved_lms[model_type]
    lm = AutoModelForCausalLM.from_pretrained(folder)
    for model in (lm, str(folder)):
        generator = pipeline("text-generation", model=model, tokenizer=tiny_tokenizer)
        single = generator("the cat", max_new_tokens=5, do_sample=False)
        batched = generator(["the cat", "stocks fell on monday"], max_new_tokens=5, do_sample=False, batch_size=2)
        assert single[0]["generated_text"].startswith("the cat")
        assert batched[0] == single, "batching (left padding) must not change the generated text"

    classifier = pipeline("text-classification", model=str(folder), model_kwargs={"num_labels": 3})
    scores = classifier(["the cat sat", "markets"], top_k=None)
    assert [len(s) for s in scores] == [3, 3] and abs(sum(d["score"] for d in scores[0]) - 1) < 1e-5
    tagger = pipeline("token-classification", model=str(folder), model_kwargs={"num_labels": 2})
    assert [entity["word"] for entity in tagger("the cat sat")] == tiny_tokenizer.tokenize("the cat sat")
    features = pipeline("feature-extraction", model=str(folder), return_tensors=True)
    width = lm.model.output_size
    assert features("the cat sat").shape == (1, len(tiny_tokenizer("the cat sat").input_ids), width)
    objects = pipeline("feature-extraction", model=AutoModel.from_pretrained(folder), tokenizer=tiny_tokenizer)
    assert len(objects("the cat sat")[0]) == len(tiny_tokenizer("the cat sat").input_ids)


REMOTE_CODE_BODY = """
import torch
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification, pipeline)

folders, ids = ARGS
ids = torch.tensor(ids)
report = {}
for model_type, folder in folders.items():
    lm = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    heads = [AutoModel.from_pretrained(folder, trust_remote_code=True)]
    for auto in (AutoModelForSequenceClassification, AutoModelForTokenClassification):
        heads.append(auto.from_pretrained(folder, trust_remote_code=True, num_labels=2))
    generated = pipeline("text-generation", model=folder, trust_remote_code=True)(
        "the cat", max_new_tokens=4, do_sample=False)
    label = pipeline("text-classification", model=folder, trust_remote_code=True,
                     model_kwargs={"num_labels": 2})("the cat")
    tags = pipeline("token-classification", model=folder, trust_remote_code=True,
                    model_kwargs={"num_labels": 2})("the cat")
    features = pipeline("feature-extraction", model=folder, trust_remote_code=True)("the cat")
    report[model_type] = {
        "class": type(lm).__name__,
        "module": type(lm).__module__,
        "heads": [type(h).__name__ for h in heads],
        "logits": lm(ids).logits.tolist(),
        "tokens": lm.generate(ids, max_new_tokens=5, do_sample=False).tolist(),
        "generated": generated[0]["generated_text"],
        "label_count": len(label), "tag_count": len(tags), "feature_len": len(features[0]),
    }
report["hf_evolution_loaded"] = any(name.split(".")[0] == "hf_evolution" for name in sys.modules)
print(json.dumps(report))
"""


def test_remote_code_loads_every_head_where_hf_evolution_is_not_importable(saved_lms, tiny_tokenizer, tmp_path):
    ids = [[5, 17, 99, 3]]
    folders = {model_type: str(folder) for model_type, folder in saved_lms.items()}
    report = run_without_hf_evolution(REMOTE_CODE_BODY, [folders, ids], cwd=tmp_path)
    for model_type, folder in saved_lms.items():
        entry = report[model_type]
        prefix = class_prefix(model_type)
        assert entry["class"] == f"{prefix}ForCausalLM" and entry["module"].startswith("transformers_modules.")
        assert entry["heads"] == [
            f"{prefix}Model",
            f"{prefix}ForSequenceClassification",
            f"{prefix}ForTokenClassification",
        ]
        here = AutoModelForCausalLM.from_pretrained(folder)
        torch.testing.assert_close(torch.tensor(entry["logits"]), here(torch.tensor(ids)).logits, rtol=0, atol=1e-6)
        assert entry["tokens"] == here.generate(torch.tensor(ids), max_new_tokens=5, do_sample=False).tolist()
        local_text = pipeline("text-generation", model=here, tokenizer=tiny_tokenizer)(
            "the cat", max_new_tokens=4, do_sample=False
        )[0]["generated_text"]
        assert entry["generated"] == local_text
        n_tokens = len(tiny_tokenizer("the cat").input_ids)
        assert entry["label_count"] == 1 and entry["tag_count"] == n_tokens and entry["feature_len"] == n_tokens


def test_readme_quickstart_as_a_newcomer_types_it(tmp_path, monkeypatch, bbc_news):
    """The README's quickstart, line for line (on a slice of the corpus, to stay fast)."""
    monkeypatch.chdir(tmp_path)
    from hf_evolution import LSTMConfig
    from hf_evolution.tokenization import train_tokenizer

    corpus = bbc_news
    tokenizer = train_tokenizer(corpus["train"].select(range(200)))
    model = AutoModelForCausalLM.from_config(LSTMConfig(vocab_size=len(tokenizer)))
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = generator("The history of language models", max_new_tokens=20)[0]["generated_text"]
    assert text.startswith("The history of language models") and len(text) > len("The history of language models")
    model.save_pretrained("my-lstm")
    tokenizer.save_pretrained("my-lstm")
    assert type(AutoModelForCausalLM.from_pretrained("my-lstm")).__name__ == "LSTMForCausalLM"
    assert hf_evolution.__version__
