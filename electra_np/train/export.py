"""The models a finished run leaves for fine-tuning: out_dir/discriminator and out_dir/generator, each a
folder a reader can load on its own (electra_np, or Hugging Face transformers when the `hf` extra is
installed), each replaced in one atomic step (atomic.atomic_folder).
"""

import os
from pathlib import Path

import numpy as np

from .. import hf
from ..atomic import atomic_folder
from ..data.tokenizer import Tokenizer
from ..model import Electra
from ..params import discriminator_params, generator_params

FILE_MODE = 0o644  # readable by all, whatever the umask


def save_for_finetuning(out_dir, setup: Electra, params: dict, tokenizer: Tokenizer) -> dict[str, Path]:
    """out_dir/discriminator and out_dir/generator: model.npz (Hugging Face state-dict names) + config.json +
    vocab.txt + tokenizer_config.json + special_tokens_map.json (what AutoTokenizer reads);
    also model.safetensors when safetensors is there.
    The MLM objective has only the generator (the BERT-style baseline to fine-tune).
    Returns: {kind: folder}."""
    out_dir = Path(out_dir)
    models = [("generator", setup.gen, generator_params(params), "ElectraForMaskedLM")]
    if setup.objective.objective == "electra":
        models.insert(0, ("discriminator", setup.disc, discriminator_params(params), "ElectraForPreTraining"))
    written = {}
    for kind, config, weights, architecture in models:
        with atomic_folder(out_dir / kind) as tmp:
            with open(tmp / "model.npz", "wb") as f:
                np.savez(f, **weights)
            config.save_json(tmp / "config.json", architectures=[architecture])
            hf.write_tokenizer(tmp, tokenizer, config.max_position_embeddings)  # vocab.txt, tokenizer files
            _save_hf(tmp, config, weights, kind)
            for f in tmp.iterdir():
                os.chmod(f, FILE_MODE)
        written[kind] = out_dir / kind
    return written


def _save_hf(folder, config, weights, kind):
    """Hugging Face safetensors too, if electra_np.hf and safetensors are available."""
    try:
        import safetensors  # noqa: F401
    except ImportError:
        return
    if hasattr(hf, "save_pretrained"):
        hf.save_pretrained(folder, config, weights, kind)
