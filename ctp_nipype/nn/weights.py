"""Saving and loading the network's weights as safetensors (no pickle), offline.

A weights file holds the tensors of :class:`~ctp_nipype.nn.model.PerfusionTransformer`
and, in the safetensors header's string metadata, the architecture
(``config``, JSON), the normalisation constants (``tissue_gain``,
``residue_scale``) and free-form provenance (``card``, JSON: recipe, seed,
commit, training time, ...). The shipped weights live in
``ctp_nipype/data/transformer.safetensors`` with a readable copy of the
metadata in ``ctp_nipype/data/transformer.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import RESIDUE_SCALE, TISSUE_GAIN, ModelConfig, PerfusionTransformer

#: the weights shipped inside the package
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "transformer.safetensors"
#: the shipped weights may not exceed this size (bytes)
MAX_WEIGHTS_BYTES = 5 * 1024 * 1024


class WeightsError(ValueError):
    """A weights file that cannot be used, with what is wrong and what to do."""


def shipped_weights_available():
    """True when the package ships trained weights."""
    return SHIPPED_WEIGHTS.exists()


def save_weights(model, path, card=None):
    """Write ``model``'s weights and metadata to ``path`` (safetensors) and ``path`` with ``.json``.

    Parameters
    ----------
    model : PerfusionTransformer
    path : str or Path
    card : dict, optional
        Provenance (recipe, seed, commit, training time, metrics); JSON-serialisable.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in model.state_dict().items()}
    metadata = {
        "format": "ctp_nipype.PerfusionTransformer",
        "config": json.dumps(model.config.to_dict()),
        "tissue_gain": repr(TISSUE_GAIN),
        "residue_scale": repr(RESIDUE_SCALE),
        "card": json.dumps(card or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    readable = {k: (json.loads(v) if k in ("config", "card") else v) for k, v in metadata.items()}
    path.with_suffix(".json").write_text(json.dumps(readable, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_metadata(path):
    """The metadata dict of a weights file (``config`` and ``card`` decoded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata() or {})
    for key in ("config", "card"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return meta


def load_model(weights=None, device="cpu"):
    """Build the network and load weights (default: the shipped ones), in eval mode.

    Parameters
    ----------
    weights : str or Path, optional
        A ``.safetensors`` file written by :func:`save_weights`.
    device : str or torch.device

    Returns
    -------
    PerfusionTransformer
    """
    path = Path(weights) if weights is not None else SHIPPED_WEIGHTS
    if not path.exists():
        if weights is None:
            raise WeightsError(
                f"No trained weights are shipped with this installation ({path} is missing); "
                "train some with `ctp-train --recipe cpu --out DIR` and pass DIR/best.safetensors as weights."
            )
        raise WeightsError(f"The weights file {path} does not exist.")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path} is not a .safetensors file; only safetensors weights are loaded (no pickle).")
    try:
        meta = read_metadata(path)
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise WeightsError(
            f"{path} cannot be read as safetensors weights ({err}); the file is corrupt or not a weights file: "
            "use a .safetensors file written by ctp-train or ctp-finetune."
        ) from None
    if meta.get("format") != "ctp_nipype.PerfusionTransformer":
        raise WeightsError(
            f"{path} does not hold ctp_nipype PerfusionTransformer weights (format {meta.get('format')!r}); "
            "use a .safetensors file written by ctp-train or ctp-finetune."
        )
    for key, expected in (("tissue_gain", TISSUE_GAIN), ("residue_scale", RESIDUE_SCALE)):
        if float(meta.get(key, expected)) != expected:
            raise WeightsError(f"{path} was trained with {key}={meta[key]}, this code uses {expected}.")
    try:
        model = PerfusionTransformer(ModelConfig.from_dict(meta.get("config", {})))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, ValueError) as err:  # tensor shapes or config of another architecture
        first = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(f"{path} does not match the network its metadata describes ({first}).") from None
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not match the network: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
        )
    model.card = meta.get("card", {})
    return model.to(device).eval()
