"""Hugging Face interoperability: load and save `transformers` ELECTRA checkpoint folders.

A checkpoint folder is config.json + model.safetensors (or a sharded model.safetensors.index.json, or
pytorch_model.bin when torch is installed, or electra_np's own model.npz). hf_mapping.py says how its tensor
names, shapes and config map onto ours, and which kinds of model there are; this module reads and writes
the files:

    config, params, kind = from_pretrained("electra-small-discriminator")
    save_pretrained("out", config, params, kind)         # transformers.ElectraForPreTraining loads it
    save_pretrained("out", config, params, kind, tokenizer=tok)  # + vocab.txt etc.: AutoTokenizer loads it too
    setup, joint = load_pretraining_pair("electra-small-discriminator", "electra-small-generator")
    save_pretraining_checkpoint("ckpt", setup, joint)    # ckpt/discriminator, ckpt/generator

Loading is strict: missing keys, unexpected keys and shape conflicts are refused, all listed at once; a
damaged file, a config value of the wrong type and a NaN weight each in one line naming the file.
Writing is atomic (atomic.atomic_folder): files go to a temporary folder beside the target, which then
replaces the target, bringing along the files of an old target that were not rewritten (a tokenizer's) but
no stale weights; nothing is written when validation fails. safetensors (and torch, for .bin files) are
imported lazily.
"""

import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Iterable, Sized

import numpy as np

from .atomic import atomic_folder
from .config import ElectraConfig, PretrainingConfig
from .hf_mapping import (
    ARCHITECTURE_KINDS,
    KINDS,
    SPECIAL_TOKENS_MAP,
    check_finite,
    check_kind_params,
    check_tokenizer_config,
    check_vocab,
    config_dict,
    config_from_hf,
    from_hf_names,
    kind_from_keys,
    kind_shapes,
    num_labels,
    to_hf_names,
    tokenizer_config,
)
from .model import Electra
from .params import SHARED_KEYS, WORD, Params, check_params, discriminator_params, generator_params

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"
NPZ_NAME = "model.npz"  # electra_np's own format (train/export.py), same names; read last, never written here
WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, TORCH_NAME)  # stale copies are never carried over
VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
TOKENIZER_FILES = (VOCAB_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME)  # what AutoTokenizer needs

PathLike = str | os.PathLike  # a folder or file path


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("reading and writing Hugging Face checkpoints needs the safetensors package: "
                          "pip install electra_np[hf]") from None
    return safetensors.numpy


# ----------------------------------------------------------------------------- reading

def read_config(path: PathLike) -> dict:
    """config.json of a checkpoint folder as a dict; refuses a missing file, bad JSON, or a non-object."""
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a checkpoint folder (expected a folder holding {CONFIG_NAME})")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: missing; a Hugging Face checkpoint folder needs its config.json")
    return _json_object(file)


def read_tokenizer_config(path: PathLike) -> dict:
    """tokenizer_config.json of a checkpoint folder as a dict ({} when there is none), its flags checked
    (hf_mapping.check_tokenizer_config: "do_lower_case": "no" is a true string, and would lowercase)."""
    file = os.path.join(path, TOKENIZER_CONFIG_NAME)
    return check_tokenizer_config(_json_object(file), file) if os.path.isfile(file) else {}


def _json_object(file) -> dict:
    try:
        with open(file, encoding="utf-8") as f:
            d = json.load(f)
    except ValueError as e:  # bad JSON or bad UTF-8
        raise ValueError(f"{file}: not valid JSON ({_brief(e)})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(d).__name__}")
    return d


def _weights_file(path):
    for name in (*WEIGHT_FILES, NPZ_NAME):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"{path}: no weights file (looked for {', '.join((*WEIGHT_FILES, NPZ_NAME))})")


def _read_safetensors(file):
    """The tensors of a .safetensors file; bfloat16 ones (NumPy has no such type) as float32."""
    st = _safetensors_numpy()
    try:
        with open(file, "rb") as f:  # the layout: an 8-byte little-endian length, the JSON header, the data
            header_bytes = f.read(int.from_bytes(f.read(8), "little"))
        if b'"BF16"' not in header_bytes:
            return st.load_file(file)
        from safetensors import safe_open

        header = json.loads(header_bytes)
        with safe_open(file, framework="np") as f:
            out = {k: f.get_tensor(k) for k in f.keys() if header[k]["dtype"] != "BF16"}
        for k, info in header.items():
            if k != "__metadata__" and info["dtype"] == "BF16":  # bfloat16: the upper 16 bits of a float32
                begin, end = info["data_offsets"]
                bits = np.fromfile(file, np.dtype("<u2"), (end - begin) // 2, offset=8 + len(header_bytes) + begin)
                out[k] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
        return out
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise ValueError(f"{file}: not a readable safetensors file ({_brief(e)})") from None


def _read_torch(file):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{file}: reading pytorch_model.bin needs torch (or convert the checkpoint to "
                          "model.safetensors)") from None
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{file}: not a readable PyTorch state dict ({_brief(e)})") from None
    if not isinstance(sd, dict):
        raise ValueError(f"{file}: expected a state dict, got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{file}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return out


def _brief(e: Exception, limit: int = 160) -> str:
    """An exception as one short line: a damaged file's parser may quote hundreds of its bytes."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def load_state_dict(path: PathLike) -> tuple[dict[str, np.ndarray], str]:
    """The raw tensors of a checkpoint folder as NumPy arrays (no renaming, no checks). Returns: (dict, file)."""
    file = _weights_file(path)
    if file.endswith(SAFETENSORS_INDEX_NAME):
        try:
            with open(file, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # bad JSON or UTF-8, no weight_map
            raise ValueError(f"{file}: not a valid safetensors index ({e!r})") from None
        if not all(isinstance(shard, str) for shard in shards):
            raise ValueError(f"{file}: not a valid safetensors index (weight_map's values must be file names)")
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
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # a truncated file is a bad zip
            raise ValueError(f"{file}: not a readable .npz file, truncated or damaged ({_brief(e)})") from None
    return _read_torch(file), file


def from_pretrained(path: PathLike, kind: str | None = None, dtype=None,
                    vocab_size: int | Sized | None = None) -> tuple[ElectraConfig, Params, str]:
    """Load a Hugging Face ELECTRA checkpoint folder.

    Inputs:  path: folder with config.json and model.safetensors / pytorch_model.bin; kind: None to take it
             from config["architectures"] (else from the parameter names), or one of KINDS to insist on it
             ("encoder" reads the encoder of any ELECTRA checkpoint); dtype: cast every tensor to it, or None
             (the default) to keep what the file holds: float32 stays float32 and float64 stays float64, while
             float16 and bfloat16 become float32 (load_dtype); vocab_size: an int or a tokenizer (len() /
             .vocab_size) the checkpoint must match
    Returns: (ElectraConfig, params dict keyed by HF names, kind); every tensor a writable copy
    """
    d = read_config(path)
    config_file = os.path.join(path, CONFIG_NAME)
    config = config_from_hf(d, config_file)
    check_vocab(config, vocab_size, config_file)
    archs = d.get("architectures") or []
    if kind is None and archs:
        if archs[0] not in ARCHITECTURE_KINDS:
            raise ValueError(f"{config_file}: architecture {archs[0]!r} is not supported; electra_np reads "
                             f"{', '.join(ARCHITECTURE_KINDS)} (or pass kind='encoder' to take the encoder only)")
        kind = ARCHITECTURE_KINDS[archs[0]]
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    sd, file = load_state_dict(path)
    kind = kind or kind_from_keys(sd)
    params = from_hf_names(sd, kind, file, tied=d.get("tie_word_embeddings", True))
    dtype = load_dtype(params.values()) if dtype is None else dtype
    # a writable copy of every float tensor; integer tensors are left for check_params to refuse
    params = {k: np.array(v, dtype=dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in params.items()}
    check_params(params, kind_shapes(config, kind, num_labels(d, config_file)), what=f"{file} ({KINDS[kind]} tensors)")
    check_finite(params, file)
    return config, params, kind


def load_dtype(tensors: Iterable[np.ndarray]) -> np.dtype | None:
    """The dtype from_pretrained keeps a checkpoint's float tensors in: theirs, but at least float32 (training
    and the fast path's kernels run in float32 or float64 only, and the reference ops would compute softmax,
    LayerNorm and the gradients in half precision), the widest when a file mixes them. None: no float tensor."""
    kept = {max(np.dtype(t.dtype), np.dtype(np.float32), key=lambda d: d.itemsize)
            for t in tensors if np.issubdtype(t.dtype, np.floating)}
    return max(kept, key=lambda d: d.itemsize) if kept else None


# ----------------------------------------------------------------------------- writing

def _carry_over(src: PathLike, dst: PathLike) -> None:
    """Bring the old target's other files (a tokenizer's) into the new folder; config and weights are not."""
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


def _write_folder(folder: PathLike, config: ElectraConfig, params: Params, kind: str,
                  extra_config: dict | None = None) -> None:
    """config.json and model.safetensors into an existing (temporary) folder. Validate first."""
    st = _safetensors_numpy()
    d = config_dict(config, kind, params, extra_config)
    tensors = to_hf_names(params, kind)
    with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, sort_keys=True)
        f.write("\n")
    st.save_file(tensors, os.path.join(folder, SAFETENSORS_NAME), metadata={"format": "pt"})


def _json_text(d: dict) -> str:
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _tokenizer_texts(tokenizer, model_max_length: int) -> dict[str, str]:
    """{file name: text} of the tokenizer files; validated here, so that nothing is written when they are bad.
    tokenizer: electra_np's data.tokenizer.Tokenizer, or anything with ids_to_tokens, do_lower_case and
    strip_accents (None: follow do_lower_case)."""
    tokens = list(tokenizer.ids_to_tokens)
    bad = [t for t in tokens if not isinstance(t, str) or not t or "\n" in t or "\r" in t]
    if bad:
        raise ValueError(f"tokenizer: {len(bad)} tokens cannot be written one per line to vocab.txt, e.g. {bad[0]!r}")
    missing = sorted(set(SPECIAL_TOKENS_MAP.values()) - set(tokens))
    if missing:
        raise ValueError(f"tokenizer: the vocabulary lacks the special tokens {', '.join(missing)}")
    lower = tokenizer.do_lower_case
    config = tokenizer_config(lower, getattr(tokenizer, "strip_accents", None), model_max_length)
    return {VOCAB_NAME: "".join(t + "\n" for t in tokens), TOKENIZER_CONFIG_NAME: _json_text(config),
            SPECIAL_TOKENS_MAP_NAME: _json_text(SPECIAL_TOKENS_MAP)}


def write_tokenizer(folder: PathLike, tokenizer, model_max_length: int) -> None:
    """vocab.txt, tokenizer_config.json and special_tokens_map.json into an existing folder: with them
    transformers.AutoTokenizer.from_pretrained(folder) rebuilds the tokenizer (ElectraTokenizer) and gives
    electra_np's ids. Plain writes: call it inside atomic.atomic_folder (save_pretrained does)."""
    for name, text in _tokenizer_texts(tokenizer, model_max_length).items():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def save_pretrained(path: PathLike, config: ElectraConfig, params: Params, kind: str, extra_config: dict | None = None,
                    vocab_size: int | Sized | None = None, tokenizer=None, keep_others: bool = True) -> None:
    """Write a checkpoint folder that transformers' `<architecture>.from_pretrained(path)` loads with no
    missing or unexpected keys. extra_config: more config.json entries (label names, say); it may not
    override the architecture. vocab_size: an int or tokenizer the checkpoint must match. tokenizer: also
    write its files (write_tokenizer; model_max_length = max_position_embeddings), so that the folder is
    complete for AutoTokenizer too. keep_others: bring along the other files of an existing folder (a
    tokenizer's); False replaces the folder with exactly the files written here.
    Validation happens first: nothing is written when it fails."""
    check_kind_params(config, params, kind)
    check_vocab(config, vocab_size, f"{KINDS[kind]} params")
    config_dict(config, kind, params, extra_config)
    if tokenizer is not None:
        check_vocab(config, len(tokenizer.ids_to_tokens), "tokenizer")
        _tokenizer_texts(tokenizer, config.max_position_embeddings)
    _safetensors_numpy()
    with atomic_folder(path, carry_over=_carry_over if keep_others else None) as tmp:
        _write_folder(tmp, config, params, kind, extra_config)
        if tokenizer is not None:
            write_tokenizer(tmp, tokenizer, config.max_position_embeddings)


# ----------------------------------------------------------------------------- pretraining pairs

def split_joint(setup: Electra, joint_params: Params) -> tuple[Params | None, Params]:
    """The joint pretraining dict -> (discriminator params, generator params), each a full HF-named dict
    holding the shared embeddings (arrays shared, not copied)."""
    check_params(joint_params, setup.shapes(), what="joint pretraining params")
    disc = discriminator_params(joint_params) if setup.objective.objective == "electra" else None
    return disc, generator_params(joint_params)


def save_pretraining_checkpoint(path: PathLike, setup: Electra, joint_params: Params,
                                files: Iterable[PathLike] = ()) -> None:
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
                check_vocab(setup.gen, sum(1 for _ in fh), f)
    _safetensors_numpy()
    with atomic_folder(path, carry_over=_carry_over) as tmp:
        parts = [("generator", setup.gen, gen)] + ([("discriminator", setup.disc, disc)] if disc is not None else [])
        for kind, config, params in parts:
            folder = os.path.join(tmp, kind)
            os.makedirs(folder)
            _write_folder(folder, config, params, kind)
            for f in files:
                shutil.copy2(f, os.path.join(folder, os.path.basename(f)))


def special_token_ids(path: PathLike) -> dict[str, int] | None:
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


def load_pretraining_pair(disc_path: PathLike, gen_path: PathLike, objective: PretrainingConfig = PretrainingConfig(),
                          dtype=np.float32, mask_id: int | None = None, cls_id: int | None = None,
                          sep_id: int | None = None, vocab_size: int | Sized | None = None) -> tuple[Electra, Params]:
    """Continue pretraining from a discriminator + generator pair (Google's released google/electra-*-
    discriminator and -generator, or a save_pretraining_checkpoint folder).

    The generator's config comes from its own config.json, not from objective.generator_hidden_size (the
    released small generator is as wide as its discriminator). The two must agree on the shared embeddings'
    shapes; if their values differ, the discriminator's are kept, with a warning. Special token ids: given,
    else read from vocab.txt / tokenizer.json in either folder. dtype: the pretraining dtype both are cast to
    (float32, what runs train in, unless given; None keeps the files' as from_pretrained does).
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
    if disc[WORD].dtype != gen[WORD].dtype:
        conflicts.append(f"dtype: discriminator {disc[WORD].dtype}, generator {gen[WORD].dtype}")
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
