"""generate() with the carried recurrent state: exact against recomputation, padding, beams, continuation."""

import pytest
import torch
from conftest import FAMILIES, make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from hf_evolution import RecurrentCache

# No EOS: every generation runs its full length, so sequences compare position by position.
NO_EOS = {"eos_token_id": None}


def prompt(length, seed=0, batch=1):
    return torch.randint(5, 320, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_chunked_forward_with_cache_equals_one_forward(model_type):
    model = make_model(model_type)
    ids = prompt(12, batch=2)
    full = model(ids).logits
    cache = None
    pieces = []
    for chunk in (ids[:, :5], ids[:, 5:6], ids[:, 6:]):
        out = model(chunk, cache=cache, use_cache=True)
        cache = out.cache
        pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert isinstance(cache, RecurrentCache) and cache.seen_tokens == 12


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_decoding_step_gives_the_same_logits_and_states_with_a_mask_and_hidden_states(model_type):
    """A step of one token with no mask, as generate() feeds it, against the same step with the mask of the whole
    sequence and hidden states asked for (mask alignment, hidden-state collection): exactly equal, step after step."""
    model = make_model(model_type)
    ids = prompt(9, batch=3)
    with torch.no_grad():
        fast = model(ids[:, :4], use_cache=True).cache
    general = fast.copy()
    for position in range(4, 9):
        token = ids[:, position : position + 1]
        with torch.no_grad():
            quick = model(token, cache=fast, use_cache=True)
            full = model(
                token,
                cache=general,
                use_cache=True,
                attention_mask=torch.ones(3, position + 1),
                output_hidden_states=True,
            )
        assert quick.hidden_states is None and full.hidden_states is not None, "each went its own way"
        torch.testing.assert_close(quick.logits, full.logits, atol=0, rtol=0)
        for layer in range(model.config.num_hidden_layers):
            for ours, theirs in zip(fast.layer_state(layer), general.layer_state(layer), strict=True):
                torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert fast.seen_tokens == general.seen_tokens == 9


@pytest.mark.parametrize("model_type", FAMILIES)
def test_hooks_on_the_backbone_run_for_the_prompt_and_every_decoding_step(model_type):
    """No silent bypass: a hook on the backbone (accelerate places devices this way) sees every call of generate()."""
    model = make_model(model_type)
    calls = []
    model.model.register_forward_hook(lambda module, args, output: calls.append(output.last_hidden_state.shape[1]))
    model.generate(prompt(5), max_new_tokens=4, do_sample=False, **NO_EOS)
    assert calls == [5, 1, 1, 1], "the prompt, then one call per new token but the last"


CLASSIC = [name for name in FAMILIES if name in ("rnn", "lstm", "gru")]


@pytest.mark.parametrize("model_type", CLASSIC + ["rnn-relu"])
def test_a_decoding_step_through_the_cell_function_equals_the_module_call(model_type):
    """generate()'s steps call torch's cell function (`torch.lstm_cell` and kin) on the kernel module's weights; a hook
    on that module sends them through the module call instead. Both give the same tokens, logits and states."""
    model = make_model("rnn", nonlinearity="relu") if model_type == "rnn-relu" else make_model(model_type)
    ids = prompt(6, batch=2)
    kwargs = {"max_new_tokens": 6, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    steps = []
    for layer in model.model.layers:
        layer.cell_step = lambda inputs, states, step=layer.cell_step: steps.append(1) or step(inputs, states)
    fast = model.generate(ids, **kwargs, **NO_EOS)
    assert len(steps) == 2 * 5, "without hooks, every decoding step of every layer took the cell function"
    calls = []
    for layer in model.model.layers:
        layer.rnn.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[1]))
    general = model.generate(ids, **kwargs, **NO_EOS)
    assert len(steps) == 2 * 5 and calls == [6, 6] + [1, 1] * 5, (
        "the hooks ran for the prompt and every decoding step, in every layer"
    )
    assert torch.equal(fast.sequences, general.sequences)
    torch.testing.assert_close(torch.stack(fast.logits), torch.stack(general.logits), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"do_sample": False},
        {"do_sample": True, "top_k": 20, "temperature": 0.8},
        {"do_sample": False, "num_beams": 3, "num_return_sequences": 2},
        {"do_sample": True, "num_beams": 2, "num_return_sequences": 2},
    ],
    ids=["greedy", "sampling", "beam", "beam-sampling"],
)
def test_cached_generation_equals_uncached_recomputation(model_type, kwargs):
    model = make_model(model_type, **NO_EOS)
    ids = prompt(6, batch=2)
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        outputs.append(model.generate(ids, max_new_tokens=12, use_cache=use_cache, **kwargs))
    assert outputs[0].shape == (2 * kwargs.get("num_return_sequences", 1), 18)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_sampling_is_seeded():
    model = make_model("lstm", **NO_EOS)
    ids = prompt(4)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(model.generate(ids, max_new_tokens=20, do_sample=True))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(model_type, use_cache, num_beams):
    model = make_model(model_type, **NO_EOS)
    prompts = [prompt(3, seed=1)[0], prompt(8, seed=2)[0], prompt(5, seed=3)[0]]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    batch = model.generate(
        ids, attention_mask=mask, max_new_tokens=10, do_sample=False, num_beams=num_beams, use_cache=use_cache
    )
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=10, do_sample=False, num_beams=num_beams)
        torch.testing.assert_close(batch[i, width - len(p) :], alone[0], rtol=0, atol=0)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_continuing_from_a_returned_cache(model_type):
    model = make_model(model_type, **NO_EOS)
    ids = prompt(5, batch=2)
    straight = model.generate(ids, max_new_tokens=14, do_sample=False)
    first = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    assert first.cache.seen_tokens == 5 + 6 - 1, "the last generated token has not been fed yet"
    # As with a KV cache: the whole sequence so far, and the cache.
    more = model.generate(first.sequences, cache=first.cache, max_new_tokens=8, do_sample=False)
    torch.testing.assert_close(more, straight, rtol=0, atol=0)
    # Or only the unseen tokens together with the attention mask of the whole sequence.
    again = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    tail = model.generate(
        again.sequences[:, -1:],
        attention_mask=torch.ones_like(again.sequences),
        cache=again.cache,
        max_new_tokens=8,
        do_sample=False,
    )
    torch.testing.assert_close(tail[:, 1:], straight[:, 11:], rtol=0, atol=0)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_generating_from_inputs_embeds_equals_generating_from_ids(model_type):
    model = make_model(model_type, **NO_EOS)
    ids = prompt(5, batch=2)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    from_ids = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    embeds = model.get_input_embeddings()(ids)
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=7, do_sample=False)
    torch.testing.assert_close(from_embeds, from_ids[:, 5:], rtol=0, atol=0)  # as GPT-2: only the new tokens


def test_continuing_with_a_mask_shorter_than_the_cache_is_refused():
    model = make_model("gru", **NO_EOS)
    out = model.generate(prompt(6), max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    with pytest.raises(ValueError, match="already holds 9 tokens"):
        model.generate(prompt(3), attention_mask=torch.tensor([[0, 1, 1]]), cache=out.cache, max_new_tokens=2)


def test_assisted_decoding_is_refused_for_a_stateful_model():
    model = make_model("lstm", **NO_EOS)
    with pytest.raises(ValueError, match="stateful"):
        model.generate(prompt(4), assistant_model=make_model("lstm", **NO_EOS), max_new_tokens=3)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_state_size_does_not_grow_with_context(model_type):
    """A KV cache grows with every token; the recurrent state must stay the same size at any length."""
    model = make_model(model_type, **NO_EOS)

    def state_bytes(cache):
        return sum(
            layer.recurrent_states[i].nelement() * layer.recurrent_states[i].element_size()
            for layer in cache.layers
            for i in range(layer.number_of_states)
        )

    sizes = []
    for length in (4, 64, 512):
        out = model(prompt(length))
        sizes.append(state_bytes(out.cache))
    states_per_layer = 2 if model_type == "lstm" else 1
    assert sizes == [2 * states_per_layer * 16 * 4] * 3
    generated = model.generate(prompt(4), max_new_tokens=50, do_sample=False, return_dict_in_generate=True)
    assert state_bytes(generated.cache) == sizes[0]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_generate_in_training_mode_and_without_attention_mask(model_type):
    model = make_model(model_type, **NO_EOS).train()
    out = model.generate(prompt(4), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model_type=st.sampled_from(FAMILIES),
    hidden_size=st.integers(1, 24),
    embedding_size=st.integers(1, 24),
    num_hidden_layers=st.integers(1, 3),
    tie=st.booleans(),
    prompt_length=st.integers(1, 9),
    split=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_property_cached_equals_uncached(
    model_type, hidden_size, embedding_size, num_hidden_layers, tie, prompt_length, split, seed
):
    model = make_model(
        model_type,
        seed=seed,
        hidden_size=hidden_size,
        embedding_size=embedding_size,
        num_hidden_layers=num_hidden_layers,
        tie_word_embeddings=tie,
        **NO_EOS,
    )
    ids = prompt(prompt_length + 8, seed=seed, batch=2)
    split = min(split, ids.shape[1] - 1)
    full = model(ids).logits
    head = model(ids[:, :split], use_cache=True)
    rest = model(ids[:, split:], cache=head.cache, use_cache=True)
    torch.testing.assert_close(torch.cat([head.logits, rest.logits], dim=1), full, atol=1e-5, rtol=1e-4)
    cached = model.generate(ids[:, :prompt_length], max_new_tokens=6, do_sample=False)
    uncached = model.generate(ids[:, :prompt_length], max_new_tokens=6, do_sample=False, use_cache=False)
    torch.testing.assert_close(cached, uncached, rtol=0, atol=0)


def test_one_token_steps_leave_the_global_onednn_switch_as_they_found_it():
    """Decoding steps on CPU switch oneDNN off around the kernel call; the rest of the program must not notice."""
    model = make_model("lstm", **NO_EOS)
    before = torch.backends.mkldnn.enabled
    model.generate(prompt(3), max_new_tokens=4, do_sample=False)
    assert torch.backends.mkldnn.enabled == before
    torch.backends.mkldnn.enabled = False
    try:
        model.generate(prompt(3), max_new_tokens=4, do_sample=False)
        assert torch.backends.mkldnn.enabled is False, "a switch the user turned off stays off"
    finally:
        torch.backends.mkldnn.enabled = before


def state_snapshot(cache):
    return cache.seen_tokens, [
        [state.clone() for state in cache.layer_state(index)] for index in range(len(cache.layers))
    ]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_returned_cache_seeds_several_continuations_and_stays_as_it_was(model_type):
    """As with GPT-2: generate() leaves a cache it is given untouched, so the same cache can be continued twice."""
    model = make_model(model_type, **NO_EOS)
    first = model.generate(prompt(5, batch=2), max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    seen, states = state_snapshot(first.cache)
    runs = [model.generate(first.sequences, cache=first.cache, max_new_tokens=6, do_sample=False) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    torch.testing.assert_close(runs[0], model.generate(first.sequences, max_new_tokens=6, do_sample=False))
    after_seen, after_states = state_snapshot(first.cache)
    assert after_seen == seen
    for before_layer, after_layer in zip(states, after_states, strict=True):
        for before, after in zip(before_layer, after_layer, strict=True):
            torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_a_cache_continues_into_beam_search_as_recomputation_does():
    model = make_model("gru", **NO_EOS)
    first = model.generate(prompt(5, batch=2), max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    kwargs = dict(max_new_tokens=5, do_sample=False, num_beams=3, num_return_sequences=2)
    from_cache = model.generate(first.sequences, cache=first.cache, **kwargs)
    torch.testing.assert_close(from_cache, model.generate(first.sequences, **kwargs), rtol=0, atol=0)


def test_caches_that_cannot_continue_the_input_are_refused_by_name():
    model = make_model("lstm", **NO_EOS)
    out = model.generate(prompt(6), max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    with pytest.raises(ValueError, match="already holds 9 tokens but `input_ids` and `attention_mask` cover 3"):
        model.generate(prompt(3), cache=out.cache, max_new_tokens=2)  # an all-ones mask: taken as the whole sequence
    with pytest.raises(ValueError, match="`attention_mask` covers 5; give the mask of the whole sequence \\(11 "):
        model.generate(prompt(2), attention_mask=torch.ones(1, 5, dtype=torch.long), cache=out.cache, max_new_tokens=2)
    with pytest.raises(ValueError, match="holds the state of 1 sequences but generate\\(\\) was given 3"):
        model.generate(prompt(12, batch=3), cache=out.cache, max_new_tokens=2)
    with pytest.raises(ValueError, match="holds the state of 1 sequences but the input has 2"):
        model(prompt(2, batch=2), cache=out.cache, use_cache=True)
    with pytest.raises(ValueError, match="RecurrentCache, got DynamicCache"):
        model.generate(prompt(3), cache=DynamicCache(), max_new_tokens=2)
    with pytest.raises(ValueError, match="RecurrentCache, got DynamicCache"):
        model(prompt(3), cache=DynamicCache(), use_cache=True)
