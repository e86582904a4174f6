"""Parameters: flat dicts keyed by Hugging Face state-dict names, and their initialization.

A discriminator's dict maps one-to-one onto `ElectraForPreTraining`, a generator's onto
`ElectraForMaskedLM` (whose `generator_lm_head.weight` is tied to the word embeddings and so is not
stored). Linear weights are (out, in): y = x @ W.T + b.

The joint pretraining dict prefixes every key with "discriminator." or "generator.". The shared
embedding tensors (SHARED_KEYS) are stored once, under "discriminator."; `generator_params` returns
a generator view that points at them. The MLM-only baseline has no discriminator: its embeddings
live under "generator.".
"""

import numpy as np

from .config import ElectraConfig

Shapes = dict[str, tuple[int, ...]]
Params = dict[str, np.ndarray]

WORD = "electra.embeddings.word_embeddings.weight"  # also the generator's output projection (tied)
POSITION = "electra.embeddings.position_embeddings.weight"
TOKEN_TYPE = "electra.embeddings.token_type_embeddings.weight"
EMBEDDING_TABLES = (WORD, POSITION, TOKEN_TYPE)  # gathered by id: their gradients are scatter-adds
SHARED_KEYS = EMBEDDING_TABLES + ("electra.embeddings.LayerNorm.weight", "electra.embeddings.LayerNorm.bias")

LAYER_SHAPES = {  # relative to "electra.encoder.layer.{i}."; H hidden, F intermediate
    "attention.self.query.weight": ("H", "H"), "attention.self.query.bias": ("H",),
    "attention.self.key.weight": ("H", "H"), "attention.self.key.bias": ("H",),
    "attention.self.value.weight": ("H", "H"), "attention.self.value.bias": ("H",),
    "attention.output.dense.weight": ("H", "H"), "attention.output.dense.bias": ("H",),
    "attention.output.LayerNorm.weight": ("H",), "attention.output.LayerNorm.bias": ("H",),
    "intermediate.dense.weight": ("F", "H"), "intermediate.dense.bias": ("F",),
    "output.dense.weight": ("H", "F"), "output.dense.bias": ("H",),
    "output.LayerNorm.weight": ("H",), "output.LayerNorm.bias": ("H",),
}


def encoder_shapes(config: ElectraConfig) -> Shapes:
    """Every `electra.*` parameter of an ElectraModel and its shape."""
    c = config
    dims = {"H": c.hidden_size, "F": c.intermediate_size}
    shapes = {
        WORD: (c.vocab_size, c.embedding_size),
        POSITION: (c.max_position_embeddings, c.embedding_size),
        TOKEN_TYPE: (c.type_vocab_size, c.embedding_size),
        "electra.embeddings.LayerNorm.weight": (c.embedding_size,),
        "electra.embeddings.LayerNorm.bias": (c.embedding_size,),
    }
    if c.embedding_size != c.hidden_size:
        shapes["electra.embeddings_project.weight"] = (c.hidden_size, c.embedding_size)
        shapes["electra.embeddings_project.bias"] = (c.hidden_size,)
    for i in range(c.num_hidden_layers):
        for name, shape in LAYER_SHAPES.items():
            shapes[f"electra.encoder.layer.{i}.{name}"] = tuple(dims[d] for d in shape)
    return shapes


def discriminator_shapes(config: ElectraConfig) -> Shapes:
    """ElectraForPreTraining: encoder + dense (H, H) + dense_prediction (1, H)."""
    shapes = encoder_shapes(config)
    H = config.hidden_size
    shapes.update({
        "discriminator_predictions.dense.weight": (H, H), "discriminator_predictions.dense.bias": (H,),
        "discriminator_predictions.dense_prediction.weight": (1, H),
        "discriminator_predictions.dense_prediction.bias": (1,),
    })
    return shapes


def generator_shapes(config: ElectraConfig) -> Shapes:
    """ElectraForMaskedLM: encoder + dense (E, H) + LayerNorm (E) + output bias (V); output weight tied."""
    shapes = encoder_shapes(config)
    E, H, V = config.embedding_size, config.hidden_size, config.vocab_size
    shapes.update({
        "generator_predictions.dense.weight": (E, H), "generator_predictions.dense.bias": (E,),
        "generator_predictions.LayerNorm.weight": (E,), "generator_predictions.LayerNorm.bias": (E,),
        "generator_lm_head.bias": (V,),
    })
    return shapes


def joint_shapes(disc_config: ElectraConfig, gen_config: ElectraConfig, objective: str = "electra") -> Shapes:
    """The joint pretraining dict's keys and shapes (see the module docstring)."""
    if objective == "mlm":
        return {f"generator.{k}": s for k, s in generator_shapes(gen_config).items()}
    if disc_config.embedding_size != gen_config.embedding_size or disc_config.vocab_size != gen_config.vocab_size:
        raise ValueError("generator and discriminator must have the same embedding_size and vocab_size "
                         "to share embeddings")
    shapes = {f"discriminator.{k}": s for k, s in discriminator_shapes(disc_config).items()}
    shapes.update({f"generator.{k}": s for k, s in generator_shapes(gen_config).items() if k not in SHARED_KEYS})
    return shapes


def init_params(shapes: Shapes, initializer_range: float, seed: int, dtype=np.float32) -> Params:
    """Hugging Face `ElectraPreTrainedModel._init_weights`: weights and embeddings ~ N(0, initializer_range),
    biases 0, LayerNorm weight 1 and bias 0. Drawn in sorted key order from `seed`, so the result
    does not depend on dict order."""
    rng = np.random.default_rng(seed)
    params = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if "LayerNorm.weight" in name:
            params[name] = np.ones(shape, dtype)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape, dtype)
        else:
            params[name] = rng.normal(0.0, initializer_range, shape).astype(dtype)
    return {name: params[name] for name in shapes}


def check_params(params: Params, shapes: Shapes, what: str = "params") -> None:
    """Refuse a dict with missing keys, unexpected keys or wrong shapes, listing every problem at once."""
    missing = [k for k in shapes if k not in params]
    unexpected = [k for k in params if k not in shapes]
    wrong = [f"{k}: got {tuple(np.shape(params[k]))}, expected {shapes[k]}"
             for k in shapes if k in params and tuple(np.shape(params[k])) != tuple(shapes[k])]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): " + "; ".join(wrong))
    if problems:
        raise ValueError(f"{what} do not match the config:\n  " + "\n  ".join(problems))
    dtypes = {params[k].dtype for k in shapes}
    if len(dtypes) != 1 or not np.issubdtype(next(iter(dtypes)), np.floating):
        raise ValueError(f"{what} must all share one floating dtype, got {sorted(map(str, dtypes))}")


def sub(params: Params, prefix: str) -> Params:
    """The entries under `prefix`, with the prefix removed (a view: the arrays are shared, not copied)."""
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def discriminator_params(joint: Params) -> Params:
    """The discriminator's HF-named dict (a view of the joint dict)."""
    return sub(joint, "discriminator.")


def generator_params(joint: Params) -> Params:
    """The generator's HF-named dict; the shared embeddings come from the discriminator when it has them."""
    gen = sub(joint, "generator.")
    for k in SHARED_KEYS:
        if k not in gen:
            gen[k] = joint[f"discriminator.{k}"]
    return gen
