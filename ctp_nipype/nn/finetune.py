"""Unlabelled fine-tuning on a user's own scans (the paper's second phase; ``ctp-finetune``).

Every weight is frozen except the residue head; the loss is the tissue-curve
reconstruction (local AIF (x) residue against the measured curve) plus the
smoothness of the residue (the third and fourth terms of eq. 2), so no
labels are needed. Voxels are drawn at random from the scans' masks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .loss import LossWeights, curve_weights, perfusion_loss
from .model import normalise_tissue

#: fine-tuning keeps only the unsupervised terms of eq. 2 (reconstruction 7 : smoothness 1 as in training)
FINETUNE_WEIGHTS = LossWeights(bad=0.0, local_aif=0.0, tissue=14.0, smooth=300.0, residue=0.0)


@dataclass
class ScanCurves:
    """The curves of one scan ready for the network: concentration on a uniform grid.

    Attributes
    ----------
    aif : ndarray, shape (T,)
        Global arterial concentration (HU above baseline).
    tissue : ndarray, shape (n, T)
        Tissue concentration of the masked voxels.
    frame_times : ndarray, shape (T,)
        Uniform frame times in seconds.
    name : str
    """

    aif: np.ndarray
    tissue: np.ndarray
    frame_times: np.ndarray
    name: str = "scan"


#: The AIF column read by default: the partial-volume corrected AIF of the pipeline's
#: ``_desc-global_aif.tsv`` (the one the maps are computed with), else a user file's ``aif``.
DEFAULT_AIF_COLUMNS = ("aif_corrected", "aif")


def load_scan_curves(in_file, aif_file, mask_file=None, frame_interval=None, max_voxels=None, seed=0,
                     aif_column=DEFAULT_AIF_COLUMNS, allow_long_frames=False):
    """Read a CTP scan, its global AIF TSV and mask into :class:`ScanCurves` (resampled, baseline removed).

    ``max_voxels`` keeps a random subset of the masked voxels (memory). ``aif_column`` names the AIF's
    column, or several of which the first present is read (default: ``aif_corrected``, else ``aif``), so
    that fine-tuning sees the same AIF as inference (``TransformerPerfusion`` in the workflows reads the
    corrected one). ``allow_long_frames`` lifts the timing limits of :func:`ctp_nipype.io.load_ctp`.
    """
    from ..io import load_ctp, load_mask, output_prefix, read_curve_tsv
    from ..perfusion.prepare import prepare_curves

    scan = load_ctp(in_file, frame_interval=frame_interval, allow_long_frames=allow_long_frames)
    aif_hu, _ = read_curve_tsv(aif_file, aif_column, n_frames=scan.data.shape[3], check_units=True,
                               allow_long_frames=allow_long_frames)
    mask = load_mask(mask_file, scan.spatial_shape, scan.affine) if mask_file else np.ones(scan.spatial_shape, bool)
    curves = prepare_curves(scan.data, scan.frame_times, aif_hu)
    tissue = curves.tissue[mask]
    if max_voxels and tissue.shape[0] > max_voxels:
        keep = np.sort(np.random.default_rng(seed).choice(tissue.shape[0], max_voxels, replace=False))
        tissue = tissue[keep]
    return ScanCurves(curves.aif, tissue, curves.frame_times, output_prefix(in_file))


def freeze_all_but_residue_head(model):
    """Set ``requires_grad`` so that only the residue head trains; returns its parameters."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = list(model.residue_head.parameters())
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def _scan_batch(scan, index, normalisation):
    """The network's inputs for some voxels of a scan, and the loss's target (tissue and curve weights)."""
    times = np.asarray(scan.frame_times, np.float64)
    peak = float(np.max(scan.aif))
    if not peak > 0:
        raise ValueError(f"The global AIF of {scan.name} has no positive peak; check the AIF file.")
    tissue, residue_unit = normalise_tissue(scan.tissue[index], peak, normalisation)
    tissue = torch.as_tensor(tissue)
    target = {"tissue": tissue, "curve_weight": torch.as_tensor(curve_weights(residue_unit), dtype=torch.float32)}
    return (
        tissue,
        torch.as_tensor(np.asarray(scan.aif, np.float32) / peak),
        torch.as_tensor((times - times[0]).astype(np.float32)),
        float(np.mean(np.diff(times))),
        target,
    )


def reconstruction_loss(model, scans, n_voxels=512, seed=0, weights=FINETUNE_WEIGHTS):
    """The fine-tuning loss on a fixed random subset of each scan's voxels (for reporting)."""
    rng = np.random.default_rng(seed)
    total, count = 0.0, 0
    with torch.no_grad():
        for scan in scans:
            index = rng.choice(scan.tissue.shape[0], min(n_voxels, scan.tissue.shape[0]), replace=False)
            tissue, aif, times, dt, target = _scan_batch(scan, index, model.config.tissue_normalisation)
            out = model(tissue, aif, times)
            loss, _ = perfusion_loss(out, target, dt, weights)
            total += float(loss) * index.size
            count += index.size
    return total / max(count, 1)


def finetune(model, scans, steps=200, batch_size=128, learning_rate=1e-4, seed=0, weights=FINETUNE_WEIGHTS,
             progress=False):
    """Fine-tune ``model`` in place on unlabelled scans.

    Parameters
    ----------
    model : PerfusionTransformer
    scans : list of ScanCurves
    steps : int
        Optimiser steps; each draws ``batch_size`` voxels of one scan (scans in turn).
    batch_size : int
    learning_rate : float
        Adam learning rate of the residue head.
    seed : int
    weights : LossWeights
        Only ``tissue`` and ``smooth`` are used (no labels).
    progress : bool

    Returns
    -------
    dict
        ``loss_before``, ``loss_after`` (on a fixed voxel subset), ``steps``,
        ``seconds``, ``trainable_parameters``.
    """
    if not scans:
        raise ValueError("Fine-tuning needs at least one scan.")
    for scan in scans:
        if scan.tissue.ndim != 2 or scan.tissue.shape[0] == 0:
            raise ValueError(f"{scan.name}: no voxels to fine-tune on (is the mask empty?).")
    model.eval()  # no dropout; only the residue head's weights change
    before = reconstruction_loss(model, scans, seed=seed, weights=weights)
    trainable = freeze_all_but_residue_head(model)
    optimizer = torch.optim.Adam(trainable, lr=learning_rate)
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    iterator = range(int(steps))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="ctp-finetune", unit="step")
    for step in iterator:
        scan = scans[step % len(scans)]
        index = rng.choice(scan.tissue.shape[0], min(batch_size, scan.tissue.shape[0]), replace=False)
        tissue, aif, times, dt, target = _scan_batch(scan, index, model.config.tissue_normalisation)
        out = model(tissue, aif, times)
        loss, _ = perfusion_loss(out, target, dt, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    after = reconstruction_loss(model, scans, seed=seed, weights=weights)
    return {
        "loss_before": before,
        "loss_after": after,
        "steps": int(steps),
        "seconds": time.monotonic() - started,
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
    }


def finetuned_card(base_card, result, scans, settings):
    """The weights' card after fine-tuning: the base card plus a ``finetune`` record."""
    card = dict(base_card or {})
    card["finetune"] = {
        **settings,
        **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()},
        "scans": [scan.name for scan in scans],
        "voxels": [int(scan.tissue.shape[0]) for scan in scans],
        "frozen": "all but the residue head",
        "loss": "tissue reconstruction + residue smoothness (eq. 2, third and fourth terms)",
    }
    return card


def card_markdown(card):
    """A short model card in Markdown for fine-tuned weights."""
    tune = card.get("finetune", {})
    lines = [
        "# Perfusion Transformer: fine-tuned weights",
        "",
        f"Base weights: recipe `{card.get('recipe', '?')}`, seed {card.get('seed', '?')}, "
        f"code {card.get('code_commit', '?')}, step {card.get('step', '?')}.",
        "",
        "## Fine-tuning (unlabelled, ctp-finetune)",
        "",
        f"- Scans: {', '.join(tune.get('scans', []))} ({sum(tune.get('voxels', []))} voxels)",
        f"- Trainable: {tune.get('frozen', '')} ({tune.get('trainable_parameters', '?')} parameters)",
        f"- Loss: {tune.get('loss', '')}",
        f"- Steps {tune.get('steps')}, batch {tune.get('batch_size')}, learning rate {tune.get('learning_rate')}, "
        f"seed {tune.get('seed')}, {tune.get('seconds', 0):.0f} s",
        f"- Loss on a fixed voxel subset: {tune.get('loss_before', float('nan')):.4g} before, "
        f"{tune.get('loss_after', float('nan')):.4g} after",
        "",
        "Fine-tuning adapts the residue head to the scanner's noise and curve shapes; it cannot be checked "
        "against truth on unlabelled data. Check the maps (CBF, MTT) for plausibility before use.",
        "",
    ]
    return "\n".join(lines)
