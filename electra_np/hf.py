"""Hugging Face interoperability: load and save `transformers` ELECTRA checkpoint folders.

A checkpoint folder is config.json + model.safetensors (or a sharded model.safetensors.index.json, or
pytorch_model.bin when torch is installed, or electra_np's own model.npz). Our parameter dicts already use
HF state-dict names, so a checkpoint maps one-to-one onto a dict; the kind of model comes from
config["architectures"] (else from the parameter names):

    kind                  architecture                        parameters
    "discriminator"       ElectraForPreTraining               params.discriminator_shapes
    "generator"           ElectraForMaskedLM                  params.generator_shapes (lm head tied)
    "encoder"             ElectraModel                        params.encoder_shapes
    "classifier"          ElectraForSequenceClassification    classification.classifier_shapes(head="hf")
    "classifier_official" ElectraNpOfficialClassifier         classification.classifier_shapes(head="official")

The last one is ours (google-research/electra's one-layer head, classifier.weight/bias): transformers knows
no such architecture, and AutoModel loads only its encoder from such a folder.

    config, params, kind = from_pretrained("electra-small-discriminator")
    save_pretrained("out", config, params, kind)         # transformers.ElectraForPreTraining loads it
    setup, joint = load_pretraining_pair("electra-small-discriminator", "electra-small-generator")
    save_pretraining_checkpoint("ckpt", setup, joint)    # ckpt/discriminator, ckpt/generator

Loading is strict: missing keys, unexpected keys and shape conflicts are refused, all listed at once.
Writing is atomic: files go to a temporary folder beside the target, which then replaces the target;
nothing is written when validation fails. safetensors (and torch, for .bin files) are imported lazily.
"""

import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager

import numpy as np

from .atomic import fsync_dir
from .classification import classifier_shapes, head_of
from .config import ElectraConfig, PretrainingConfig
from .model import Electra
from .params import (SHARED_KEYS, check_params, discriminator_params, discriminator_shapes, encoder_shapes,
                     generator_params, generator_shapes)

KINDS = {
    "discriminator": "ElectraForPreTraining",
    "generator": "ElectraForMaskedLM",
    "encoder": "ElectraModel",
    "classifier": "ElectraForSequenceClassification",
    "classifier_official": "ElectraNpOfficialClassifier",
}
ARCHITECTURE_KINDS = {arch: kind for kind, arch in KINDS.items()}

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"
NPZ_NAME = "model.npz"  # electra_np's own format (train.py), same names; read last, never written here
WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, TORCH_NAME)  # stale copies are never carried over

TIED_KEY = "generator_lm_head.weight"  # HF ties it to the word embeddings; we store it only there
WORD_KEY = "electra.embeddings.word_embeddings.weight"
BUFFER_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")  # registered buffers, not parameters
ENCODER_PREFIXES = ("embeddings.", "embeddings_project.", "encoder.")  # a bare ElectraModel's top-level names


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("reading and writing Hugging Face checkpoints needs the safetensors package: "
                          "pip install electra_np[hf]") from None
    return safetensors.numpy


# ----------------------------------------------------------------------------- reading

def read_config(path):
    """config.json of a checkpoint folder as a dict; refuses a missing file, bad JSON, or a non-object."""
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a checkpoint folder (expected a folder holding {CONFIG_NAME})")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: missing; a Hugging Face checkpoint folder needs its config.json")
    try:
        with open(file, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(d).__name__}")
    return d


def config_from_hf(d, source=CONFIG_NAME):
    """An ElectraConfig from a Hugging Face config dict, refusing what does not describe an ELECTRA encoder."""
    archs = d.get("architectures") or []
    if "model_type" not in d and not any(str(a).startswith("Electra") for a in archs):
        raise ValueError(f"{source}: no model_type and no Electra architecture; this is not an ELECTRA config")
    if d.get("model_type", "electra") != "electra":
        raise ValueError(f"{source}: model_type is {d['model_type']!r}, not 'electra'; this is not an ELECTRA config")
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{source}: position_embedding_type {d['position_embedding_type']!r} is not supported "
                         "(electra_np has absolute position embeddings only)")
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise ValueError(f"{source}: a decoder / cross-attention ELECTRA is not supported (bidirectional encoder only)")
    if "pad_token_id" in d and d["pad_token_id"] is None:  # no padding_idx in HF; electra_np has none anyway
        d = {k: v for k, v in d.items() if k != "pad_token_id"}
    try:
        return ElectraConfig.from_dict(d, source=source)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: not a usable ELECTRA config: {e}") from None


def _num_labels(d):
    if d.get("id2label"):
        return len(d["id2label"])
    return int(d.get("num_labels", 2))  # transformers' PretrainedConfig default


def kind_shapes(config, kind, num_labels=2):
    """The parameter names and shapes of one kind of checkpoint."""
    if kind == "discriminator":
        return discriminator_shapes(config)
    if kind == "generator":
        return generator_shapes(config)
    if kind == "encoder":
        return encoder_shapes(config)
    if kind == "classifier":
        return classifier_shapes(config, num_labels, "hf")
    if kind == "classifier_official":
        return classifier_shapes(config, num_labels, "official")
    raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")


def _kind_from_keys(keys):
    """Fallback when config.json names no architecture: the head's parameter names tell."""
    if any(k.startswith("discriminator_predictions.") for k in keys):
        return "discriminator"
    if any(k.startswith(("generator_predictions.", "generator_lm_head.")) for k in keys):
        return "generator"
    if any(k.startswith(("classifier.dense.", "classifier.out_proj.")) for k in keys):
        return "classifier"
    if "classifier.weight" in keys:
        return "classifier_official"
    return "encoder"


def _weights_file(path):
    for name in (*WEIGHT_FILES, NPZ_NAME):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"{path}: no weights file (looked for {', '.join((*WEIGHT_FILES, NPZ_NAME))})")


def _read_safetensors(file):
    st = _safetensors_numpy()
    try:
        return st.load_file(file)
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise ValueError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def _read_torch(file):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{file}: reading pytorch_model.bin needs torch (or convert the checkpoint to "
                          "model.safetensors)") from None
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{file}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict):
        raise ValueError(f"{file}: expected a state dict, got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{file}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return out


def load_state_dict(path):
    """The raw tensors of a checkpoint folder as NumPy arrays (no renaming, no checks). Returns: (dict, file)."""
    file = _weights_file(path)
    if file.endswith(SAFETENSORS_INDEX_NAME):
        try:
            with open(file, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{file}: not a valid safetensors index ({e!r})") from None
        sd = {}
        for shard in shards:
            sd.update(_read_safetensors(os.path.join(path, shard)))
        return sd, file
    if file.endswith(".safetensors"):
        return _read_safetensors(file), file
    if file.endswith(NPZ_NAME):
        try:
            with np.load(file, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, file
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{file}: not a readable .npz file ({e})") from None
    return _read_torch(file), file


def _normalize_keys(sd, kind, source, tied=True):
    """HF names -> ours: drop buffers, add "electra." to a bare ElectraModel's names, untie the generator's
    output projection (kept only as the word embeddings, HF ties the two unless tie_word_embeddings is false)."""
    sd = {k: v for k, v in sd.items() if not k.endswith(BUFFER_KEYS)}
    if not any(k.startswith("electra.") for k in sd):
        sd = {("electra." + k if k.startswith(ENCODER_PREFIXES) else k): v for k, v in sd.items()}
    if TIED_KEY in sd:
        out = sd.pop(TIED_KEY)
        if WORD_KEY not in sd:
            sd[WORD_KEY] = out
        elif np.shape(out) == np.shape(sd[WORD_KEY]) and not np.array_equal(out, sd[WORD_KEY]):
            if not tied:
                raise ValueError(f"{source}: the generator's output projection is not tied to the word embeddings "
                                 "(tie_word_embeddings is false and the two differ); electra_np always ties them")
            warnings.warn(f"{source}: {TIED_KEY} differs from the word embeddings; HF ties the two, so the word "
                          "embeddings are used for both", stacklevel=3)
    if kind == "encoder":  # an encoder can be read out of any ELECTRA checkpoint: heads are dropped
        sd = {k: v for k, v in sd.items() if k.startswith("electra.")}
    return sd


def _check_vocab(config, vocab_size, source):
    """Refuse a checkpoint whose vocab_size disagrees with a tokenizer (an int, len(), or .vocab_size)."""
    if vocab_size is None:
        return
    if isinstance(vocab_size, (int, np.integer)):
        n = vocab_size
    elif hasattr(vocab_size, "__len__"):  # a tokenizer: len() counts added tokens too (HF)
        n = len(vocab_size)
    else:
        n = vocab_size.vocab_size
    if int(n) != config.vocab_size:
        raise ValueError(f"{source}: the checkpoint's vocab_size is {config.vocab_size} but the tokenizer has "
                         f"{int(n)} tokens; use the tokenizer the checkpoint was trained with")


def from_pretrained(path, kind=None, dtype=np.float32, vocab_size=None):
    """Load a Hugging Face ELECTRA checkpoint folder.

    Inputs:  path: folder with config.json and model.safetensors / pytorch_model.bin; kind: None to take it
             from config["architectures"] (else from the parameter names), or one of KINDS to insist on it
             ("encoder" reads the encoder of any ELECTRA checkpoint); dtype: cast every tensor to it (None keeps
             the stored dtype); vocab_size: an int or a tokenizer (len() / .vocab_size) the checkpoint must match
    Returns: (ElectraConfig, params dict keyed by HF names, kind)
    """
    d = read_config(path)
    config_file = os.path.join(path, CONFIG_NAME)
    config = config_from_hf(d, config_file)
    _check_vocab(config, vocab_size, config_file)
    archs = d.get("architectures") or []
    if kind is None and archs:
        if archs[0] not in ARCHITECTURE_KINDS:
            raise ValueError(f"{config_file}: architecture {archs[0]!r} is not supported; electra_np reads "
                             f"{', '.join(ARCHITECTURE_KINDS)} (or pass kind='encoder' to take the encoder only)")
        kind = ARCHITECTURE_KINDS[archs[0]]
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    sd, file = load_state_dict(path)
    kind = kind or _kind_from_keys(set(sd))
    params = _normalize_keys(sd, kind, file, tied=d.get("tie_word_embeddings", True))
    if dtype is not None:  # a writable copy; integer tensors are left for check_params to refuse
        params = {k: np.array(v, dtype=dtype) if np.issubdtype(v.dtype, np.floating) else v
                  for k, v in params.items()}
    check_params(params, kind_shapes(config, kind, _num_labels(d)), what=f"{file} ({KINDS[kind]} tensors)")
    return config, params, kind


# ----------------------------------------------------------------------------- writing

@contextmanager
def _atomic_folder(target):
    """Yield a fresh temporary folder beside `target`; on success it replaces `target`. Files of an existing
    target that were not rewritten (a tokenizer's, say) are carried over, stale weight files are not.
    On any error the temporary folder is removed and `target` is untouched."""
    target = os.path.abspath(os.fspath(target))
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(f"{target}: exists and is not a folder")
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        yield tmp
        _fsync_tree(tmp)  # the new files are on disk before the rename makes them visible
        if os.path.isdir(target):
            _carry_over(target, tmp)
            old = tmp + "-old"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def _carry_over(src, dst):
    for entry in os.listdir(src):
        s, d = os.path.join(src, entry), os.path.join(dst, entry)
        if entry in (CONFIG_NAME, *WEIGHT_FILES) or entry.endswith(".safetensors") or \
                (entry.startswith("pytorch_model") and entry.endswith(".bin")):
            continue
        if os.path.isdir(s) and not os.path.islink(s):
            os.makedirs(d, exist_ok=True)
            _carry_over(s, d)
        elif not os.path.lexists(d):
            try:
                os.link(s, d)  # a hard link: the old file stays intact until the swap
            except OSError:
                shutil.copy2(s, d, follow_symlinks=False)


def _config_dict(config, kind, params, extra_config):
    """config.json's contents. extra_config may add entries (label names, a task name), never override the
    architecture; id2label / label2id must name exactly the head's num_labels classes."""
    d = config.to_dict()
    extra = dict(extra_config or {})
    clash = sorted(set(extra) & (set(d) | {"model_type", "architectures", "dtype", "tie_word_embeddings"}))
    if clash:
        raise ValueError(f"extra_config may not set {', '.join(clash)}: they come from the config and params")
    labels = {"id2label", "label2id", "num_labels"} & set(extra)
    if labels and not kind.startswith("classifier"):
        raise ValueError(f"extra_config sets {', '.join(sorted(labels))}, but a {KINDS[kind]} has no labels")
    d.update(extra)
    d["architectures"] = [KINDS[kind]]
    d["dtype"] = str(params[WORD_KEY].dtype)
    if kind == "generator":
        d["tie_word_embeddings"] = True
    if kind.startswith("classifier"):
        C = head_of(params)[1]
        id2label = {str(k): v for k, v in (extra.get("id2label") or {str(i): f"LABEL_{i}" for i in range(C)}).items()}
        if set(id2label) != {str(i) for i in range(C)}:
            raise ValueError(f"extra_config id2label must name the classes 0..{C - 1} of the head, got keys "
                             f"{sorted(id2label)}")
        label2id = extra.get("label2id") or {v: int(k) for k, v in id2label.items()}
        if len(label2id) != C or extra.get("num_labels", C) != C:
            raise ValueError(f"extra_config label2id / num_labels disagree with the head's {C} classes")
        d.update(id2label=id2label, label2id=label2id)
        d.pop("num_labels", None)  # transformers derives it from id2label
    return d


def _validate(config, params, kind):
    if not isinstance(config, ElectraConfig):
        raise TypeError(f"config must be an ElectraConfig, got {type(config).__name__}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    num_labels = head_of(params)[1] if kind.startswith("classifier") else 2
    check_params(params, kind_shapes(config, kind, num_labels), what=f"{KINDS[kind]} params")


def _write_folder(folder, config, params, kind, extra_config=None):
    """config.json and model.safetensors into an existing (temporary) folder. Validate first."""
    st = _safetensors_numpy()
    d = _config_dict(config, kind, params, extra_config)
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    if kind == "encoder":  # HF's ElectraModel files name its tensors without the "electra." prefix
        tensors = {k[len("electra."):]: v for k, v in tensors.items()}
    if kind == "generator":
        tensors[TIED_KEY] = tensors[WORD_KEY].copy()  # HF ties it; written so every loader finds it
    with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")
    st.save_file(tensors, os.path.join(folder, SAFETENSORS_NAME), metadata={"format": "pt"})


def save_pretrained(path, config, params, kind, extra_config=None, vocab_size=None):
    """Write a checkpoint folder that transformers' `<architecture>.from_pretrained(path)` loads with no
    missing or unexpected keys. extra_config: more config.json entries (label names, say); it may not
    override the architecture. vocab_size: an int or tokenizer the checkpoint must match.
    Validation happens first: nothing is written when it fails."""
    _validate(config, params, kind)
    _check_vocab(config, vocab_size, f"{KINDS[kind]} params")
    _config_dict(config, kind, params, extra_config)
    _safetensors_numpy()
    with _atomic_folder(path) as tmp:
        _write_folder(tmp, config, params, kind, extra_config)


# ----------------------------------------------------------------------------- pretraining pairs

def split_joint(setup, joint_params):
    """The joint pretraining dict -> (discriminator params, generator params), each a full HF-named dict
    holding the shared embeddings (arrays shared, not copied)."""
    check_params(joint_params, setup.shapes(), what="joint pretraining params")
    disc = discriminator_params(joint_params) if setup.objective.objective == "electra" else None
    return disc, generator_params(joint_params)


def save_pretraining_checkpoint(path, setup, joint_params, files=()):
    """Write path/discriminator (ElectraForPreTraining) and path/generator (ElectraForMaskedLM), both with the
    shared embeddings, in one atomic step. The MLM-only baseline writes path/generator alone.
    files: paths copied into both folders (vocab.txt, tokenizer files), so that load_pretraining_pair finds
    the special token ids."""
    disc, gen = split_joint(setup, joint_params)
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"{f}: not a file")
        if os.path.basename(f) == "vocab.txt":
            with open(f, encoding="utf-8") as fh:
                _check_vocab(setup.gen, sum(1 for _ in fh), f)
    _safetensors_numpy()
    with _atomic_folder(path) as tmp:
        parts = [("generator", setup.gen, gen)] + ([("discriminator", setup.disc, disc)] if disc is not None else [])
        for kind, config, params in parts:
            folder = os.path.join(tmp, kind)
            os.makedirs(folder)
            _write_folder(folder, config, params, kind)
            for f in files:
                shutil.copy2(f, os.path.join(folder, os.path.basename(f)))


def special_token_ids(path):
    """{"[CLS]": id, "[SEP]": id, "[MASK]": id} from the folder's vocab.txt or tokenizer.json, or None."""
    vocab = os.path.join(path, "vocab.txt")
    if os.path.isfile(vocab):
        with open(vocab, encoding="utf-8") as f:
            ids = {line.rstrip("\n"): i for i, line in enumerate(f)}
    elif os.path.isfile(os.path.join(path, "tokenizer.json")):
        with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        ids = dict(tok.get("model", {}).get("vocab", {}))
        ids.update({t["content"]: t["id"] for t in tok.get("added_tokens", [])})
    else:
        return None
    needed = ("[CLS]", "[SEP]", "[MASK]")
    return {t: ids[t] for t in needed} if all(t in ids for t in needed) else None


def load_pretraining_pair(disc_path, gen_path, objective=PretrainingConfig(), dtype=np.float32,
                          mask_id=None, cls_id=None, sep_id=None, vocab_size=None):
    """Continue pretraining from a discriminator + generator pair (Google's released google/electra-*-
    discriminator and -generator, or a save_pretraining_checkpoint folder).

    The generator's config comes from its own config.json, not from objective.generator_hidden_size (the
    released small generator is as wide as its discriminator). The two must agree on the shared embeddings'
    shapes; if their values differ, the discriminator's are kept, with a warning. Special token ids: given,
    else read from vocab.txt / tokenizer.json in either folder.
    Returns: (Electra setup, joint params dict)
    """
    if objective.objective != "electra":
        raise ValueError("load_pretraining_pair needs the 'electra' objective (the MLM baseline has no discriminator)")
    disc_cfg, disc, disc_kind = from_pretrained(disc_path, dtype=dtype, vocab_size=vocab_size)
    gen_cfg, gen, gen_kind = from_pretrained(gen_path, dtype=dtype, vocab_size=vocab_size)
    if (disc_kind, gen_kind) != ("discriminator", "generator"):
        raise ValueError(f"expected a discriminator (ElectraForPreTraining) at {disc_path} and a generator "
                         f"(ElectraForMaskedLM) at {gen_path}, got {KINDS[disc_kind]} and {KINDS[gen_kind]}")
    conflicts = [f"{k}: discriminator {disc[k].shape}, generator {gen[k].shape}"
                 for k in SHARED_KEYS if disc[k].shape != gen[k].shape]
    if disc[WORD_KEY].dtype != gen[WORD_KEY].dtype:
        conflicts.append(f"dtype: discriminator {disc[WORD_KEY].dtype}, generator {gen[WORD_KEY].dtype}")
    if conflicts:
        raise ValueError(f"{disc_path} and {gen_path} cannot share embeddings (embedding_size, vocab_size, "
                         "max_position_embeddings and type_vocab_size must agree):\n  " + "\n  ".join(conflicts))
    differ = [f"{k} (max |diff| {np.max(np.abs(disc[k] - gen[k])):.3g})"
              for k in SHARED_KEYS if not np.array_equal(disc[k], gen[k])]
    if differ:
        warnings.warn(f"the shared embeddings differ between {disc_path} and {gen_path}: {', '.join(differ)}; "
                      "keeping the discriminator's", stacklevel=2)
    found = special_token_ids(disc_path) or special_token_ids(gen_path) or {}
    ids = {"[MASK]": mask_id, "[CLS]": cls_id, "[SEP]": sep_id}
    ids = {t: (found.get(t) if i is None else i) for t, i in ids.items()}
    if any(i is None for i in ids.values()):
        raise ValueError(f"no vocab.txt or tokenizer.json with [CLS], [SEP], [MASK] in {disc_path} or {gen_path}; "
                         "pass mask_id, cls_id and sep_id")
    setup = Electra(disc_cfg, gen_cfg, objective, ids["[MASK]"], (ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]))
    joint = {f"discriminator.{k}": v for k, v in disc.items()}
    joint.update({f"generator.{k}": v for k, v in gen.items() if k not in SHARED_KEYS})
    check_params(joint, setup.shapes(), what="joint pretraining params")
    return setup, joint
