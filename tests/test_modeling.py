"""Configs, heads, losses, padding, weight tying, initialisation and bad input for the three recurrent families."""

import copy

import pytest
import torch
from conftest import CLASSIC_FAMILIES, ENCODER_CASES, FAMILIES, make_model, tiny_config
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import hf_evolution
from hf_evolution import GRUConfig, LSTMConfig, MinGRUConfig, MinLSTMConfig, RNNConfig

# --- configs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("hidden_size", -4),
        ("embedding_size", 2.5),
        ("num_hidden_layers", 0),
        ("bidirectional", "yes"),
        ("tie_word_embeddings", 1),
        ("input_dropout", 1.0),
        ("hidden_dropout", -0.1),
        ("weight_dropout", 1.5),
        ("embedding_dropout", "0.1"),
        ("classifier_dropout", 2.0),
        ("classifier_pooling", "cls"),
        ("initializer_range", 0),
        ("recurrent_initialization", "xavier"),
        ("pad_token_id", 10_000),
        ("eos_token_id", -1),
    ],
)
@pytest.mark.parametrize("config_class", [RNNConfig, LSTMConfig, GRUConfig, MinGRUConfig, MinLSTMConfig])
def test_invalid_config_values_raise_naming_the_field(config_class, field, value):
    with pytest.raises(ValueError, match=f"[`']{field}[`']"):
        config_class(vocab_size=100, **{field: value}) if field != "vocab_size" else config_class(vocab_size=value)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("intermediate_size", 0, r"must be in \[1, inf\)"),
        ("layer_norm_epsilon", -1e-5, r"must be in \(0, inf\)"),
        ("bidirectional", True, r"expected one of \(False,\)"),  # forward in time only
        ("weight_dropout", 0.2, r"expected one of \(0, 0.0\)"),  # no hidden-to-hidden weights to drop
        ("recurrent_initialization", "orthogonal", r"expected one of \('torch',\)"),  # nor to make orthogonal
    ],
)
@pytest.mark.parametrize("config_class", [MinGRUConfig, MinLSTMConfig])
def test_min_rnn_configs_refuse_what_the_recurrence_does_not_have(config_class, field, value, allowed):
    with pytest.raises(ValueError, match=f"(?s)'{field}'.*{allowed}"):
        config_class(**{field: value})


def test_min_rnn_config_defaults():
    config = MinGRUConfig(hidden_size=48, embedding_size=32)
    assert config.intermediate_size == 128, "the feed-forward part is 4x the residual stream by default"
    assert (config.initializer_range, config.recurrent_initialization) == (0.02, "torch")
    assert config.number_of_conv_states == 1 and MinLSTMConfig().number_of_conv_states == 1, "minLSTM drops c"


def test_nonlinearity_belongs_to_the_vanilla_rnn_only():
    assert RNNConfig(nonlinearity="relu").nonlinearity == "relu"
    with pytest.raises(ValueError, match=r"'nonlinearity' expected one of \('tanh', 'relu'\), got sigmoid"):
        RNNConfig(nonlinearity="sigmoid")
    assert not hasattr(LSTMConfig(), "nonlinearity")


def test_config_defaults_and_model_types():
    assert [family.config_class.model_type for family in hf_evolution.FAMILIES.values()] == list(hf_evolution.FAMILIES)
    assert FAMILIES == ("rnn", "lstm", "gru", "mingru", "minlstm")
    config = LSTMConfig(hidden_size=64)
    assert config.embedding_size == 64, "embedding_size follows hidden_size when unset"
    assert config.tie_word_embeddings is True
    assert config.layer_types == ["linear_attention", "linear_attention"]
    assert LSTMConfig().number_of_conv_states == 2 and GRUConfig().number_of_conv_states == 1


@pytest.mark.parametrize("model_type", FAMILIES)
def test_auto_classes_are_registered(model_type):
    config = tiny_config(model_type)
    assert type(AutoConfig.for_model(model_type)) is type(config)
    heads = hf_evolution.FAMILIES[model_type].heads
    for auto_class, task in (
        (AutoModel, "base"),
        (AutoModelForCausalLM, "lm"),
        (AutoModelForSequenceClassification, "classify"),
        (AutoModelForTokenClassification, "tokens"),
    ):
        assert type(auto_class.from_config(config)) is heads[task]


def test_causal_lm_refuses_bidirectional():
    with pytest.raises(ValueError, match="bidirectional"):
        AutoModelForCausalLM.from_config(tiny_config("lstm", bidirectional=True))


# --- heads and shapes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type, bidirectional", ENCODER_CASES)
def test_encoder_heads_shapes_and_hidden_states(model_type, bidirectional):
    ids = torch.randint(5, 320, (3, 9))
    # The state of the last layer (both directions), or for minGRU and minLSTM their residual stream.
    width = 16 * (2 if bidirectional else 1) if model_type in CLASSIC_FAMILIES else 12
    base = make_model(model_type, "base", bidirectional=bidirectional)
    out = base(ids, output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 9, width) and base.output_size == width
    assert len(out.hidden_states) == 3, "embeddings + one entry per layer"
    assert out.hidden_states[0].shape == (3, 9, 12)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    assert (out.cache is None) == bidirectional

    sequence = make_model(model_type, "sequence", bidirectional=bidirectional, num_labels=4)
    assert sequence(ids).logits.shape == (3, 4)
    token = make_model(model_type, "token", bidirectional=bidirectional, num_labels=5)
    assert token(ids).logits.shape == (3, 9, 5)


def test_rnn_nonlinearity_reaches_the_kernel():
    model = make_model("rnn", "base", nonlinearity="relu")
    assert all(layer.rnn.nonlinearity == "relu" for layer in model.layers)
    hidden = model(torch.randint(5, 320, (2, 6)), use_cache=False).last_hidden_state
    assert bool((hidden >= 0).all()), "a relu RNN outputs no negative values"


def test_return_dict_false_gives_tuples():
    model = make_model("gru")
    ids = torch.randint(5, 320, (2, 5))
    loss, logits = model(ids, labels=ids, use_cache=False, return_dict=False)[:2]
    torch.testing.assert_close(logits, model(ids, use_cache=False).logits)
    assert loss.ndim == 0


# --- losses ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", FAMILIES)
def test_causal_lm_loss_is_shifted_cross_entropy_ignoring_minus_100(model_type):
    model = make_model(model_type)
    ids = torch.randint(5, 320, (2, 8))
    labels = ids.clone()
    labels[0, 5:] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 320), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("head", ["causal", "token"])
def test_loss_with_num_items_in_batch_makes_gradient_accumulation_exact(head):
    """Trainer passes num_items_in_batch: two half-batch losses must add up to the full-batch loss."""
    model = make_model("lstm", head, num_labels=3)
    ids = torch.randint(5, 320, (4, 7))
    labels = ids.clone() if head == "causal" else torch.randint(0, 3, (4, 7))
    labels[1, 2:] = -100
    full = model(ids, labels=labels).loss
    counted = (labels[:, 1:] if head == "causal" else labels).ne(-100).sum()
    halves = sum(
        model(ids[rows], labels=labels[rows], num_items_in_batch=counted).loss for rows in (slice(0, 2), slice(2, 4))
    )
    torch.testing.assert_close(halves, full)


def test_sequence_classification_loss_and_regression():
    model = make_model("gru", "sequence", num_labels=3)
    ids = torch.randint(5, 320, (4, 6))
    labels = torch.tensor([0, 2, 1, 1])
    out = model(ids, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    regression = make_model("gru", "sequence", num_labels=1)
    targets = torch.randn(4)
    out = regression(ids, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(), targets))


# --- padding -----------------------------------------------------------------------------------------------------


def pad_rows(rows, side, pad_id=0):
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


@pytest.mark.parametrize("model_type, bidirectional", ENCODER_CASES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_never_changes_outputs(model_type, side, bidirectional):
    rows = [[11, 12, 13], [21, 22, 23, 24, 25, 26], [31]]
    ids, mask = pad_rows(rows, side)
    for pooling in ("last", "mean", "max"):
        model = make_model(
            model_type, "sequence", bidirectional=bidirectional, num_labels=3, classifier_pooling=pooling
        )
        batch_logits = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(torch.tensor([row])).logits[0]
            torch.testing.assert_close(batch_logits[i], alone, atol=1e-5, rtol=1e-5)
    token = make_model(model_type, "token", bidirectional=bidirectional, num_labels=3)
    batch_logits = token(ids, attention_mask=mask).logits
    for i, row in enumerate(rows):
        alone = token(torch.tensor([row])).logits[0]
        torch.testing.assert_close(batch_logits[i][mask[i].bool()], alone, atol=1e-5, rtol=1e-5)


def test_padding_anywhere_and_all_padding_rows():
    model = make_model("lstm", "base")
    row = torch.tensor([[7, 8, 9, 10]])
    holes = torch.tensor([[0, 7, 0, 8, 9, 0, 10]])
    out = model(holes, attention_mask=holes.ne(0).long())
    alone = model(row)
    torch.testing.assert_close(out.last_hidden_state[0, holes[0].ne(0)], alone.last_hidden_state[0])
    assert bool((out.last_hidden_state[0, holes[0].eq(0)] == 0).all()), "padding gets zero outputs"
    for state_idx in range(2):
        torch.testing.assert_close(
            out.cache.get_recurrent_state(1, state_idx), alone.cache.get_recurrent_state(1, state_idx)
        )
    empty = model(torch.tensor([[0, 0], [5, 6]]), attention_mask=torch.tensor([[0, 0], [1, 1]]))
    assert bool((empty.last_hidden_state[0] == 0).all())
    assert bool((empty.cache.get_recurrent_state(0, 0)[0] == 0).all()), "a row of padding keeps the initial state"


def test_classification_heads_infer_the_mask_from_the_pad_token():
    model = make_model("gru", "sequence", num_labels=2)
    padded = torch.tensor([[0, 0, 7, 8, 9]])
    torch.testing.assert_close(model(padded).logits, model(torch.tensor([[7, 8, 9]])).logits)


# --- weights -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", FAMILIES)
def test_tied_embeddings_with_projection_when_sizes_differ(model_type):
    model = make_model(model_type)  # hidden 16, embedding 12
    assert model.lm_head.weight is model.model.embeddings.weight
    # The classic families output their state (16 wide), minGRU and minLSTM their residual stream (12).
    width = 16 if model_type in CLASSIC_FAMILIES else 12
    if width == 12:
        assert model.output_projection is None
    else:
        assert model.output_projection.weight.shape == (12, 16)
    same_sizes = make_model(model_type, embedding_size=16)
    assert same_sizes.output_projection is None and same_sizes.lm_head.weight is same_sizes.model.embeddings.weight
    untied = make_model(model_type, tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.model.embeddings.weight
    assert untied.output_projection is None and untied.lm_head.weight.shape == (320, width)


def test_resize_token_embeddings_keeps_the_tie():
    model = make_model("lstm")
    model.resize_token_embeddings(330)
    assert model.lm_head.weight is model.model.embeddings.weight
    assert model.lm_head.weight.shape == (330, 12) and model.lm_head.bias.shape == (330,)
    assert model.config.vocab_size == 330
    assert model(torch.tensor([[325, 329]])).logits.shape == (1, 2, 330)


@pytest.mark.parametrize("model_type", CLASSIC_FAMILIES)
def test_recurrent_initialisation(model_type):
    model = make_model(model_type, hidden_size=32)
    rnn = model.model.layers[0].rnn
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[model_type]
    for gate in range(gates):
        block = rnn.weight_hh_l0[gate * 32 : (gate + 1) * 32]
        torch.testing.assert_close(block @ block.T, torch.eye(32), atol=1e-4, rtol=0)
    assert rnn.weight_ih_l0.abs().max() <= 1 / 32**0.5
    forget_bias = rnn.bias_ih_l0[32:64]
    if model_type == "lstm":
        assert bool((forget_bias == 1).all()) and bool((rnn.bias_ih_l0[:32] == 0).all())
    else:
        assert bool((rnn.bias_ih_l0 == 0).all())
    assert model.model.embeddings.weight.abs().max() <= model.config.initializer_range


@pytest.mark.parametrize("model_type", ["mingru", "minlstm"])
def test_min_rnn_initialisation(model_type):
    """Linear layers and embeddings within +-initializer_range (0.02), biases zero, LayerNorms the identity."""
    model = make_model(model_type, hidden_size=32)
    bound = model.config.initializer_range
    for name, param in model.named_parameters():
        if "norm" in name:
            assert bool((param == (1 if name.endswith("weight") else 0)).all()), name
        elif name.endswith("bias"):
            assert bool((param == 0).all()), name
        else:
            assert 0 < param.abs().max() <= bound, name


@pytest.mark.parametrize("model_type", CLASSIC_FAMILIES)
def test_torch_recurrent_initialisation_matches_reset_parameters(model_type):
    """`recurrent_initialization="torch"` draws every recurrent weight and bias as torch's own default does."""
    model = make_model(model_type, hidden_size=32, recurrent_initialization="torch")
    rnn = model.model.layers[0].rnn
    reference = copy.deepcopy(rnn)
    reference.reset_parameters()
    for name, ours in rnn.named_parameters():
        theirs = getattr(reference, name)
        assert ours.abs().max() <= 1 / 32**0.5, name
        assert abs(ours.std().item() - theirs.std().item()) < 0.25 * theirs.std().item(), name
    assert not bool((rnn.bias_ih_l0 == 0).any())


# --- dropout and activation checkpointing -----------------------------------------------------------------------


def test_dropouts_act_in_training_only():
    model = make_model("lstm", input_dropout=0.3, hidden_dropout=0.3, weight_dropout=0.5, embedding_dropout=0.2)
    ids = torch.randint(5, 320, (2, 6))
    eval_logits = model(ids).logits
    torch.testing.assert_close(model(ids).logits, eval_logits)
    model.train()
    assert not torch.allclose(model(ids).logits, eval_logits)
    model.eval()
    torch.testing.assert_close(model(ids).logits, eval_logits)


def test_weight_dropout_is_dropconnect_on_recurrent_weights():
    model = make_model("gru", weight_dropout=0.5).train()
    ids = torch.randint(5, 320, (2, 6))
    model(ids, labels=ids).loss.backward()
    assert model.model.layers[0].rnn.weight_hh_l0.grad is not None
    assert set(dict(model.named_parameters())) == set(dict(make_model("gru").named_parameters()))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_activation_checkpointing_gives_the_same_gradients(model_type):
    ids = torch.randint(5, 320, (2, 8))
    grads = []
    for checkpointing in (False, True):
        model = make_model(model_type, input_dropout=0.2, hidden_dropout=0.2).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        torch.manual_seed(1)
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["base", "causal", "sequence", "token"])
@pytest.mark.parametrize("bad_id", [320, 10_000, -1])
def test_out_of_range_token_ids_name_the_id_and_vocab_size(head, bad_id):
    model = make_model("lstm", head, num_labels=2)
    ids = torch.tensor([[5, 6, bad_id, 7]])
    with pytest.raises(ValueError, match=rf"Token id {bad_id} .*\[0, 320\)"):
        model(ids)


def test_empty_input_is_refused():
    model = make_model("gru")
    with pytest.raises(ValueError, match="Empty input"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="Empty input"):
        model(torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of"):
        model()


def test_mismatched_attention_mask_is_refused():
    model = make_model("rnn")
    with pytest.raises(ValueError, match="covers 3 tokens but the input has 4"):
        model(torch.tensor([[5, 6, 7, 8]]), attention_mask=torch.ones(1, 3, dtype=torch.long))


def test_bidirectional_encoder_refuses_a_cache():
    model = make_model("lstm", "base", bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        model(torch.tensor([[5, 6]]), use_cache=True)


def test_max_pooling_of_a_row_of_padding_alone_is_finite():
    model = make_model("lstm", "sequence", num_labels=3, classifier_pooling="max")
    ids, mask = torch.tensor([[0, 0, 0], [5, 6, 7]]), torch.tensor([[0, 0, 0], [1, 1, 1]])
    out = model(ids, attention_mask=mask, labels=torch.tensor([0, 1]))
    torch.testing.assert_close(out.logits[0], model.classifier.bias, msg="pooled to zeros, as mean pooling does")
    assert torch.isfinite(out.loss) and out.loss < 10


def test_float_input_ids_are_refused_with_a_clear_error():
    model = make_model("gru")
    with pytest.raises(ValueError, match="must hold integer token ids, got a tensor of torch.float32"):
        model(torch.tensor([[5.0, 6.0]]))


def test_token_ids_on_an_accelerator_are_not_read_back_at_every_forward():
    """Reading the ids' values would wait for the device at every decoding step: only CPU tensors are read."""
    model = make_model("lstm", "base")
    model.check_input_ids(torch.zeros(1, 3, dtype=torch.long, device="meta"))  # values unreadable: none were read
    with pytest.raises(ValueError, match="Token id 320"):
        model.check_input_ids(torch.tensor([[5, 320]]))


# --- minGRU and minLSTM: the parallel scan against the recurrence step by step ------------------------------------


def g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def step_by_step(cell, inputs, initial_state, mask):
    """The paper's sequential form, one step at a time from the definitions; padded steps keep the state."""
    projections = cell.gates(inputs).double()
    hidden = projections.shape[-1] // cell.number_of_projections
    state = torch.zeros(inputs.shape[0], hidden, dtype=torch.float64) if initial_state is None else initial_state
    states = []
    for t in range(inputs.shape[1]):
        if isinstance(cell, hf_evolution.modeling_minrnn.MinGRUCell):
            gate, candidate = projections[:, t].chunk(2, dim=-1)
            z = torch.sigmoid(gate)
            new_state = (1 - z) * state + z * g(candidate)
        else:
            forget, input_gate, candidate = projections[:, t].chunk(3, dim=-1)
            f, i = torch.sigmoid(forget), torch.sigmoid(input_gate)
            new_state = f / (f + i) * state + i / (f + i) * g(candidate)
        state = torch.where(mask[:, t, None].bool(), new_state, state) if mask is not None else new_state
        states.append(state)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("model_type", ["mingru", "minlstm"])
@pytest.mark.parametrize("length", [1, 5, 64, 65, 300])
@pytest.mark.parametrize("padding", [None, "left", "scattered"])
@pytest.mark.parametrize("with_state", [False, True])
def test_parallel_scan_equals_the_recurrence_step_by_step(model_type, length, padding, with_state):
    torch.manual_seed(length)
    cell = hf_evolution.modeling_minrnn.MIN_RNN_CELLS[model_type](8, 16)
    inputs = torch.randn(3, length, 8) * 2
    initial_state = torch.rand(3, 16) if with_state else None
    mask = None
    if padding is not None:
        mask = torch.ones(3, length, dtype=torch.long)
        if padding == "left":
            mask[0, : length // 2] = 0
            mask[1] = 0  # a row of padding alone keeps its state
        else:
            mask[:, torch.rand(length) < 0.3] = 0
    states, final_state = cell(inputs, initial_state, mask)
    reference = step_by_step(cell, inputs, None if initial_state is None else initial_state.double(), mask)
    torch.testing.assert_close(states.double(), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final_state.double(), reference[:, -1], atol=1e-5, rtol=1e-5)


def scan_inputs(length, gate_scale, candidate_scale, seed=0):
    """minGRU's `log a`, `log b` for random gates and candidates (float32), with a random carried state."""
    generator = torch.Generator().manual_seed(seed)
    gate = torch.randn(2, length, 4, generator=generator) * gate_scale
    candidate = torch.randn(2, length, 4, generator=generator) * candidate_scale
    log_g = hf_evolution.modeling_minrnn.log_g
    return (
        -torch.nn.functional.softplus(gate),
        -torch.nn.functional.softplus(-gate) + log_g(candidate),
        torch.rand(2, 4),
    )


def recurrence_in_float64(log_a, log_b, state, mask):
    a, b, state = log_a.double().exp(), log_b.double().exp(), state.double()
    states = []
    for t in range(a.shape[1]):
        state = torch.where(mask[:, t, None].bool(), a[:, t] * state + b[:, t], state)
        states.append(state)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 16, 17, 1000, 65536])
def test_blocked_scan_is_within_1e_5_of_the_float64_recurrence_up_to_65536_steps(length):
    log_a, log_b, state = scan_inputs(length, gate_scale=3, candidate_scale=2, seed=length)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[0, : length // 3] = 0  # left padding before a carried state
    mask[1, torch.rand(length, generator=torch.Generator().manual_seed(1)) < 0.2] = 0
    scanned = hf_evolution.modeling_minrnn.blocked_scan(log_a, log_b, state, mask)
    reference = recurrence_in_float64(log_a, log_b, state, mask)
    assert (scanned.double() - reference).abs().max() <= 1e-5
    logspace = hf_evolution.modeling_minrnn.log_space_scan(log_a, log_b, state, mask)
    torch.testing.assert_close(scanned, logspace, atol=5e-5, rtol=5e-5)  # the paper's form, less exact in float32


@pytest.mark.parametrize("candidate_scale", [1e4, 1e30])
def test_blocked_scan_does_not_overflow_at_extreme_gates_and_candidates(candidate_scale):
    """Gates of +-1e4 (a of exactly 0 and 1 in float32) and candidate states up to 1e30: finite, within 1e-5 of the
    float64 recurrence relative to the largest state of each channel, and finite gradients."""
    log_a, log_b, state = scan_inputs(4096, gate_scale=1e4, candidate_scale=candidate_scale)
    log_a.requires_grad_(True)
    log_b.requires_grad_(True)
    scanned = hf_evolution.modeling_minrnn.blocked_scan(log_a, log_b, state, None)
    reference = recurrence_in_float64(log_a.detach(), log_b.detach(), state, torch.ones(2, 4096))
    assert torch.isfinite(scanned).all()
    assert ((scanned.double() - reference).abs() / reference.abs().amax(dim=1, keepdim=True)).max() <= 1e-5
    (scanned / scanned.detach().abs().amax()).sum().backward()
    assert torch.isfinite(log_a.grad).all() and torch.isfinite(log_b.grad).all()


@pytest.mark.parametrize("model_type", ["mingru", "minlstm"])
def test_parallel_scan_gradients_equal_the_recurrence_step_by_step(model_type):
    torch.manual_seed(0)
    cell = hf_evolution.modeling_minrnn.MIN_RNN_CELLS[model_type](8, 16)
    inputs = torch.randn(2, 130, 8)
    mask = torch.ones(2, 130, dtype=torch.long)
    mask[0, :40] = 0
    cell(inputs, None, mask)[0].pow(2).sum().backward()
    scanned = cell.gates.weight.grad.clone()
    cell.zero_grad()
    step_by_step(cell, inputs, None, mask).pow(2).sum().backward()
    reference = cell.gates.weight.grad
    assert torch.isfinite(scanned).all(), "padding at the start of a row must not make the gradient NaN"
    # Summed over 260 float32 steps: compared to the largest gradient (about 100).
    assert (scanned - reference).abs().max() <= 2e-5 * reference.abs().max()
