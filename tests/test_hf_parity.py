"""electra_np against transformers, to the last digit: HF models with random weights are saved with
save_pretrained, loaded with electra_np.hf, and compared on padded batches with both token types.

    forward (logits, every layer's hidden states): <= 1e-5 absolute in float32, <= 1e-10 in float64
    gradients of the full ELECTRA loss L_MLM + 50 L_disc and of the fine-tuning losses, against PyTorch
    autograd in float64: relative error <= 1e-8 per tensor

The transformers side of the ELECTRA loss is electra_np.torch_electra.electra_loss, the one the benchmarks
time. Run with -s to print the measured errors.
"""

import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # torch's OpenMP and numba in one process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from electra_np import hf  # noqa: E402
from electra_np.classification import classification_backward, classification_forward  # noqa: E402
from electra_np.config import ElectraConfig, PretrainingConfig  # noqa: E402
from electra_np.masking import Corruption, corrupt  # noqa: E402
from electra_np.model import (  # noqa: E402
    Electra,
    discriminator_forward,
    electra_backward,
    electra_forward,
    encoder_forward,
    generator_forward,
)
from electra_np.params import SHARED_KEYS, discriminator_params, generator_params, init_params  # noqa: E402
from electra_np.torch_electra import electra_loss, hf_config, hf_pair, tie  # noqa: E402

F32_ABS, F64_ABS, GRAD_REL = 1e-5, 1e-10, 1e-8
MASK_ID, CLS_ID, SEP_ID = 4, 2, 3
MEASURED = {}  # check -> max error, printed at the end of the module (pytest -s)

CASES = {  # E != H and E == H, 1 to 4 heads, 1 to 3 layers, odd lengths, generators narrower or as wide
    "E<H,3 heads,2 layers": dict(
        disc=dict(vocab_size=37, embedding_size=8, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=20),
        gen=dict(hidden_size=6, num_attention_heads=2, intermediate_size=10), lengths=(7, 5, 2)),
    "E==H,1 head,1 layer": dict(
        disc=dict(vocab_size=29, embedding_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                  intermediate_size=16),
        gen=dict(), lengths=(5, 3)),
    "E>H,4 heads,3 layers,gelu_new": dict(
        disc=dict(vocab_size=41, embedding_size=10, hidden_size=8, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=12, hidden_act="gelu_new"),
        gen=dict(hidden_size=4, num_attention_heads=4, intermediate_size=8, num_hidden_layers=1),
        lengths=(9, 8, 6, 1)),
}


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    width = max(map(len, MEASURED), default=0)
    print("\nmeasured max errors (forward: absolute; gradients: relative per tensor, worst tensor)")
    for name, err in MEASURED.items():
        print(f"  {name:<{width}}  {err:.3g}")


def record(name, err):
    MEASURED[name] = max(err, MEASURED.get(name, 0.0))
    return err


def configs(case):
    disc = ElectraConfig(max_position_embeddings=16, **case["disc"])
    return disc, disc.replace(**case["gen"])


def perturb(model, seed):
    """Weights ~ N(0, 0.3^2) so that activations are O(1); LayerNorm weights and biases moved away from their
    1 / 0 init so that their values and gradients are tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            scale = 0.2 if name.endswith("bias") else 0.3
            p.copy_(1 + 0.2 * noise if "LayerNorm.weight" in name else scale * noise)


def make_batch(config, lengths, seed):
    """[CLS] ... [SEP] rows of the given lengths, zero padding (no fully padded row), token types 0 then 1."""
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(lengths)
    ids = rng.integers(5, config.vocab_size, (B, T))
    mask, types = np.zeros((B, T), np.int64), np.zeros((B, T), np.int64)
    for b, n in enumerate(lengths):
        ids[b, 0], ids[b, n - 1], ids[b, n:] = CLS_ID, SEP_ID, 0
        mask[b, :n] = 1
        types[b, n // 2:n] = 1
    ids[0, 1:3] = ids[0, 3]  # repeated ids: the embedding gradients must accumulate
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, rng


def make_corruption(batch, vocab_size, rng):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    c = corrupt(ids, mask, (CLS_ID, SEP_ID, MASK_ID), 0.4, ids.shape[1], 0.7, rng)
    positions = np.flatnonzero(c.masked)
    samples = rng.integers(1, vocab_size, len(positions))  # never [PAD] = 0: see test_pad_row_gradient_differs
    samples[0] = ids.reshape(-1)[positions[0]]  # a correct guess is labelled "original"
    return Corruption(c.masked, c.use_mask_token, samples, np.argwhere(c.masked))


def to_torch(batch):
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def load_hf(cls, path, dtype):
    """float32: transformers' default attention (sdpa); float64: the eager path."""
    kwargs = {"dtype": torch.float64, "attn_implementation": "eager"} if dtype == np.float64 else {}
    return cls.from_pretrained(path, **kwargs).eval()


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def grad_errors(grads, torch_grads):
    """Relative error per tensor; the attention key biases have an exactly-zero true gradient (softmax ignores a
    per-row shift), so they are held to zero in absolute terms instead."""
    assert set(grads) == set(torch_grads)
    errs = {}
    for k, t in torch_grads.items():
        a = grads[k]
        assert a.dtype == np.float64 and a.shape == t.shape, k
        if k.endswith("attention.self.key.bias"):
            assert np.abs(a).max() < 1e-12 and np.abs(t).max() < 1e-12, k
            continue
        errs[k] = max_abs(a, t) / max(1e-30, float(np.max(np.abs(a) + np.abs(t))))
    return errs


def pair_grads(disc, gen):
    """The tied pair's .grad as one joint dict with electra_np's keys (the shared embeddings once)."""
    grads = {f"discriminator.{k}": p.grad.numpy() for k, p in disc.named_parameters()}
    grads.update({f"generator.{k}": p.grad.numpy() for k, p in gen.named_parameters()
                  if not k.startswith("electra.embeddings.")})  # shared: already under "discriminator."
    assert all(f"discriminator.{k}" in grads for k in SHARED_KEYS)
    return grads


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """For each case: an HF discriminator and generator with shared embeddings, saved as two folders."""
    out = {}
    for i, (name, case) in enumerate(CASES.items()):
        disc_cfg, gen_cfg = configs(case)
        torch.manual_seed(i)
        disc = transformers.ElectraForPreTraining(hf_config(disc_cfg))
        gen = transformers.ElectraForMaskedLM(hf_config(gen_cfg))
        perturb(disc, 10 * i)
        perturb(gen, 10 * i + 1)
        tie(disc, gen)
        folder = tmp_path_factory.mktemp(f"pair{i}")
        disc.save_pretrained(folder / "discriminator")
        gen.save_pretrained(folder / "generator")
        out[name] = folder
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_pretraining_pair_forward_and_gradients(pairs, name, dtype):
    folder = pairs[name]
    setup, joint = hf.load_pretraining_pair(folder / "discriminator", folder / "generator", mask_id=MASK_ID,
                                            cls_id=CLS_ID, sep_id=SEP_ID, dtype=dtype)
    assert setup.disc == configs(CASES[name])[0] and setup.gen == configs(CASES[name])[1]
    disc = load_hf(transformers.ElectraForPreTraining, folder / "discriminator", dtype)
    gen = load_hf(transformers.ElectraForMaskedLM, folder / "generator", dtype)
    tie(disc, gen)
    batch, rng = make_batch(setup.disc, CASES[name]["lengths"], seed=len(name))
    corruption = make_corruption(batch, setup.disc.vocab_size, rng)
    t = electra_loss(disc, gen, setup, batch, corruption, hidden_states=True)

    tol, tag = (F32_ABS, "float32") if dtype == np.float32 else (F64_ABS, "float64")
    mask, types = batch["attention_mask"], batch["token_type_ids"]
    positions = np.flatnonzero(corruption.masked)
    gen_ids = np.where(corruption.use_mask_token, MASK_ID, batch["input_ids"])
    gen_logits, (gen_enc, *_) = generator_forward(generator_params(joint), setup.gen, gen_ids, types, mask, positions)
    disc_w = discriminator_params(joint)
    disc_logits, (disc_enc, _) = discriminator_forward(disc_w, setup.disc, t.disc_ids, types, mask)
    assert gen_logits.dtype == dtype and disc_logits.dtype == dtype
    checks = {
        "discriminator logits": max_abs(disc_logits, t.disc_logits.detach()),
        "generator logits at masked positions": max_abs(gen_logits, t.mlm_logits.detach()),
        "discriminator hidden states": max(max_abs(a, b.detach()) for a, b in
                                           zip(disc_enc["hidden_states"], t.disc_hidden_states, strict=True)),
        "generator hidden states": max(max_abs(a, b.detach()) for a, b in
                                       zip(gen_enc["hidden_states"], t.gen_hidden_states, strict=True)),
    }
    assert len(disc_enc["hidden_states"]) == setup.disc.num_hidden_layers + 1
    for check, err in checks.items():
        assert record(f"{check} ({tag})", err) <= tol, (check, err)

    loss, metrics, cache = electra_forward(joint, setup, batch, corruption=corruption, train=False)
    assert record(f"ELECTRA loss ({tag})", abs(float(loss) - t.loss.item())) <= tol
    if dtype == np.float32:
        return
    t.loss.backward()
    errs = grad_errors(electra_backward(cache, setup), pair_grads(disc, gen))
    worst = max(errs, key=errs.get)
    assert record("ELECTRA loss gradients, every tensor (float64)", errs[worst]) <= GRAD_REL, (worst, errs[worst])
    word = "discriminator.electra.embeddings.word_embeddings.weight"
    record("shared word embeddings gradient (float64)", errs[word])


@pytest.mark.parametrize("gathered", [False, True], ids=["head over all tokens", "head at the masked rows"])
def test_torch_loss_on_our_weights(gathered):
    """The benchmarks' Hugging Face side (torch_electra.hf_pair + electra_loss, both ways of applying the
    generator's head): built from electra_np's weights, its loss and every gradient are the reference's."""
    disc_cfg, gen_cfg = configs(CASES["E<H,3 heads,2 layers"])
    setup = Electra(disc_cfg, gen_cfg, PretrainingConfig(), MASK_ID, (CLS_ID, SEP_ID, MASK_ID))
    joint = init_params(setup.shapes(), 0.3, seed=4, dtype=np.float64)
    disc, gen = hf_pair(setup, joint)
    disc.eval()
    gen.eval()
    batch, rng = make_batch(setup.disc, CASES["E<H,3 heads,2 layers"]["lengths"], seed=2)
    c = make_corruption(batch, setup.disc.vocab_size, rng)
    t = electra_loss(disc, gen, setup, batch, c, gathered=gathered)
    loss, _, cache = electra_forward(joint, setup, batch, corruption=c, train=False)
    assert record("torch_electra loss on our weights (float64)", abs(float(loss) - t.loss.item())) <= F64_ABS
    t.loss.backward()
    errs = grad_errors(electra_backward(cache, setup), pair_grads(disc, gen))
    worst = max(errs, key=errs.get)
    assert record("torch_electra loss gradients on our weights (float64)", errs[worst]) <= GRAD_REL, worst


@pytest.mark.parametrize("num_labels", [3, 1], ids=["3 classes", "regression"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_sequence_classification(tmp_path, num_labels, dtype):
    config = ElectraConfig(vocab_size=33, embedding_size=6, hidden_size=12, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=14, max_position_embeddings=16, hidden_act="gelu_new")
    torch.manual_seed(5)
    model = transformers.ElectraForSequenceClassification(hf_config(config, num_labels=num_labels))
    perturb(model, 7)
    model.save_pretrained(tmp_path / "clf")
    loaded_config, params, kind = hf.from_pretrained(tmp_path / "clf", dtype=dtype)
    assert (loaded_config, kind) == (config, "classifier")
    model = load_hf(transformers.ElectraForSequenceClassification, tmp_path / "clf", dtype)
    batch, rng = make_batch(config, (7, 4, 6), seed=3)
    labels = rng.integers(0, num_labels, 3) if num_labels > 1 else rng.standard_normal(3).astype(dtype)
    out = model(**to_torch(batch), labels=torch.from_numpy(labels))
    loss, _, cache = classification_forward(params, config, batch, labels, train=False)
    tol, tag = (F32_ABS, "float32") if dtype == np.float32 else (F64_ABS, "float64")
    what = "classification" if num_labels > 1 else "regression"
    assert record(f"{what} logits ({tag})", max_abs(cache["logits"], out.logits.detach())) <= tol
    assert record(f"{what} loss ({tag})", abs(float(loss) - out.loss.item())) <= tol
    if dtype == np.float32:
        return
    out.loss.backward()
    errs = grad_errors(classification_backward(cache), {k: p.grad.numpy() for k, p in model.named_parameters()})
    worst = max(errs, key=errs.get)
    assert record(f"{what} loss gradients, every tensor (float64)", errs[worst]) <= GRAD_REL, (worst, errs[worst])


# ----------------------------------------------------------------------------- electra_np -> transformers

ROUND_TRIP = {
    "discriminator": transformers.ElectraForPreTraining,
    "generator": transformers.ElectraForMaskedLM,
    "encoder": transformers.ElectraModel,
    "classifier": transformers.ElectraForSequenceClassification,
}


def random_params(config, kind, dtype):
    params = init_params(hf.kind_shapes(config, kind, num_labels=3), 0.3, seed=11, dtype=dtype)
    rng = np.random.default_rng(12)
    return {k: v + (0.2 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}


def assert_loads_cleanly(cls, path, dtype=np.float32):
    kwargs = {"dtype": torch.float64, "attn_implementation": "eager"} if dtype == np.float64 else {}
    model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", list(ROUND_TRIP))
def test_round_trip_through_transformers(tmp_path, kind, dtype):
    config = configs(CASES["E<H,3 heads,2 layers"])[0]
    params = random_params(config, kind, dtype)
    hf.save_pretrained(tmp_path / kind, config, params, kind)
    model = assert_loads_cleanly(ROUND_TRIP[kind], tmp_path / kind, dtype)
    for k, p in model.state_dict().items():  # every tensor transformers holds is ours, bit for bit
        ours = params.get(k, params.get("electra." + k))
        if k == "generator_lm_head.weight":
            ours = params["electra.embeddings.word_embeddings.weight"]
        np.testing.assert_array_equal(p.numpy(), ours, err_msg=k)
    batch, _ = make_batch(config, (7, 6, 3), seed=1)
    out = model(**to_torch(batch))
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    if kind == "discriminator":
        ours = discriminator_forward(params, config, ids, types, mask)[0]
    elif kind == "generator":
        positions = np.flatnonzero(mask)
        ours = generator_forward(params, config, ids, types, mask, positions)[0]
        out.logits = out.logits.reshape(-1, config.vocab_size)[torch.from_numpy(positions)]
    elif kind == "encoder":
        ours = encoder_forward(params, config, ids, types, mask)[0]
        out.logits = out.last_hidden_state
    else:
        ours = classification_forward(params, config, batch, np.array([0, 1, 2]), train=False)[2]["logits"]
    tol, tag = (F32_ABS, "float32") if dtype == np.float32 else (F64_ABS, "float64")
    assert record(f"round trip electra_np -> transformers outputs ({tag})", max_abs(ours, out.logits.detach())) <= tol


def test_pretraining_checkpoint_loads_in_transformers(tmp_path):
    disc_cfg, gen_cfg = configs(CASES["E>H,4 heads,3 layers,gelu_new"])
    setup = Electra(disc_cfg, gen_cfg, PretrainingConfig(), MASK_ID, (CLS_ID, SEP_ID, MASK_ID))
    joint = init_params(setup.shapes(), 0.3, seed=3)
    hf.save_pretraining_checkpoint(tmp_path / "ckpt", setup, joint)
    disc = assert_loads_cleanly(transformers.ElectraForPreTraining, tmp_path / "ckpt" / "discriminator")
    gen = assert_loads_cleanly(transformers.ElectraForMaskedLM, tmp_path / "ckpt" / "generator")
    word = joint["discriminator.electra.embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(disc.electra.embeddings.word_embeddings.weight.detach().numpy(), word)
    np.testing.assert_array_equal(gen.electra.embeddings.word_embeddings.weight.detach().numpy(), word)
    np.testing.assert_array_equal(gen.generator_lm_head.weight.detach().numpy(), word)


def test_pad_row_gradient_differs_by_design(pairs):
    """The one known difference. HF builds the word embeddings as nn.Embedding(padding_idx=pad_token_id), whose
    backward drops the input-embedding gradient of the [PAD] row (the row still gets the tied output projection's
    share); the official TF code (and electra_np) has no padding_idx, so a [PAD] token at a real position (the
    generator may sample one) also moves that row through the input. Padding positions themselves give the row
    exactly zero input gradient in both, which is why the tests above agree everywhere else."""
    name = "E==H,1 head,1 layer"
    setup, joint = hf.load_pretraining_pair(pairs[name] / "discriminator", pairs[name] / "generator", mask_id=MASK_ID,
                                            cls_id=CLS_ID, sep_id=SEP_ID, dtype=np.float64)
    disc = load_hf(transformers.ElectraForPreTraining, pairs[name] / "discriminator", np.float64)
    gen = load_hf(transformers.ElectraForMaskedLM, pairs[name] / "generator", np.float64)
    tie(disc, gen)
    batch, rng = make_batch(setup.disc, CASES[name]["lengths"], seed=1)
    c = make_corruption(batch, setup.disc.vocab_size, rng)
    samples = c.samples.copy()
    samples[-1] = setup.disc.pad_token_id  # the generator "sampled" [PAD] at a real position
    c = Corruption(c.masked, c.use_mask_token, samples, np.argwhere(c.masked))
    electra_loss(disc, gen, setup, batch, c).loss.backward()
    cache = electra_forward(joint, setup, batch, corruption=c, train=False)[2]
    ours = electra_backward(cache, setup)["discriminator.electra.embeddings.word_embeddings.weight"]
    theirs = disc.electra.embeddings.word_embeddings.weight.grad.numpy()
    pad = setup.disc.pad_token_id
    assert max_abs(ours[pad], theirs[pad]) > 1e-3 * np.abs(ours).max()
    rest = np.arange(len(ours)) != pad
    assert max_abs(ours[rest], theirs[rest]) / np.abs(ours[rest]).max() <= GRAD_REL
