"""How electra_np's parameters and config map onto Hugging Face `transformers` ELECTRA checkpoints: the kinds
of model, their tensor names and shapes, and config.json's contents. hf.py reads and writes the folders.

Our parameter dicts already use HF state-dict names, so a checkpoint maps one-to-one onto a dict; the kind of
model comes from config["architectures"] (else from the parameter names):

    kind                  architecture                        parameters
    "discriminator"       ElectraForPreTraining               params.discriminator_shapes
    "generator"           ElectraForMaskedLM                  params.generator_shapes (lm head tied)
    "encoder"             ElectraModel                        params.encoder_shapes
    "classifier"          ElectraForSequenceClassification    classification.classifier_shapes(head="hf")
    "classifier_official" ElectraNpOfficialClassifier         classification.classifier_shapes(head="official")

The last one is ours (google-research/electra's one-layer head, classifier.weight/bias): transformers knows
no such architecture, and AutoModel loads only its encoder from such a folder.

The tokenizer is BERT's WordPiece, which transformers calls ElectraTokenizer (= BertTokenizer): vocab.txt plus
tokenizer_config.json (lowercasing, accent stripping, the length limit, the special tokens) and
special_tokens_map.json rebuild it (tokenizer_config below). transformers' WordPiece turns a word longer than
100 characters into [UNK], electra_np's longer than 200 (google-research/bert): no other difference.

Where the names differ: HF stores registered buffers (position_ids, token_type_ids) beside the parameters; a
bare ElectraModel names its tensors without the "electra." prefix; ElectraForMaskedLM stores its output
projection `generator_lm_head.weight`, tied to the word embeddings, which we keep only as the word embeddings.
"""

import warnings
from collections.abc import Iterable, Mapping, Sized

import numpy as np

from .classification import classifier_shapes, head_of
from .config import ElectraConfig
from .params import WORD, Params, Shapes, check_params, discriminator_shapes, encoder_shapes, generator_shapes

KINDS = {
    "discriminator": "ElectraForPreTraining",
    "generator": "ElectraForMaskedLM",
    "encoder": "ElectraModel",
    "classifier": "ElectraForSequenceClassification",
    "classifier_official": "ElectraNpOfficialClassifier",
}
ARCHITECTURE_KINDS = {arch: kind for kind, arch in KINDS.items()}

TIED_KEY = "generator_lm_head.weight"  # HF ties it to the word embeddings; we store it only there
BUFFER_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")  # registered buffers, not parameters
ENCODER_PREFIXES = ("embeddings.", "embeddings_project.", "encoder.")  # a bare ElectraModel's top-level names
ENCODER_PREFIX = "electra."  # what a bare ElectraModel's names lack
TOKENIZER_CLASS = "ElectraTokenizer"  # BertTokenizer under ELECTRA's name (transformers 4 and 5)
SPECIAL_TOKENS_MAP = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                      "mask_token": "[MASK]"}  # BertTokenizer's defaults, which electra_np's vocabularies use


# ----------------------------------------------------------------------------- config.json

def config_from_hf(d: dict, source: str = "config.json") -> ElectraConfig:
    """An ElectraConfig from a Hugging Face config dict, refusing what does not describe an ELECTRA encoder."""
    archs = d.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ValueError(f"{source}: architectures must be a list of class names, got {archs!r}")
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
    return ElectraConfig.from_dict(d, source=source)  # a wrong value is refused naming the file and the key


def num_labels(d: dict, source: str = "config.json") -> int:
    """The classes a config.json declares (id2label, else num_labels, else transformers' default 2)."""
    if d.get("id2label"):
        return len(config_labels(d, source))
    n = d.get("num_labels", 2)  # transformers' PretrainedConfig default
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{source}: num_labels must be a positive integer, got {n!r}")
    return n


def config_labels(d: dict, source: str = "config.json") -> dict[str, int]:
    """{label name: class id} of a classifier's config.json: label2id, else id2label, else transformers' own names
    LABEL_0, LABEL_1, ... for num_labels classes. Refuses labels that are not a JSON object of names and the ids
    0..C-1 each once, naming the file: a label attached to the wrong class would be silent."""
    if d.get("label2id"):
        pairs, key = d["label2id"], "label2id"
        if not isinstance(pairs, dict):
            raise ValueError(f"{source}: label2id must be a JSON object of label names and class ids, got "
                             f"{type(pairs).__name__}")
        ids = list(pairs.values())
        labels = dict(pairs)
    elif d.get("id2label"):
        pairs, key = d["id2label"], "id2label"
        if not isinstance(pairs, dict):
            raise ValueError(f"{source}: id2label must be a JSON object of class ids and label names, got "
                             f"{type(pairs).__name__}")
        ids = [int(k) if isinstance(k, str) and k.isdigit() else k for k in pairs]  # JSON object keys are strings
        if any(not isinstance(name, (str, int)) or isinstance(name, bool) for name in pairs.values()):
            raise ValueError(f"{source}: id2label's label names must be strings")
        labels = {str(v): i for i, v in zip(ids, pairs.values())}
        if len(labels) != len(pairs):
            raise ValueError(f"{source}: id2label gives one label name to two classes")
    else:
        return {f"LABEL_{i}": i for i in range(num_labels(d, source))}
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids) or sorted(ids) != list(range(len(ids))):
        raise ValueError(f"{source}: {key} must give the class ids 0..{len(ids) - 1} once each, got "
                         f"{sorted(map(str, ids))}")
    return {str(name): int(i) for name, i in labels.items()}


def config_dict(config: ElectraConfig, kind: str, params: Params, extra_config: dict | None = None) -> dict:
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
    d["dtype"] = str(params[WORD].dtype)
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


def tokenizer_config(do_lower_case: bool, strip_accents: bool | None, model_max_length: int) -> dict:
    """tokenizer_config.json of the ElectraTokenizer that tokenizes as electra_np's data.tokenizer.Tokenizer:
    the entries transformers' ElectraTokenizer.save_pretrained writes (its BertNormalizer's flags, the length
    limit, the special tokens). strip_accents None follows do_lower_case, in both libraries."""
    return {"tokenizer_class": TOKENIZER_CLASS, "do_lower_case": bool(do_lower_case),
            "strip_accents": None if strip_accents is None else bool(strip_accents),
            "tokenize_chinese_chars": True, "model_max_length": int(model_max_length), **SPECIAL_TOKENS_MAP}


def check_tokenizer_config(d: dict, source: str = "tokenizer_config.json") -> dict:
    """d, after refusing flags of the wrong type (the JSON "no" is a string, which Python would read as true)."""
    for key, allowed, what in (("do_lower_case", (bool,), "true or false"),
                               ("strip_accents", (bool, type(None)), "true, false or null")):
        if key in d and not isinstance(d[key], allowed):
            raise ValueError(f"{source}: {key} must be {what}, got {d[key]!r}")
    return d


# ----------------------------------------------------------------------------- tensor names and shapes

def kind_shapes(config: ElectraConfig, kind: str, num_labels: int = 2) -> Shapes:
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


def kind_from_keys(keys: Iterable[str]) -> str:
    """Fallback when config.json names no architecture: the head's parameter names tell."""
    keys = set(keys)
    if any(k.startswith("discriminator_predictions.") for k in keys):
        return "discriminator"
    if any(k.startswith(("generator_predictions.", "generator_lm_head.")) for k in keys):
        return "generator"
    if any(k.startswith(("classifier.dense.", "classifier.out_proj.")) for k in keys):
        return "classifier"
    if "classifier.weight" in keys:
        return "classifier_official"
    return "encoder"


def from_hf_names(sd: Mapping[str, np.ndarray], kind: str, source: str, tied: bool = True) -> Params:
    """HF names -> ours: drop buffers, add "electra." to a bare ElectraModel's names, untie the generator's
    output projection (kept only as the word embeddings, HF ties the two unless tie_word_embeddings is false)."""
    sd = {k: v for k, v in sd.items() if not k.endswith(BUFFER_KEYS)}
    if not any(k.startswith(ENCODER_PREFIX) for k in sd):
        sd = {(ENCODER_PREFIX + k if k.startswith(ENCODER_PREFIXES) else k): v for k, v in sd.items()}
    if TIED_KEY in sd:
        out = sd.pop(TIED_KEY)
        if WORD not in sd:
            sd[WORD] = out
        elif np.shape(out) == np.shape(sd[WORD]) and not np.array_equal(out, sd[WORD]):
            if not tied:
                raise ValueError(f"{source}: the generator's output projection is not tied to the word embeddings "
                                 "(tie_word_embeddings is false and the two differ); electra_np always ties them")
            warnings.warn(f"{source}: {TIED_KEY} differs from the word embeddings; HF ties the two, so the word "
                          "embeddings are used for both", stacklevel=3)
    if kind == "encoder":  # an encoder can be read out of any ELECTRA checkpoint: heads are dropped
        sd = {k: v for k, v in sd.items() if k.startswith(ENCODER_PREFIX)}
    return sd


def to_hf_names(params: Params, kind: str) -> Params:
    """Ours -> the tensors transformers writes: contiguous; a bare ElectraModel's names without "electra.";
    the generator's tied output projection written out as a copy of the word embeddings, so every loader
    finds it."""
    tensors = {k: np.ascontiguousarray(v) for k, v in params.items()}
    if kind == "encoder":
        tensors = {k[len(ENCODER_PREFIX):]: v for k, v in tensors.items()}
    if kind == "generator":
        tensors[TIED_KEY] = tensors[WORD].copy()
    return tensors


# ----------------------------------------------------------------------------- checks

def check_vocab(config: ElectraConfig, vocab_size: int | Sized | None, source: str) -> None:
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


def check_finite(params: Params, source: str) -> None:
    """Refuse a checkpoint with a NaN or infinite weight: it would give NaN scores everywhere, without a word."""
    bad = next((k for k, v in params.items() if not np.isfinite(v).all()), None)
    if bad is not None:
        raise ValueError(f"{source}: tensor {bad} holds NaN or infinite values; the checkpoint is damaged")


def check_kind_params(config: ElectraConfig, params: Params, kind: str) -> None:
    """Refuse a config that is not an ElectraConfig, an unknown kind, or params that do not fit the kind."""
    if not isinstance(config, ElectraConfig):
        raise TypeError(f"config must be an ElectraConfig, got {type(config).__name__}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    labels = head_of(params)[1] if kind.startswith("classifier") else 2
    check_params(params, kind_shapes(config, kind, labels), what=f"{KINDS[kind]} params")
