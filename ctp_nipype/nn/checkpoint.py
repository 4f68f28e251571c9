"""Training checkpoints without pickle: safetensors for the tensors, JSON for the rest.

``ctp-train --resume`` reads a checkpoint that anyone who could write to the run folder
could have replaced; a pickle (``torch.save``/``torch.load``) runs code when it is loaded,
so a checkpoint is one ``.safetensors`` file: the model's, the optimiser's and the moving
average's tensors under the prefixes ``model/``, ``optimizer/`` and ``ema/``, and in the
header's string metadata the JSON of everything else (training state, recipe, the
optimiser's parameter groups and its non-tensor state). Loading parses JSON and raw tensors
only; any other file is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

#: the checkpoint's file name in a run folder
CHECKPOINT_NAME = "checkpoint.safetensors"
#: the pickle checkpoint of older versions, refused (never loaded)
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "ctp_nipype.training_checkpoint.v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what to do."""


def _flatten_optimizer(state_dict):
    """An optimiser's ``state_dict`` as ``(tensors, JSON-able rest)``."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors, rest):
    state = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(path, model_state, optimizer_state, state, recipe, ema_state=None):
    """Write a checkpoint atomically (a temporary file renamed over ``path``)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"model/{k}": v for k, v in model_state.items()}
    optimizer_tensors, optimizer_rest = _flatten_optimizer(optimizer_state)
    tensors.update(optimizer_tensors)
    if ema_state is not None:
        tensors.update({f"ema/{k}": v for k, v in ema_state.items()})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "state": json.dumps(state),
        "recipe": recipe if isinstance(recipe, str) else json.dumps(recipe),
        "optimizer": json.dumps(optimizer_rest),
        "has_ema": json.dumps(ema_state is not None),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, device="cpu"):
    """Read a checkpoint written by :func:`save_checkpoint`: no pickle, no code run.

    Returns a dict with ``model``, ``optimizer`` (state dicts), ``state`` (dict), ``recipe``
    (JSON text, as the old checkpoints held it) and ``ema`` when the run keeps a moving average.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path} is not a .safetensors checkpoint; ctp-train reads checkpoints only as safetensors (a pickle "
            "can run code when loaded). Start a new run, from that run's weights if you trust them: "
            "ctp-train --out NEW_FOLDER --init-weights OLD_FOLDER/last.safetensors."
        )
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safetensors' handle
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} cannot be read as a safetensors checkpoint ({err}); it is corrupt or not a checkpoint. "
            "Start a new run (ctp-train --out NEW_FOLDER), with --init-weights OLD_FOLDER/last.safetensors to keep "
            "the weights."
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a ctp_nipype training checkpoint (format {metadata.get('format')!r}); give the run folder "
            "that ctp-train wrote."
        )
    try:
        out = {
            "model": {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")},
            "optimizer": _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optimizer/")},
                                              json.loads(metadata["optimizer"])),
            "state": json.loads(metadata["state"]),
            "recipe": metadata["recipe"],
        }
        if json.loads(metadata.get("has_ema", "false")):
            out["ema"] = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path} is an incomplete checkpoint ({type(err).__name__}: {err}).") from None
    return out


def find_checkpoint(run_dir):
    """The checkpoint of a run folder, or ``None``; a legacy pickle checkpoint alone is refused."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    if path.exists():
        return path
    legacy = run_dir / LEGACY_CHECKPOINT_NAME
    if legacy.exists():
        raise CheckpointError(
            f"{legacy} was written by an older ctp-train as a pickle, which is no longer loaded (a pickle can run "
            "code). Its weights are safe to reuse: start a new run from them with ctp-train --out NEW_FOLDER "
            f"--init-weights {run_dir / 'last.safetensors'} (the optimiser's state starts afresh)."
        )
    return None
