"""The training loss of Zeng et al. (2025), eq. 2, on the network's normalised units.

``L = w_bad * MSE(BAD) + w_aif * MSE(local AIF) + w_tissue * MSE(reconstructed tissue)
+ w_smooth * mean((d^2 K / dt^2)^2)`` (+ an optional supervised residue term
``w_residue * MSE(K)``, off in the paper's recipe).

Units: BAD in seconds; local AIF in units of the global AIF's peak; tissue and
``K`` in the network's units of :func:`.model.normalise_tissue` (with
``'aif_peak'``: ``TISSUE_GAIN * C / peak`` and ``1 / RESIDUE_SCALE`` per second), ``K``'s
second derivative by finite differences divided by ``dt**2``. The weights are
chosen per recipe (``ctp_nipype/nn/recipes/*.json``) so that the weighted terms
contribute about 1:1:7:1 (the paper's ratio); :func:`perfusion_loss` returns
every weighted term so that the training log shows the ratio actually reached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .model import RESIDUE_SCALE, TISSUE_GAIN, trapezoid_convolve


@dataclass
class LossWeights:
    """Weights of the loss terms (eq. 2's 1, lambda_1, lambda_2, lambda_3, and the optional residue)."""

    bad: float = 1.0
    local_aif: float = 1.0
    tissue: float = 1.0
    smooth: float = 1.0
    residue: float = 0.0

    def to_dict(self):
        return asdict(self)


def reconstruct_tissue(local_aif, residue, dt):
    """Tissue curve in the encoder's units from the network's local AIF and residue outputs.

    ``g * C = TISSUE_GAIN / RESIDUE_SCALE * (local_aif (x) residue)``, ``g`` the encoder's gain
    (:func:`.model.normalise_tissue`).
    """
    return (TISSUE_GAIN / RESIDUE_SCALE) * trapezoid_convolve(local_aif, residue, dt)


def curve_weights(residue_unit):
    """Per-curve loss weights that give the tissue, smoothness and residue terms in ``'aif_peak'`` units.

    With ``'tissue_amplitude'`` every curve reaches the network at one height, so an unweighted mean
    squared error would count a curve of CBF 5 as much as one of CBF 150; weighting each curve by
    ``(RESIDUE_SCALE * residue_unit)**2`` (``(a / (s * REFERENCE_TISSUE_AMPLITUDE))**2``) gives back
    the loss of the paper's absolute units, curve for curve. With ``'aif_peak'`` the weights are 1.

    Parameters
    ----------
    residue_unit : ndarray or Tensor, shape (B, 1)
        :func:`.model.normalise_tissue`'s second output.
    """
    return (RESIDUE_SCALE * residue_unit) ** 2


#: the height of the true residue (network units) above which :func:`equal_residue_weights` weights a curve down
#: (with ``'tissue_amplitude'``, 99% of 1,280 curves drawn from the ``long`` recipe's ranges
#: lay below 2.15, the largest at 2.77)
EQUAL_RESIDUE_HEIGHT = 2.0


def equal_residue_weights(residue_target):
    """Residue-term weights when every curve counts alike: 1, or ``(EQUAL_RESIDUE_HEIGHT / height)**2`` above it.

    With ``'tissue_amplitude'`` a curve whose bolus the window barely holds reaches the network at the
    usual height while its true residue (the flow) is tens of times higher: it cannot be learnt from the
    curve, and with weight 1 one such curve outweighed its whole batch (a residue term of 3,962 where it is
    usually 0.1-1.3, 2026-12-07). Weighted down so, its error counts as a relative one.

    >>> equal_residue_weights(torch.tensor([[0.5, 1.0], [8.0, 2.0]])).flatten().tolist()
    [1.0, 0.0625]
    """
    height = residue_target.amax(dim=-1, keepdim=True)
    return (EQUAL_RESIDUE_HEIGHT / height.clamp_min(EQUAL_RESIDUE_HEIGHT)) ** 2


def second_derivative(curves, dt):
    """``d^2 / dt^2`` by central differences, (B, T) -> (B, T - 2); ``dt`` scalar or (B,)."""
    diff = curves[..., 2:] - 2 * curves[..., 1:-1] + curves[..., :-2]
    if torch.is_tensor(dt) and dt.dim() > 0:
        dt = dt.reshape(-1, 1)
    return diff / dt**2


def _masked_mean(values, valid):
    if valid is None:
        return values.mean()
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1)


def perfusion_loss(output, target, dt, weights: LossWeights, valid=None):
    """Weighted loss terms for one batch.

    Parameters
    ----------
    output : dict of Tensor
        The network's output (``local_aif``, ``residue``, ``bad``).
    target : dict of Tensor
        ``tissue`` (B, T) in encoder units (the noisy input, as in the paper),
        ``bad`` (B,) s; optionally ``local_aif`` (B, T) in AIF-peak units and
        ``residue`` (B, T) in network units. Missing targets drop their term
        (fine-tuning has no labels). Optionally ``curve_weight`` (B, 1): each
        curve's weight in the tissue, smoothness and residue terms, which
        :func:`curve_weights` sets so that these terms are those of
        ``'aif_peak'`` units whatever the normalisation. Optionally ``residue_weight`` (B, 1): each curve's
        weight in the residue term instead (:func:`equal_residue_weights`).
    dt : float or Tensor (B,)
        Frame interval in seconds.
    weights : LossWeights
    valid : Tensor of bool (B, T), optional

    Returns
    -------
    total : Tensor (scalar)
    terms : dict of float
        Each weighted term (for the log).
    """
    terms = {}
    curve_weight = target.get("curve_weight", 1.0)
    reconstructed = reconstruct_tissue(output["local_aif"], output["residue"], dt)
    terms["tissue"] = weights.tissue * _masked_mean(curve_weight * (reconstructed - target["tissue"]) ** 2, valid)
    curvature = curve_weight * second_derivative(output["residue"], dt) ** 2
    terms["smooth"] = weights.smooth * _masked_mean(curvature, None if valid is None else valid[..., 2:])
    if "bad" in target and weights.bad:
        terms["bad"] = weights.bad * ((output["bad"] - target["bad"]) ** 2).mean()
    if "local_aif" in target and weights.local_aif:
        terms["local_aif"] = weights.local_aif * _masked_mean((output["local_aif"] - target["local_aif"]) ** 2, valid)
    if "residue" in target and weights.residue:
        residue_weight = target.get("residue_weight", curve_weight)
        terms["residue"] = weights.residue * _masked_mean(
            residue_weight * (output["residue"] - target["residue"]) ** 2, valid
        )
    total = sum(terms.values())
    return total, {name: float(value.detach()) for name, value in terms.items()}
