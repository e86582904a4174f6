"""Loading and saving Hugging Face checkpoint folders without transformers: round trips of every kind, the key
conventions of real checkpoints (bare ElectraModel names, buffers, the tied generator head, shards,
pytorch_model.bin), strict refusals with clear messages, and atomic writes that leave nothing behind on failure."""

import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

from electra_np import hf, hf_mapping  # noqa: E402
from electra_np.classification import init_classifier  # noqa: E402
from electra_np.config import ElectraConfig, PretrainingConfig  # noqa: E402
from electra_np.model import Electra  # noqa: E402
from electra_np.params import SHARED_KEYS, WORD, init_params  # noqa: E402

DISC = ElectraConfig(vocab_size=31, embedding_size=6, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=11)
GEN = DISC.replace(hidden_size=4, num_attention_heads=1, intermediate_size=8, num_hidden_layers=1)


def random_params(config, kind, dtype=np.float32, seed=0, num_labels=3):
    shapes = hf_mapping.kind_shapes(config, kind, num_labels)
    params = init_params(shapes, 0.5, seed, dtype)
    rng = np.random.default_rng(seed + 100)
    return {k: (v + rng.standard_normal(v.shape).astype(dtype) * 0.1) for k, v in params.items()}


def write_folder(path, config_dict, tensors):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_dict, f)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})


def hf_config(config, arch=None, **more):
    d = config.to_dict()
    if arch:
        d["architectures"] = [arch]
    d.update(more)
    return d


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def leftovers(parent):
    return [e for e in os.listdir(parent) if ".tmp-" in e or ".old-" in e or e.endswith("-old")]


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("kind", sorted(hf_mapping.KINDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_every_kind(tmp_path, kind, dtype):
    params = random_params(DISC, kind, dtype)
    hf.save_pretrained(tmp_path / "m", DISC, params, kind)
    d = json.loads((tmp_path / "m" / "config.json").read_text())
    assert d["model_type"] == "electra" and d["architectures"] == [hf_mapping.KINDS[kind]]
    assert d["dtype"] == np.dtype(dtype).name
    config, loaded, got_kind = hf.from_pretrained(tmp_path / "m", dtype=None)
    assert (config, got_kind) == (DISC, kind)
    assert_same(loaded, params)
    assert all(v.flags.writeable for v in loaded.values())
    assert leftovers(tmp_path) == []


def test_config_with_null_pad_token_id(tmp_path):
    write_folder(tmp_path / "m", hf_config(DISC, "ElectraModel", pad_token_id=None), random_params(DISC, "encoder"))
    assert hf.from_pretrained(tmp_path / "m")[0] == DISC


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_dtype_is_the_files(tmp_path, dtype):
    """from_pretrained keeps what the file holds unless asked for another dtype."""
    params = random_params(DISC, "discriminator", dtype)
    hf.save_pretrained(tmp_path / "m", DISC, params, "discriminator")
    assert_same(hf.from_pretrained(tmp_path / "m")[1], params)
    other = np.float32 if dtype == np.float64 else np.float64
    _, cast, _ = hf.from_pretrained(tmp_path / "m", dtype=other)
    assert {v.dtype for v in cast.values()} == {np.dtype(other)}
    assert max(np.max(np.abs(cast[k] - params[k])) for k in params) < 1e-6


def write_bfloat16(path, tensors):
    """A .safetensors file of bfloat16 tensors (the upper 16 bits of each float32), written by hand: NumPy has no
    bfloat16 for safetensors.numpy to write."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in tensors.items():
        bits = (np.ascontiguousarray(v, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [offset, offset + len(bits)]}
        chunks.append(bits)
        offset += len(bits)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


def test_half_precision_files_load_as_float32(tmp_path):
    """float16 and bfloat16 checkpoints become float32 (what the kernels compute in), value for value; a file
    mixing float16 and float32 tensors becomes float32 as a whole."""
    params = random_params(DISC, "discriminator", np.float32)
    half = {k: v.astype(np.float16) for k, v in params.items()}
    write_folder(tmp_path / "f16", hf_config(DISC, "ElectraForPreTraining"), hf_mapping.to_hf_names(half, "discriminator"))
    _, loaded, _ = hf.from_pretrained(tmp_path / "f16")
    assert_same(loaded, {k: v.astype(np.float32) for k, v in half.items()})
    os.makedirs(tmp_path / "bf16")
    with open(tmp_path / "bf16" / "config.json", "w") as f:
        json.dump(hf_config(DISC, "ElectraForPreTraining"), f)
    write_bfloat16(tmp_path / "bf16" / "model.safetensors", hf_mapping.to_hf_names(params, "discriminator"))
    _, loaded, _ = hf.from_pretrained(tmp_path / "bf16")
    truncated = {k: (v.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) for k, v in params.items()}
    assert_same(loaded, truncated)
    assert 0 < max(np.max(np.abs(loaded[k] - params[k])) for k in params) < 1e-2  # bfloat16 keeps 8 bits
    assert {v.dtype for v in hf.from_pretrained(tmp_path / "bf16", dtype=np.float64)[1].values()} == {np.dtype("f8")}
    mixed = dict(half, **{WORD: params[WORD]})
    write_folder(tmp_path / "mixed", hf_config(DISC, "ElectraForPreTraining"),
                 hf_mapping.to_hf_names(mixed, "discriminator"))
    assert_same(hf.from_pretrained(tmp_path / "mixed")[1], {k: v.astype(np.float32) for k, v in mixed.items()})


def test_generator_writes_the_tied_head(tmp_path):
    params = random_params(DISC, "generator")
    hf.save_pretrained(tmp_path / "g", DISC, params, "generator")
    sd = load_file(str(tmp_path / "g" / "model.safetensors"))
    np.testing.assert_array_equal(sd["generator_lm_head.weight"], params[WORD])
    assert json.loads((tmp_path / "g" / "config.json").read_text())["tie_word_embeddings"] is True
    # a checkpoint that stores only the head's copy of the tied matrix
    sd2 = {k: v for k, v in sd.items() if k != WORD}
    write_folder(tmp_path / "g2", hf_config(DISC, "ElectraForMaskedLM"), sd2)
    assert_same(hf.from_pretrained(tmp_path / "g2")[1], params)
    # a head that disagrees with the word embeddings: HF ties them, so the word embeddings win, with a warning
    sd["generator_lm_head.weight"] = sd["generator_lm_head.weight"] + 1
    write_folder(tmp_path / "g3", hf_config(DISC, "ElectraForMaskedLM"), sd)
    with pytest.warns(UserWarning, match="tied|ties"):
        assert_same(hf.from_pretrained(tmp_path / "g3")[1], params)
    # ... unless the config unties them: electra_np cannot represent that model
    write_folder(tmp_path / "g4", hf_config(DISC, "ElectraForMaskedLM", tie_word_embeddings=False), sd)
    with pytest.raises(ValueError, match="not tied"):
        hf.from_pretrained(tmp_path / "g4")


def test_bare_electra_model_keys_and_buffers(tmp_path):
    params = random_params(DISC, "encoder")
    hf.save_pretrained(tmp_path / "saved", DISC, params, "encoder")  # written as transformers writes ElectraModel
    saved = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert all(k.startswith(("embeddings.", "embeddings_project.", "encoder.")) for k in saved)
    bare = {k[len("electra."):]: v for k, v in params.items()}
    bare["embeddings.position_ids"] = np.arange(DISC.max_position_embeddings)[None]  # an old checkpoint's buffer
    write_folder(tmp_path / "bare", hf_config(DISC, "ElectraModel"), bare)
    config, loaded, kind = hf.from_pretrained(tmp_path / "bare")
    assert kind == "encoder"
    assert_same(loaded, params)


@pytest.mark.parametrize("kind", sorted(hf_mapping.KINDS))
def test_kind_from_keys_when_config_names_no_architecture(tmp_path, kind):
    params = random_params(DISC, kind)
    d = hf_config(DISC, id2label={str(i): str(i) for i in range(3)})
    write_folder(tmp_path / "m", d, params)
    assert hf.from_pretrained(tmp_path / "m")[2] == kind


def test_encoder_out_of_any_checkpoint(tmp_path):
    params = random_params(DISC, "discriminator")
    hf.save_pretrained(tmp_path / "d", DISC, params, "discriminator")
    _, enc, kind = hf.from_pretrained(tmp_path / "d", kind="encoder")
    assert kind == "encoder" and set(enc) == set(hf_mapping.kind_shapes(DISC, "encoder"))
    # an architecture electra_np has no head for: refused, but its encoder can be read
    write_folder(tmp_path / "tok", hf_config(DISC, "ElectraForTokenClassification"),
                 dict(enc, **{"classifier.weight": np.zeros((2, 8), np.float32),
                              "classifier.bias": np.zeros(2, np.float32)}))
    with pytest.raises(ValueError, match="ElectraForTokenClassification.*not supported"):
        hf.from_pretrained(tmp_path / "tok")
    assert_same(hf.from_pretrained(tmp_path / "tok", kind="encoder")[1], enc)


def test_classifier_labels_and_extra_config(tmp_path):
    params = random_params(DISC, "classifier", num_labels=4)
    hf.save_pretrained(tmp_path / "c", DISC, params, "classifier", extra_config={"finetuning_task": "mnli"})
    d = json.loads((tmp_path / "c" / "config.json").read_text())
    assert len(d["id2label"]) == 4 and d["finetuning_task"] == "mnli"
    assert hf.from_pretrained(tmp_path / "c")[1]["classifier.out_proj.weight"].shape == (4, 8)
    names = {"0": "contradiction", "1": "entailment", "2": "neutral", "3": "other"}
    hf.save_pretrained(tmp_path / "c", DISC, params, "classifier",
                       extra_config={"id2label": names, "label2id": {v: int(k) for k, v in names.items()}})
    d = json.loads((tmp_path / "c" / "config.json").read_text())
    assert d["id2label"] == names and d["label2id"]["neutral"] == 2
    for bad, match in (({"hidden_size": 3}, "hidden_size"), ({"id2label": {"0": "a", "1": "b"}}, "classes 0..3"),
                       ({"num_labels": 2}, "disagree")):
        with pytest.raises(ValueError, match=match):
            hf.save_pretrained(tmp_path / "c2", DISC, params, "classifier", extra_config=bad)
    with pytest.raises(ValueError, match="has no labels"):
        hf.save_pretrained(tmp_path / "c2", DISC, random_params(DISC, "encoder"), "encoder",
                           extra_config={"id2label": names})
    assert not (tmp_path / "c2").exists()


def test_sharded_safetensors(tmp_path):
    params = random_params(DISC, "discriminator")
    keys = sorted(params)
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config(DISC, "ElectraForPreTraining")))
    weight_map = {}
    for i, part in enumerate((keys[:10], keys[10:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: params[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same(hf.from_pretrained(folder)[1], params)


def test_pytorch_model_bin(tmp_path):
    torch = pytest.importorskip("torch")
    params = random_params(DISC, "generator")
    sd = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    sd["generator_lm_head.weight"] = sd[WORD].clone()
    sd["electra.embeddings.position_ids"] = torch.arange(DISC.max_position_embeddings)[None]
    (tmp_path / "bin").mkdir()
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text(json.dumps(hf_config(DISC, "ElectraForMaskedLM")))
    config, loaded, kind = hf.from_pretrained(tmp_path / "bin")
    assert kind == "generator"
    assert_same(loaded, params)
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="pytorch_model.bin: not a readable PyTorch state dict"):
        hf.from_pretrained(tmp_path / "bin")


# ----------------------------------------------------------------------------- refusals

def test_missing_unexpected_and_wrong_shapes_listed_at_once(tmp_path):
    params = random_params(DISC, "discriminator")
    del params["electra.encoder.layer.1.output.dense.bias"]
    params["electra.encoder.layer.2.output.dense.bias"] = np.zeros(8, np.float32)
    params["discriminator_predictions.dense.weight"] = np.zeros((8, 7), np.float32)
    write_folder(tmp_path / "bad", hf_config(DISC, "ElectraForPreTraining"), params)
    with pytest.raises(ValueError) as e:
        hf.from_pretrained(tmp_path / "bad")
    msg = str(e.value)
    assert "model.safetensors" in msg
    assert "missing keys (1): electra.encoder.layer.1.output.dense.bias" in msg
    assert "unexpected keys (1): electra.encoder.layer.2.output.dense.bias" in msg
    assert "discriminator_predictions.dense.weight: got (8, 7), expected (8, 8)" in msg


def test_save_refuses_mismatched_params_and_writes_nothing(tmp_path):
    params = random_params(DISC, "discriminator")
    params["extra.weight"] = np.zeros(3, np.float32)
    del params[WORD]
    with pytest.raises(ValueError, match=r"(?s)missing keys \(1\).*unexpected keys \(1\): extra.weight"):
        hf.save_pretrained(tmp_path / "out", DISC, params, "discriminator")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="unknown kind"):
        hf.save_pretrained(tmp_path / "out", DISC, params, "tagger")
    with pytest.raises(TypeError, match="ElectraConfig"):
        hf.save_pretrained(tmp_path / "out", DISC.to_dict(), params, "discriminator")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change,match", [
    ({"model_type": "bert"}, "model_type is 'bert', not 'electra'"),
    ({"model_type": None, "architectures": ["BertModel"]}, "no model_type and no Electra architecture"),
    ({"hidden_act": "relu"}, "hidden_act must be one of"),
    ({"hidden_size": 9}, "divisible by num_attention_heads"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"is_decoder": True}, "decoder"),
])
def test_non_electra_configs_refused(tmp_path, change, match):
    d = hf_config(DISC, "ElectraForPreTraining")
    d.update(change)
    d = {k: v for k, v in d.items() if v is not None}
    write_folder(tmp_path / "m", d, random_params(DISC, "discriminator"))
    with pytest.raises(ValueError, match=match) as e:
        hf.from_pretrained(tmp_path / "m")
    assert "config.json" in str(e.value)


def test_truncated_safetensors(tmp_path):
    hf.save_pretrained(tmp_path / "m", DISC, random_params(DISC, "discriminator"), "discriminator")
    f = tmp_path / "m" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"model.safetensors: not a readable safetensors file"):
        hf.from_pretrained(tmp_path / "m")
    f.write_bytes(b"\x05")
    with pytest.raises(ValueError, match=r"model.safetensors: not a readable safetensors file"):
        hf.from_pretrained(tmp_path / "m")


def test_config_not_json(tmp_path):
    hf.save_pretrained(tmp_path / "m", DISC, random_params(DISC, "discriminator"), "discriminator")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "electra",')
    with pytest.raises(ValueError, match=r"config.json: not valid JSON"):
        hf.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json: expected a JSON object"):
        hf.from_pretrained(tmp_path / "m")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        hf.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        hf.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(hf_config(DISC, "ElectraModel")))
    with pytest.raises(FileNotFoundError, match="no weights file"):
        hf.from_pretrained(tmp_path / "empty")


def test_vocab_size_must_match_the_tokenizer(tmp_path):
    hf.save_pretrained(tmp_path / "m", DISC, random_params(DISC, "discriminator"), "discriminator")

    class Tok:
        def __len__(self):
            return 30

    for vocab in (30, Tok()):
        with pytest.raises(ValueError,
                           match=r"config.json: the checkpoint's vocab_size is 31 but the tokenizer has 30"):
            hf.from_pretrained(tmp_path / "m", vocab_size=vocab)
    assert hf.from_pretrained(tmp_path / "m", vocab_size=31)[0] == DISC
    with pytest.raises(ValueError, match="vocab_size is 31 but the tokenizer has 30"):
        hf.save_pretrained(tmp_path / "new", DISC, random_params(DISC, "encoder"), "encoder", vocab_size=Tok())
    assert not (tmp_path / "new").exists()


def test_pretraining_checkpoint_refuses_a_vocab_file_of_another_size(tmp_path):
    setup = Electra(DISC, GEN, PretrainingConfig(), 4, (2, 3, 4))
    (tmp_path / "vocab.txt").write_text("".join(f"t{i}\n" for i in range(30)))
    with pytest.raises(ValueError, match=r"vocab.txt: the checkpoint's vocab_size is 31 but the tokenizer has 30"):
        hf.save_pretraining_checkpoint(tmp_path / "ckpt", setup, joint_params(setup), files=[tmp_path / "vocab.txt"])
    assert sorted(os.listdir(tmp_path)) == ["vocab.txt"]


def test_missing_safetensors_package_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install electra_np\[hf\]"):
        hf.save_pretrained(tmp_path / "m", DISC, random_params(DISC, "encoder"), "encoder")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- atomic writes

def test_overwrite_keeps_other_files_and_drops_stale_weights(tmp_path):
    target = tmp_path / "m"
    hf.save_pretrained(target, DISC, random_params(DISC, "discriminator", seed=1), "discriminator")
    (target / "vocab.txt").write_text("[PAD]\n")
    (target / "pytorch_model.bin").write_bytes(b"stale")
    new = random_params(DISC, "discriminator", seed=2)
    hf.save_pretrained(target, DISC, new, "discriminator")
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors", "vocab.txt"]
    assert (target / "vocab.txt").read_text() == "[PAD]\n"
    assert_same(hf.from_pretrained(target)[1], new)
    assert leftovers(tmp_path) == []


def test_failure_while_writing_leaves_the_target_untouched(tmp_path, monkeypatch):
    target = tmp_path / "m"
    hf.save_pretrained(target, DISC, random_params(DISC, "discriminator", seed=1), "discriminator")
    before = {f: (target / f).read_bytes() for f in os.listdir(target)}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    import safetensors.numpy
    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        hf.save_pretrained(target, DISC, random_params(DISC, "discriminator", seed=2), "discriminator")
    assert {f: (target / f).read_bytes() for f in os.listdir(target)} == before
    assert leftovers(tmp_path) == []
    with pytest.raises(OSError, match="disk full"):
        hf.save_pretrained(tmp_path / "new", DISC, random_params(DISC, "discriminator"), "discriminator")
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_target_that_is_a_file_refused(tmp_path):
    (tmp_path / "m").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        hf.save_pretrained(tmp_path / "m", DISC, random_params(DISC, "encoder"), "encoder")
    assert (tmp_path / "m").read_text() == "x"


# ----------------------------------------------------------------------------- pretraining pairs

def vocab_file(tmp_path):
    tokens = ["[PAD]", "[UNK]", "a", "b", "c", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"t{i}" for i in range(DISC.vocab_size - len(tokens))]
    f = tmp_path / "vocab.txt"
    f.write_text("\n".join(tokens) + "\n")
    return f


def joint_params(setup, seed=0):
    params = init_params(setup.shapes(), 0.5, seed, np.float32)
    return {k: v + np.float32(0.01) for k, v in params.items()}


def test_pretraining_checkpoint_round_trip(tmp_path):
    setup = Electra(DISC, GEN, PretrainingConfig(), mask_id=7, excluded_ids=(5, 6, 7))
    joint = joint_params(setup)
    hf.save_pretraining_checkpoint(tmp_path / "ckpt", setup, joint, files=[vocab_file(tmp_path)])
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["discriminator", "generator"]
    for part in ("discriminator", "generator"):  # shared embeddings written into both
        sd = load_file(str(tmp_path / "ckpt" / part / "model.safetensors"))
        for k in SHARED_KEYS:
            np.testing.assert_array_equal(sd[k], joint[f"discriminator.{k}"])
        assert (tmp_path / "ckpt" / part / "vocab.txt").exists()
    objective = PretrainingConfig(mask_prob=0.2)
    setup2, joint2 = hf.load_pretraining_pair(tmp_path / "ckpt" / "discriminator", tmp_path / "ckpt" / "generator",
                                              objective)
    assert setup2 == Electra(DISC, GEN, objective, 7, (5, 6, 7))  # ids read from vocab.txt
    assert_same(joint2, joint)
    with pytest.raises(ValueError, match="swap|expected a discriminator"):
        hf.load_pretraining_pair(tmp_path / "ckpt" / "generator", tmp_path / "ckpt" / "discriminator")


def test_pair_generator_config_from_its_file_not_derived(tmp_path):
    gen = DISC.replace(num_hidden_layers=1)  # as wide as the discriminator, like google/electra-small-generator
    setup = Electra(DISC, gen, PretrainingConfig(), 4, (2, 3, 4))
    hf.save_pretraining_checkpoint(tmp_path / "ckpt", setup, joint_params(setup))
    setup2, _ = hf.load_pretraining_pair(tmp_path / "ckpt" / "discriminator", tmp_path / "ckpt" / "generator",
                                         mask_id=4, cls_id=2, sep_id=3)
    assert setup2.gen == gen and setup2.gen.hidden_size == DISC.hidden_size
    with pytest.raises(ValueError, match="pass mask_id"):
        hf.load_pretraining_pair(tmp_path / "ckpt" / "discriminator", tmp_path / "ckpt" / "generator")


def test_pair_with_differing_embeddings_takes_the_discriminators(tmp_path):
    d = random_params(DISC, "discriminator", seed=1)
    g = random_params(GEN, "generator", seed=2)
    hf.save_pretrained(tmp_path / "d", DISC, d, "discriminator")
    hf.save_pretrained(tmp_path / "g", GEN, g, "generator")
    with pytest.warns(UserWarning, match="keeping the discriminator's"):
        setup, joint = hf.load_pretraining_pair(tmp_path / "d", tmp_path / "g", mask_id=4, cls_id=2, sep_id=3)
    np.testing.assert_array_equal(joint[f"discriminator.{WORD}"], d[WORD])
    assert f"generator.{WORD}" not in joint


def test_pair_with_different_embedding_size_refused(tmp_path):
    gen = GEN.replace(embedding_size=4)
    hf.save_pretrained(tmp_path / "d", DISC, random_params(DISC, "discriminator"), "discriminator")
    hf.save_pretrained(tmp_path / "g", gen, random_params(gen, "generator"), "generator")
    match = r"cannot share embeddings(?s:.*)word_embeddings.weight: discriminator \(31, 6\), generator \(31, 4\)"
    with pytest.raises(ValueError, match=match):
        hf.load_pretraining_pair(tmp_path / "d", tmp_path / "g", mask_id=4, cls_id=2, sep_id=3)


def test_mlm_baseline_checkpoint_writes_the_generator_only(tmp_path):
    setup = Electra.build(DISC, PretrainingConfig(objective="mlm"))
    hf.save_pretraining_checkpoint(tmp_path / "ckpt", setup, joint_params(setup))
    assert os.listdir(tmp_path / "ckpt") == ["generator"]
    assert hf.from_pretrained(tmp_path / "ckpt" / "generator")[2] == "generator"


def test_pair_checkpoint_refuses_bad_joint_dict(tmp_path):
    setup = Electra(DISC, GEN, PretrainingConfig(), 4, (2, 3, 4))
    joint = joint_params(setup)
    del joint["generator.generator_lm_head.bias"]
    with pytest.raises(ValueError, match="missing keys"):
        hf.save_pretraining_checkpoint(tmp_path / "ckpt", setup, joint)
    assert os.listdir(tmp_path) == []


def test_fine_tune_start_from_a_saved_discriminator(tmp_path):
    hf.save_pretrained(tmp_path / "d", DISC, random_params(DISC, "discriminator"), "discriminator")
    config, disc, _ = hf.from_pretrained(tmp_path / "d")
    params = init_classifier(disc, config, 2, "official")
    hf.save_pretrained(tmp_path / "c", config, params, "classifier_official")
    assert hf.from_pretrained(tmp_path / "c")[2] == "classifier_official"


def test_electra_np_npz_folder(tmp_path):
    """train.py's folders hold model.npz (same names); they load without safetensors' help."""
    params = random_params(DISC, "discriminator")
    (tmp_path / "run").mkdir()
    np.savez(tmp_path / "run" / "model.npz", **params)
    (tmp_path / "run" / "config.json").write_text(json.dumps(hf_config(DISC, "ElectraForPreTraining")))
    assert_same(hf.from_pretrained(tmp_path / "run")[1], params)
    (tmp_path / "run" / "model.npz").write_bytes(b"PK broken")
    with pytest.raises(ValueError, match="model.npz: not a readable .npz file"):
        hf.from_pretrained(tmp_path / "run")
