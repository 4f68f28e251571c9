"""Training the perfusion Transformer on simulated curves (``ctp-train``).

A recipe (``ctp_nipype/nn/recipes/<name>.json``) fixes everything that
matters: seed, batch size, steps, time budget, learning-rate schedule (linear
warm-up, then cosine decay), loss weights and architecture. Training streams
batches from :func:`ctp_nipype.sims.simulate.simulate_curves` (the
simulator issue's generator, paper ranges), each batch on one random grid
(frame interval 1-2 s, 45-120 frames), generated from a random generator
seeded by ``(seed, step)`` so that a resumed run sees the same data as an
uninterrupted one.

The run directory holds ``recipe.json`` (the resolved recipe),
``checkpoint.safetensors`` (model, optimiser, step, elapsed time; written atomically
every few minutes and at the end; no pickle: :mod:`ctp_nipype.nn.checkpoint`),
``log.tsv`` (one row per logged step: losses and validation metrics),
``best.safetensors`` (+ ``.json``: the weights with the lowest validation CBF
RMSE so far) and ``last.safetensors``.

A recipe with ``"ema_decay"`` (e.g. 0.999) also keeps an exponential moving
average of the weights (``torch.optim.swa_utils``; it only watches, training
itself is unchanged), validates it at every validation step (the log's
``ema_val_*`` columns) and writes ``best_ema.safetensors`` and
``last_ema.safetensors`` beside the others, so that one run compares the
averaged weights with the raw ones.

The learning-rate schedule follows the training *progress*
``max(step / total_steps, elapsed / time_budget)``, so that a run bounded by
wall time still completes its cosine decay.

A recipe may also set ``"ranges"`` (fields of
:class:`~ctp_nipype.sims.simulate.SimulationRanges` that replace the
paper's training ranges) and ``"init_weights"`` (``"shipped"`` or a
``.safetensors`` file): the run then continues from those weights instead of
a random initialisation, with a fresh optimiser and its own schedule (a
second training phase, e.g. with a different share of undispersed curves).

A recipe may set ``"curve_weighting"``: ``"absolute"`` (the default) weights each
curve's tissue, smoothness and residue terms as in the paper's absolute units, so
that high flows dominate the loss; ``"equal"`` counts every curve alike (relative
errors; :data:`CURVE_WEIGHTINGS`, :func:`.loss.equal_residue_weights`).

A recipe with ``"stages"`` (a list of dicts, each overriding the recipe's own
fields, ``name`` naming the stage) trains the stages one after the other in
``OUT/stage1``, ``OUT/stage2`` ..., each stage after the first starting from
the previous stage's ``best.safetensors`` (a curriculum: e.g. the paper's
ranges first, then a share of exponential residues). ``OUT/best.safetensors``
and ``OUT/last.safetensors`` are then the last stage's, their card listing
every stage's. A stage that finished is marked by ``STAGE/finished.json`` and
skipped by ``--resume``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..io import append_table_row
from ..perfusion.constants import KAPPA_H, RHO
from ..perfusion.maps import cbf_from_residue as _cbf
from ..sims.simulate import TRAINING_RANGES, simulate_curves
from . import dataset
from . import checkpoint as checkpoints
from .checkpoint import CHECKPOINT_NAME, find_checkpoint, load_checkpoint
from .loss import LossWeights, curve_weights, equal_residue_weights, perfusion_loss
from .model import RESIDUE_SCALE, ModelConfig, PerfusionTransformer, normalise_tissue
from .weights import SHIPPED_WEIGHTS, load_model, read_metadata, save_weights

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
LOG_COLUMNS = (
    "step",
    "curves_seen",
    "elapsed_s",
    "learning_rate",
    "loss",
    "loss_bad",
    "loss_local_aif",
    "loss_tissue",
    "loss_smooth",
    "loss_residue",
    "val_loss",
    "val_cbf_rmse",
    "val_bad_rmse",
    "val_cbf_ratio",
    "val_local_aif_r",
    "ema_val_loss",
    "ema_val_cbf_rmse",
    "ema_val_bad_rmse",
    "ema_val_cbf_ratio",
    "ema_val_local_aif_r",
)


#: the fields a recipe file may set (a stage may set any of them but ``stages``); anything else is a typo
RECIPE_FIELDS = frozenset({
    "name", "description", "seed", "batch_size", "total_steps", "time_budget_minutes", "learning_rate",
    "warmup_fraction", "weight_decay", "grad_clip", "validation_every_steps", "checkpoint_every_minutes",
    "n_validation_curves", "validation_seed", "loss_weights", "model", "ranges", "ema_decay", "init_weights",
    "stages", "simulation_workers", "curve_weighting",
})

#: how a recipe's ``curve_weighting`` weights each curve in the tissue, smoothness and residue terms: ``absolute``
#: (the default) as in ``'aif_peak'`` units (:func:`.loss.curve_weights`, a curve of CBF 150 counts about 100 times
#: one of CBF 15), ``equal`` every curve alike in the network's units (relative errors: with
#: ``'tissue_amplitude'`` every curve reaches the network at one height)
CURVE_WEIGHTINGS = ("absolute", "equal")


def check_curve_weighting(curve_weighting, where=""):
    """Raise ValueError unless ``curve_weighting`` is one of :data:`CURVE_WEIGHTINGS` (``where``: e.g. the recipe)."""
    if curve_weighting not in CURVE_WEIGHTINGS:
        raise ValueError(f"Unknown curve_weighting {curve_weighting!r}{where}; choose from {CURVE_WEIGHTINGS}.")


def available_recipes():
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name_or_path):
    """A recipe by name (``cpu``, ``paper``) or path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = RECIPE_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise ValueError(
            f"Unknown recipe {name_or_path!r}: give one of {', '.join(available_recipes())} or a JSON file."
        )
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"Recipe {path} is not valid JSON: {error}.") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {path} must hold a JSON object of fields, got {type(recipe).__name__}.")
    stages = recipe.get("stages") or []
    for index, part in enumerate([recipe, *stages]):  # index 0: the recipe itself, then its stages
        unknown = sorted(set(part) - RECIPE_FIELDS) if isinstance(part, dict) else []
        if unknown:
            where = f" (stage {index})" if index else ""
            raise ValueError(f"Recipe {path}{where} has unknown field(s) {unknown}; a recipe may set "
                             f"{sorted(RECIPE_FIELDS)}.")
    for part in [recipe, *stages]:
        init_weights = part.get("init_weights") if isinstance(part, dict) else None
        if init_weights and init_weights != "shipped" and not Path(init_weights).is_absolute():
            part["init_weights"] = str((path.parent / init_weights).resolve())  # relative to the recipe file
    return recipe


# ----------------------------------------------------------------------------- data


@dataclass
class Batch:
    """One batch in the network's units (see :mod:`.model`), all on one time grid."""

    tissue: torch.Tensor  # (B, T) encoder input, model.normalise_tissue
    aif: torch.Tensor  # (B, T) global AIF / peak
    frame_times: torch.Tensor  # (T,) s, from 0
    dt: float
    local_aif: torch.Tensor  # (B, T) / peak
    residue: torch.Tensor  # (B, T) K / residue_unit (RESIDUE_SCALE * K with 'aif_peak')
    bad: torch.Tensor  # (B,) s
    residue_unit: torch.Tensor  # (B, 1) K [1/s] per unit of the residue head
    curve_weight: torch.Tensor  # (B, 1) loss.curve_weights: the loss in 'aif_peak' units

    def to(self, device):
        fields = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return Batch(**fields)

    def target(self, curve_weighting="absolute"):
        """The loss targets (:func:`.loss.perfusion_loss`), each curve weighted as ``curve_weighting`` says
        (:data:`CURVE_WEIGHTINGS`)."""
        target = {"tissue": self.tissue, "bad": self.bad, "local_aif": self.local_aif, "residue": self.residue,
                  "curve_weight": self.curve_weight}
        check_curve_weighting(curve_weighting)
        if curve_weighting == "equal":
            target.update(curve_weight=1.0, residue_weight=equal_residue_weights(self.residue))
        return target


def batch_from_simulation(sim, normalisation="aif_peak"):
    """Convert a :class:`~ctp_nipype.sims.simulate.SimulatedCurves` into a :class:`Batch`.

    ``normalisation`` is the network's ``ModelConfig.tissue_normalisation`` (see :mod:`.model`).
    """
    times = np.asarray(sim.frame_times, dtype=np.float64)
    aif = np.asarray(sim.global_aif, dtype=np.float64)
    peak = aif.max(axis=1, keepdims=True)
    if np.any(peak <= 0):
        raise ValueError("A simulated global AIF has no positive peak.")
    tissue, residue_unit = normalise_tissue(sim.tissue, peak, normalisation)

    def tensor(values):
        return torch.as_tensor(np.asarray(values, dtype=np.float32))

    return Batch(
        tissue=tensor(tissue),
        aif=tensor(aif / peak),
        frame_times=tensor(times - times[0]),
        dt=float(np.mean(np.diff(times))),
        local_aif=tensor(np.asarray(sim.local_aif) / peak),
        residue=tensor(np.asarray(sim.residue) / residue_unit),
        bad=tensor(sim.delay),
        residue_unit=tensor(residue_unit),
        curve_weight=tensor(curve_weights(residue_unit)),
    )


def simulation_ranges(recipe):
    """The simulator's ranges for a recipe: the paper's training ranges, with the recipe's ``ranges`` overrides.

    ``recipe["ranges"]`` (optional) maps fields of
    :class:`~ctp_nipype.sims.simulate.SimulationRanges` to new values, e.g.
    ``{"t_a_zero_fraction": 0.5}``; an unknown field is an error.
    """
    overrides = dict(recipe.get("ranges") or {})
    known = {item.name for item in fields(TRAINING_RANGES)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown simulation range(s) {unknown} in the recipe; known: {sorted(known)}.")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(TRAINING_RANGES, **overrides)


def simulate_batch(n_curves, seed, step, ranges=TRAINING_RANGES, normalisation="aif_peak", workers=1):
    """A training batch for ``step``, reproducible from ``(seed, step)`` (the same curves for any ``workers``,
    the simulator's threads: a recipe's ``simulation_workers``, for the large batches of a GPU)."""
    rng = np.random.default_rng([int(seed), int(step)])
    return batch_from_simulation(simulate_curves(n_curves, rng, ranges, workers=int(workers)), normalisation)


def validation_set(n_curves, seed, max_batch=512, ranges=TRAINING_RANGES, normalisation="aif_peak"):
    """The fixed-seed validation set as a list of :class:`Batch`: :func:`.dataset.validation_set`
    (chunks of ``max_batch`` curves, one random grid each, from a stream that the training
    batches never use), so the set is the same for every run and every resume."""
    return [
        batch_from_simulation(s, normalisation) for s in dataset.validation_set(n_curves, seed, max_batch, ranges)
    ]


# ----------------------------------------------------------------------------- metrics


def cbf_from_residue(residue_network_units, residue_unit=1.0 / RESIDUE_SCALE, kappa_h=KAPPA_H, rho=RHO):
    """CBF [ml/100 g/min] from the network's residue output (max over time).

    ``residue_unit`` (scalar or (B, 1)) is :func:`.model.normalise_tissue`'s: K in 1/s per unit of the output.
    """
    return _cbf(residue_network_units * residue_unit, kappa_h, rho)


def pearson_rows(a, b):
    """Pearson r of corresponding rows of two (B, T) tensors."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


@torch.no_grad()
def evaluate(model, batches, weights, device, min_cbf_for_ratio=10.0):
    """Validation loss and metrics over a list of batches.

    Returns a dict: ``val_loss``, ``val_cbf_rmse`` (ml/100 g/min),
    ``val_bad_rmse`` (s), ``val_cbf_ratio`` (mean estimated/true CBF over curves
    with true CBF >= ``min_cbf_for_ratio``), ``val_local_aif_r`` (mean Pearson r).
    """
    was_training = model.training
    model.eval()
    losses, cbf_err, bad_err, ratio, corr = [], [], [], [], []
    for batch in batches:
        batch = batch.to(device)
        out = model(batch.tissue, batch.aif, batch.frame_times)
        total, _ = perfusion_loss(out, batch.target(), batch.dt, weights)
        losses.append(float(total) * len(batch.bad))
        cbf_hat = cbf_from_residue(out["residue"].float(), batch.residue_unit)
        cbf_true = cbf_from_residue(batch.residue, batch.residue_unit)
        cbf_err.append((cbf_hat - cbf_true) ** 2)
        bad_err.append((out["bad"].float() - batch.bad) ** 2)
        keep = cbf_true >= min_cbf_for_ratio
        ratio.append(cbf_hat[keep] / cbf_true[keep])
        corr.append(pearson_rows(out["local_aif"].float(), batch.local_aif))
    model.train(was_training)
    n = sum(len(b.bad) for b in batches)
    return {
        "val_loss": sum(losses) / n,
        "val_cbf_rmse": float(torch.cat(cbf_err).mean().sqrt()),
        "val_bad_rmse": float(torch.cat(bad_err).mean().sqrt()),
        "val_cbf_ratio": float(torch.cat(ratio).mean()),
        "val_local_aif_r": float(torch.cat(corr).mean()),
    }


# ----------------------------------------------------------------------------- schedule and checkpoints


def _load_initial_weights(model, init_weights):
    """Start a run from trained weights (continued training); the architectures must agree.

    ``init_weights`` is ``"shipped"`` (the package's weights) or a ``.safetensors``
    file (a relative path in a recipe file is relative to that file's folder). Only the tissue
    normalisation may differ: the run keeps its recipe's.
    """
    path = SHIPPED_WEIGHTS if init_weights == "shipped" else Path(init_weights)
    source = load_model(path)
    # the tissue normalisation scales the inputs, not the parameters: weights trained with one may start a
    # run with the other (both present a grey-matter curve to the encoder at about the same height)
    architecture = {**source.config.to_dict(), "tissue_normalisation": model.config.tissue_normalisation}
    if architecture != model.config.to_dict():
        raise ValueError(
            f"init_weights {path} has the architecture {source.config.to_dict()}, the recipe asks for "
            f"{model.config.to_dict()}; make the recipe's \"model\" match the weights or drop init_weights."
        )
    model.load_state_dict(source.state_dict())


def learning_rate(progress, peak, warmup_fraction):
    """Linear warm-up to ``peak`` over ``warmup_fraction`` of training, then cosine decay to 0."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return peak * progress / warmup_fraction
    rest = (progress - warmup_fraction) / max(1e-12, 1 - warmup_fraction)
    return peak * 0.5 * (1 + math.cos(math.pi * rest))


def _moving_average(model, decay):
    """An exponential moving average of ``model``'s weights (``None`` when ``decay`` is not set).

    ``decay`` in (0, 1): each step the average moves ``1 - decay`` of the way to the current weights,
    so it spans about ``1 / (1 - decay)`` steps.
    """
    if decay is None:
        return None
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"ema_decay must lie strictly between 0 and 1 (e.g. 0.999), got {decay!r}.")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


def resolve_training_device(device="auto"):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def code_commit(path=None):
    """The git commit of the package checkout (``-dirty`` appended when it has uncommitted changes), or 'unknown'."""
    import subprocess

    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
            cwd=Path(__file__).resolve().parent if path is None else Path(path),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stage_recipes(recipe, time_budget_minutes=None):
    """The recipes of a staged recipe's stages, in order (``[recipe]`` for a recipe without stages).

    Each stage is the recipe without ``stages``, updated with the stage's own fields (a stage's
    ``ranges``, ``loss_weights`` or ``model`` replace the recipe's whole), named
    ``"<recipe>:<stage>"``. A stage's ``init_weights`` is left to :func:`train`, which sets it
    to the previous stage's best weights for every stage after the first.

    Parameters
    ----------
    recipe : dict
    time_budget_minutes : float, optional
        A new total time budget, shared out in proportion to the stages' own budgets.

    Examples
    --------
    >>> recipe = {"name": "r", "seed": 1, "time_budget_minutes": 10,
    ...           "stages": [{"name": "a"}, {"name": "b", "seed": 2, "time_budget_minutes": 5}]}
    >>> [(s["name"], s["seed"], s["time_budget_minutes"]) for s in stage_recipes(recipe)]
    [('r:a', 1, 10), ('r:b', 2, 5)]
    >>> [s["time_budget_minutes"] for s in stage_recipes(recipe, time_budget_minutes=30)]
    [20.0, 10.0]
    """
    stages = recipe.get("stages")
    if not stages:
        return [dict(recipe)]
    if not isinstance(stages, list) or not all(isinstance(stage, dict) for stage in stages):
        raise ValueError(f"Recipe {recipe.get('name')!r}: \"stages\" must be a list of objects (each a "
                         f"stage's fields), got {stages!r}.")
    base = {key: value for key, value in recipe.items() if key != "stages"}
    out = []
    for index, stage in enumerate(stages, start=1):
        if "stages" in stage:
            raise ValueError(f"Recipe {recipe.get('name')!r}: stage {index} has stages of its own; "
                             "stages do not nest.")
        if index > 1 and "init_weights" in stage:
            raise ValueError(f"Recipe {recipe.get('name')!r}: stage {index} sets init_weights, but every "
                             "stage after the first starts from the previous stage's best weights; drop it.")
        out.append({**base, **stage, "name": f"{recipe.get('name')}:{stage.get('name', f'stage{index}')}"})
    if time_budget_minutes is not None:
        if not time_budget_minutes > 0:
            raise ValueError(f"The time budget must be positive, got {time_budget_minutes} minutes.")
        budgets = [stage.get("time_budget_minutes") for stage in out]
        if not all(budgets):
            raise ValueError("A new time budget needs every stage of the recipe to have a time budget; "
                             f"the stages of {recipe.get('name')!r} have {budgets}.")
        scale = float(time_budget_minutes) / sum(budgets)
        for stage in out:
            stage["time_budget_minutes"] = stage["time_budget_minutes"] * scale
    return out


def _train_stages(recipe, out_dir, resume, time_budget_minutes, max_steps, **options):
    """Run a staged recipe (see the module docstring); returns the metrics of the last stage run.

    ``max_steps`` bounds the steps of all stages together; the run's top-level weights are written
    once the last stage has finished.
    """
    out_dir = Path(out_dir)
    stages = stage_recipes(recipe, time_budget_minutes)
    stage_dirs = [out_dir / f"stage{index}" for index in range(1, len(stages) + 1)]
    if not resume and any(d.exists() for d in stage_dirs):
        raise FileExistsError(f"{out_dir} already holds a staged run; pass --resume to continue it or choose "
                              "another --out.")
    if resume and not any(d.exists() for d in stage_dirs):
        raise FileNotFoundError(f"Cannot resume: {out_dir} holds no stage of a run "
                                f"({stage_dirs[0].name} ...).")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    results = []
    for index, (stage, stage_dir) in enumerate(zip(stages, stage_dirs)):
        finished = stage_dir / "finished.json"
        if finished.exists():
            results.append(json.loads(finished.read_text(encoding="utf-8")))
            continue
        steps_before = sum(r["step"] for r in results)
        if max_steps is not None and steps_before >= max_steps:
            break
        if index > 0:
            stage["init_weights"] = str((stage_dirs[index - 1] / "best.safetensors").resolve())
        stage_resume = find_checkpoint(stage_dir) is not None
        if not stage_resume and stage_dir.exists():  # killed before its first checkpoint: start it again
            shutil.rmtree(stage_dir)
        metrics = train(stage, stage_dir, resume=stage_resume,
                        max_steps=None if max_steps is None else max_steps - steps_before,
                        # a resumed stage keeps the budget it started with unless a new one is given
                        time_budget_minutes=stage.get("time_budget_minutes") if time_budget_minutes else None,
                        **options)
        results.append(metrics)
        if not metrics["finished"]:  # stopped at max_steps
            break
        finished.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if not results:  # max_steps of 0
        return {"step": 0, "elapsed_s": 0.0, "stages": 0}
    summary = {**results[-1], "step": sum(r["step"] for r in results),
               "elapsed_s": sum(r["elapsed_s"] for r in results), "stages": len(results)}
    if len(results) < len(stages) or not (stage_dirs[-1] / "finished.json").exists():
        return summary
    cards = [read_metadata(d / "best.safetensors").get("card", {}) for d in stage_dirs]
    for name in ("best", "last", "best_ema", "last_ema"):
        source = stage_dirs[-1] / f"{name}.safetensors"
        if name.endswith("_ema") and not source.exists():
            continue
        card = {**read_metadata(source).get("card", {}), "recipe": recipe["name"],
                "stage_recipe": stages[-1]["name"], "stages": cards}
        save_weights(load_model(source), out_dir / f"{name}.safetensors", card)
    return summary


def train(recipe, out_dir, resume=False, device="auto", threads=None, progress=True, max_steps=None,
          time_budget_minutes=None):
    """Train (or resume training) a network with a recipe.

    Parameters
    ----------
    recipe : str, Path or dict
        Recipe name, JSON file or the recipe itself.
    out_dir : str or Path
        Run directory (created). Refuses to overwrite an existing run unless ``resume``.
    resume : bool
        Continue from ``out_dir/checkpoint.safetensors``.
    device : str
        ``auto`` (CUDA with mixed precision when present), ``cpu`` or ``cuda``.
    threads : int, optional
        torch CPU threads (``torch.set_num_threads``).
    progress : bool
        Show a progress bar.
    max_steps : int, optional
        Stop after this step even if the recipe goes further (for tests); in a staged recipe,
        after this many steps of all stages together.
    time_budget_minutes : float, optional
        Replace the recipe's time budget (also when resuming; the learning-rate schedule then
        follows the new budget from the current step on). Recorded in the run's recipe. A
        staged recipe shares it out in proportion to its stages' budgets.

    Returns
    -------
    dict
        The last validation metrics, with ``step``, ``elapsed_s`` and ``finished`` (True when the run
        ended on its own terms, its steps or its time budget, rather than at ``max_steps``).
    """
    recipe = dict(recipe) if isinstance(recipe, dict) else load_recipe(recipe)
    if recipe.get("stages"):
        return _train_stages(recipe, out_dir, resume, time_budget_minutes, max_steps, device=device,
                             threads=threads, progress=progress)
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if out_dir.exists() and (out_dir / "log.tsv").exists() and not resume:
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out.")
    if resume and find_checkpoint(out_dir) is None:
        raise FileNotFoundError(f"Cannot resume: {checkpoint_path} does not exist.")
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_training_device(device)
    use_amp = device.type == "cuda"

    seed = int(recipe["seed"])
    torch.manual_seed(seed)
    model = PerfusionTransformer(ModelConfig.from_dict(recipe.get("model", {}))).to(device)
    if recipe.get("init_weights") and not resume:
        _load_initial_weights(model, recipe["init_weights"])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe.get("weight_decay", 0.0)
    )
    weights = LossWeights(**recipe["loss_weights"])
    state = {"step": 0, "elapsed_s": 0.0, "best_cbf_rmse": float("inf"), "best_ema_cbf_rmse": float("inf")}
    if resume:
        checkpoint = load_checkpoint(checkpoint_path, device)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state.update(checkpoint["state"])
        recipe = json.loads(checkpoint["recipe"])
    ema = _moving_average(model, recipe.get("ema_decay"))
    if ema is not None and resume:
        if "ema" not in checkpoint:
            raise ValueError(f"{checkpoint_path} holds no moving average of the weights, but its recipe sets "
                             "ema_decay; it was written by an older ctp-train, so resume it with that version.")
        ema.load_state_dict(checkpoint["ema"])
    else:
        (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")

    if time_budget_minutes is not None:
        if not time_budget_minutes > 0:
            raise ValueError(f"The time budget must be positive, got {time_budget_minutes} minutes.")
        recipe["time_budget_minutes"] = float(time_budget_minutes)
        (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")

    ranges = simulation_ranges(recipe)
    normalisation = model.config.tissue_normalisation
    curve_weighting = recipe.get("curve_weighting", "absolute")
    check_curve_weighting(curve_weighting, f" in recipe {recipe['name']!r}")  # before any work starts
    validation = validation_set(int(recipe["n_validation_curves"]), int(recipe["validation_seed"]), ranges=ranges,
                                normalisation=normalisation)
    total_steps = int(recipe["total_steps"])
    budget_s = 60.0 * recipe["time_budget_minutes"] if recipe.get("time_budget_minutes") else None
    last_step = total_steps if max_steps is None else min(total_steps, int(max_steps))
    card = {
        "recipe": recipe["name"],
        **({"init_weights": str(recipe["init_weights"])} if recipe.get("init_weights") else {}),
        "seed": seed,
        "code_commit": code_commit(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

    def progress_fraction():
        fraction = state["step"] / total_steps
        if budget_s:
            fraction = max(fraction, state["elapsed_s"] / budget_s)
        return fraction

    def save_checkpoint():
        checkpoints.save_checkpoint(checkpoint_path, model.state_dict(), optimizer.state_dict(), state,
                                    json.dumps(recipe),
                                    None if ema is None else ema.state_dict())

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=last_step, initial=state["step"], desc=f"ctp-train {recipe['name']}", unit="step")
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    started = time.monotonic() - state["elapsed_s"]
    last_checkpoint = time.monotonic()
    metrics = {}
    model.train()
    while state["step"] < last_step and progress_fraction() < 1.0:
        lr = learning_rate(progress_fraction(), recipe["learning_rate"], recipe["warmup_fraction"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = simulate_batch(int(recipe["batch_size"]), seed, state["step"], ranges, normalisation,
                               recipe.get("simulation_workers", 1)).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            out = model(batch.tissue, batch.aif, batch.frame_times)
        out = {k: v.float() for k, v in out.items()}
        loss, terms = perfusion_loss(out, batch.target(curve_weighting), batch.dt, weights)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if recipe.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        state["step"] += 1
        state["elapsed_s"] = time.monotonic() - started
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.4g}", lr=f"{lr:.2g}")

        done = state["step"] >= last_step or progress_fraction() >= 1.0
        validate = state["step"] % int(recipe["validation_every_steps"]) == 0 or done
        row = None
        if state["step"] % 25 == 0 or validate:
            row = {
                "step": state["step"],
                "curves_seen": state["step"] * int(recipe["batch_size"]),
                "elapsed_s": round(state["elapsed_s"], 1),
                "learning_rate": lr,
                "loss": float(loss.detach()),
                **{f"loss_{k}": v for k, v in terms.items()},
            }
        if validate:
            metrics = evaluate(model, validation, weights, device)
            row.update(metrics)
            if metrics["val_cbf_rmse"] < state["best_cbf_rmse"]:
                state["best_cbf_rmse"] = metrics["val_cbf_rmse"]
                save_weights(model, out_dir / "best.safetensors", {**card, **metrics, "step": state["step"],
                                                                   "training_minutes": state["elapsed_s"] / 60})
            if ema is not None:
                ema_metrics = evaluate(ema.module, validation, weights, device)
                row.update({f"ema_{key}": value for key, value in ema_metrics.items()})
                if ema_metrics["val_cbf_rmse"] < state["best_ema_cbf_rmse"]:
                    state["best_ema_cbf_rmse"] = ema_metrics["val_cbf_rmse"]
                    save_weights(ema.module, out_dir / "best_ema.safetensors",
                                 {**card, **ema_metrics, "ema_decay": recipe["ema_decay"], "step": state["step"],
                                  "training_minutes": state["elapsed_s"] / 60})
            if bar is not None:
                bar.write(
                    f"step {state['step']}: val CBF RMSE {metrics['val_cbf_rmse']:.2f}, "
                    f"BAD RMSE {metrics['val_bad_rmse']:.2f} s, CBF ratio {metrics['val_cbf_ratio']:.3f}, "
                    f"local-AIF r {metrics['val_local_aif_r']:.3f}"
                )
        if row is not None:
            append_table_row(out_dir / "log.tsv", row, LOG_COLUMNS)
        if done or time.monotonic() - last_checkpoint > 60 * recipe["checkpoint_every_minutes"]:
            save_checkpoint()
            save_weights(model, out_dir / "last.safetensors", {**card, "step": state["step"],
                                                               "training_minutes": state["elapsed_s"] / 60})
            if ema is not None:
                save_weights(ema.module, out_dir / "last_ema.safetensors",
                             {**card, "ema_decay": recipe["ema_decay"], "step": state["step"],
                              "training_minutes": state["elapsed_s"] / 60})
            last_checkpoint = time.monotonic()
    if bar is not None:
        bar.close()
    save_checkpoint()
    return {**metrics, "step": state["step"], "elapsed_s": state["elapsed_s"],
            "finished": progress_fraction() >= 1.0}
