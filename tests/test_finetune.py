import numpy as np
import pytest

from electra_np.config import ElectraConfig
from electra_np.params import encoder_shapes, init_params
from electra_np.train.finetune import FinetuneConfig, evaluate, finetune, layer_lr_scales

NAMES = ["electra.embeddings.word_embeddings.weight", "electra.embeddings.LayerNorm.bias",
         "electra.embeddings_project.weight", "electra.encoder.layer.0.attention.self.query.weight",
         "electra.encoder.layer.1.output.dense.bias", "electra.encoder.layer.2.output.LayerNorm.weight",
         "classifier.weight", "classifier.out_proj.bias"]


def test_layerwise_decay_factors():
    s = layer_lr_scales(NAMES, 3, 0.8)
    assert s["classifier.weight"] == s["classifier.out_proj.bias"] == 1.0
    assert s["electra.encoder.layer.2.output.LayerNorm.weight"] == pytest.approx(0.8)  # top layer: decay once
    assert s["electra.encoder.layer.1.output.dense.bias"] == pytest.approx(0.8 ** 2)
    assert s["electra.encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.8 ** 3)
    for k in NAMES[:3]:
        assert s[k] == pytest.approx(0.8 ** 4)  # embeddings and their projection: below layer 0
    off = layer_lr_scales(NAMES, 3, 0.8, official_layer_decay=True)  # official _get_layer_lrs
    assert off["electra.encoder.layer.2.output.LayerNorm.weight"] == pytest.approx(0.8 ** 2)
    assert off["electra.embeddings.word_embeddings.weight"] == pytest.approx(0.8 ** 5)
    assert off["classifier.weight"] == 1.0


def test_tiny_finetune_learns_a_synthetic_rule():
    """Label = whether token 7 occurs in the sentence: a rule a 1-layer encoder learns to ~100%."""
    cfg = ElectraConfig(vocab_size=20, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    enc = init_params(encoder_shapes(cfg), 0.02, seed=0)
    rng = np.random.default_rng(0)

    def make(n):
        encoded, y = [], []
        for _ in range(n):
            body = rng.integers(8, 20, rng.integers(3, 10)).tolist()
            label = int(rng.random() < 0.5)
            if label:
                body[rng.integers(len(body))] = 7
            encoded.append(([2] + body + [3], [0] * (len(body) + 2)))
            y.append(label)
        return encoded, np.array(y)

    fc = FinetuneConfig(learning_rate=3e-3, epochs=4, batch_size=16, head="official", layerwise_lr_decay=1.0, seed=1)
    best, history = finetune(enc, cfg, 2, make(640), make(200), fc, pad_id=0, log=lambda s: None)
    assert len(history) == 4 and history[-1]["train_loss"] < history[0]["train_loss"]
    scores, _ = evaluate(best, cfg, *make(200), 32, 0)
    assert scores["accuracy"] >= 0.97, history
    assert max(h["accuracy"] for h in history) >= 0.97


def test_bad_finetune_config():
    with pytest.raises(ValueError, match="metric must be one of"):
        FinetuneConfig(metric="bleu")
    with pytest.raises(ValueError, match="layerwise_lr_decay"):
        FinetuneConfig(layerwise_lr_decay=0)
