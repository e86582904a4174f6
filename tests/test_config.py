import json

import pytest

from electra_np.config import ElectraConfig, PretrainingConfig, generator_config, preset


def test_presets_and_generator_derivation():
    small = preset("small")
    assert (small.embedding_size, small.hidden_size, small.num_hidden_layers, small.num_attention_heads,
            small.intermediate_size, small.vocab_size, small.layer_norm_eps) == (128, 256, 12, 4, 1024, 30522, 1e-12)
    gen = generator_config(small)  # official: H/4 = 64, heads max(1, 64 // 64) = 1, F = 256, same depth
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size, gen.num_hidden_layers,
            gen.embedding_size) == (64, 1, 256, 12, 128)
    base_gen = generator_config(preset("base"), 1 / 3)  # official base generator: 256 hidden, 4 heads
    assert (base_gen.hidden_size, base_gen.num_attention_heads, base_gen.intermediate_size) == (256, 4, 1024)
    assert generator_config(preset("tiny"), 1.0) == preset("tiny")
    assert preset("tiny", hidden_size=64).hidden_size == 64


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 10, r"hidden_size \(10\) must be divisible by num_attention_heads \(4\)"),
    ("vocab_size", 0, "vocab_size must be a positive integer, got 0"),
    ("intermediate_size", -3, "intermediate_size must be a positive integer"),
    ("num_hidden_layers", 1.5, "num_hidden_layers must be a positive integer"),
    ("hidden_dropout_prob", 1.0, r"hidden_dropout_prob must be in \[0, 1\), got 1.0"),
    ("attention_probs_dropout_prob", -0.1, "attention_probs_dropout_prob must be in"),
    ("hidden_act", "relu", "hidden_act must be one of"),
    ("pad_token_id", 30522, "pad_token_id must be in"),
])
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        preset("small", **{field: value})


def test_pretraining_config_checks():
    assert PretrainingConfig().max_predictions(128) == 19  # official int((0.15 + 0.005) * 128)
    for kw, msg in [({"mask_prob": 0}, "mask_prob"), ({"temperature": 0}, "temperature"),
                    ({"final_temperature": 0}, "final_temperature"), ({"final_temperature": -1.0}, "final_temperature"),
                    ({"objective": "gan"}, "objective"), ({"generator_hidden_size": 2}, "generator_hidden_size")]:
        with pytest.raises(ValueError, match=msg):
            PretrainingConfig(**kw)


def test_temperature_schedule_is_constant_or_linear_from_first_to_last_step():
    assert [PretrainingConfig(temperature=3.0).temperature_at(s, 5) for s in range(5)] == [3.0] * 5
    annealed = PretrainingConfig(temperature=3.0, final_temperature=1.0)
    assert [annealed.temperature_at(s, 5) for s in range(5)] == [3.0, 2.5, 2.0, 1.5, 1.0]
    assert annealed.temperature_at(7, 5) == 1.0 and annealed.temperature_at(0, 1) == 3.0  # clamped; one step


def test_hugging_face_config_json_round_trip(tmp_path):
    cfg = preset("small")
    path = tmp_path / "config.json"
    cfg.save_json(path, architectures=["ElectraForPreTraining"])
    d = json.loads(path.read_text())
    assert d["model_type"] == "electra" and d["architectures"] == ["ElectraForPreTraining"]
    assert ElectraConfig.from_json(path) == cfg
    # a real HF config carries extra keys; embedding_size None means E = H
    d.update(summary_type="first", position_embedding_type="absolute", embedding_size=None)
    assert ElectraConfig.from_dict(d).embedding_size == 256
    with pytest.raises(ValueError, match="model_type is 'bert', not 'electra'"):
        ElectraConfig.from_dict(dict(d, model_type="bert"))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        ElectraConfig.from_json(path)
