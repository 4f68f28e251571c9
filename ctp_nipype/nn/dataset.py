"""Simulated training and validation data for the perfusion Transformer, streamed.

:class:`SimulatedCurveStream` is a torch ``IterableDataset`` over
:func:`ctp_nipype.sims.simulate.simulate_curves`: it never holds more
than one simulated block in memory, and every batch it yields shares one
frame grid (one frame interval and one number of frames, drawn per block from
the ranges: bucketing), so batches need no padding. Use it with
``DataLoader(stream, batch_size=None, num_workers=k)``: each worker draws its
own stream, seeded from ``(seed, epoch, worker id)``, so that workers never
repeat each other and a run is reproducible for a given number of workers.

:func:`validation_set` builds the fixed-seed validation set (a list of
:class:`~ctp_nipype.sims.simulate.SimulatedCurves`, one grid each) and
:func:`to_tensors` turns a simulated batch into float32 tensors.

This module holds no model code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..sims.simulate import AIF_TYPES, TRAINING_RANGES, SimulatedCurves, simulate_curves

#: The curve arrays of a batch, shape (n, T).
CURVE_KEYS = ("global_aif", "local_aif", "tissue", "tissue_clean", "residue")
#: The per-curve truths of a batch, shape (n,).
TRUTH_KEYS = ("cbf", "cbv", "mtt", "alpha", "delay", "t_a", "snr_db", "noise_sigma")
#: Distinguishes the validation stream from the training streams of the same seed.
_VALIDATION_STREAM = 1
_TRAINING_STREAM = 0


def to_tensors(sim):
    """A :class:`SimulatedCurves` as a dict of float32 tensors (same names, units of the simulator).

    Keys: ``frame_times`` (T,) in s; the curves of :data:`CURVE_KEYS` (n, T)
    in HU (``residue`` in 1/s); the truths of :data:`TRUTH_KEYS` (n,);
    ``bad`` (n,), the delay in s under the network's name; ``aif_type`` (n,)
    int64 codes into :data:`~ctp_nipype.sims.simulate.AIF_TYPES`.

    Examples
    --------
    >>> batch = to_tensors(simulate_curves(4, 0, frame_interval=1.0, n_frames=50))
    >>> batch["tissue"].shape, batch["tissue"].dtype, batch["frame_times"].shape
    (torch.Size([4, 50]), torch.float32, torch.Size([50]))
    """
    out = {"frame_times": torch.as_tensor(np.asarray(sim.frame_times, dtype=np.float32))}
    for key in CURVE_KEYS + TRUTH_KEYS:
        out[key] = torch.as_tensor(np.asarray(getattr(sim, key), dtype=np.float32))
    out["bad"] = out["delay"]
    codes = np.argmax(np.asarray(sim.aif_type)[:, None] == np.asarray(AIF_TYPES)[None, :], axis=1)
    out["aif_type"] = torch.as_tensor(codes, dtype=torch.int64)
    return out


class SimulatedCurveStream(IterableDataset):
    """Endless (or ``n_batches`` long) stream of simulated batches, one frame grid per batch.

    Parameters
    ----------
    batch_size : int
        Curves per yielded batch.
    seed : int
        Base seed; worker ``w`` in epoch ``e`` draws from ``SeedSequence([seed, 0, e, w])``.
    ranges : SimulationRanges
        Parameter ranges (default the paper's training ranges).
    batches_per_grid : int
        Batches cut from one simulated block (all on the same grid). Larger
        blocks simulate faster per curve (shared AIF spectra) but vary the
        grid less often; the block holds ``batch_size * batches_per_grid`` curves.
    n_batches : int, optional
        Total batches per epoch over all workers; ``None`` for an endless stream.
    as_tensors : bool
        Yield dicts of float32 tensors (:func:`to_tensors`); ``False`` yields
        :class:`SimulatedCurves`.
    simulate_kwargs : dict, optional
        Extra keyword arguments of :func:`simulate_curves` (for example
        ``frame_interval`` or ``snr_db``).

    Examples
    --------
    >>> stream = SimulatedCurveStream(batch_size=8, seed=1, n_batches=2)
    >>> [tuple(b["tissue"].shape)[0] for b in stream]
    [8, 8]
    """

    def __init__(
        self,
        batch_size=1024,
        seed=0,
        ranges=TRAINING_RANGES,
        batches_per_grid=1,
        n_batches=None,
        as_tensors=True,
        simulate_kwargs=None,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("batches_per_grid", batches_per_grid)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if n_batches is not None and (int(n_batches) != n_batches or n_batches < 0):
            raise ValueError(f"n_batches must be a non-negative integer or None, got {n_batches!r}.")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.ranges = ranges
        self.batches_per_grid = int(batches_per_grid)
        self.n_batches = None if n_batches is None else int(n_batches)
        self.as_tensors = bool(as_tensors)
        self.simulate_kwargs = dict(simulate_kwargs or {})
        self.epoch = 0

    def set_epoch(self, epoch):
        """Draw a different (still reproducible) stream in each epoch."""
        self.epoch = int(epoch)

    def __len__(self):
        if self.n_batches is None:
            raise TypeError("An endless SimulatedCurveStream has no length; give n_batches.")
        return self.n_batches

    def _worker_share(self):
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.n_batches is None:
            return worker, None
        return worker, len(range(worker, self.n_batches, n_workers))

    def __iter__(self):
        worker, share = self._worker_share()
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _TRAINING_STREAM, self.epoch, worker]))
        produced = 0
        while share is None or produced < share:
            block = self.batches_per_grid if share is None else min(self.batches_per_grid, share - produced)
            sim = simulate_curves(self.batch_size * block, rng, self.ranges, **self.simulate_kwargs)
            for k in range(block):
                batch = sim.select(slice(k * self.batch_size, (k + 1) * self.batch_size))
                yield to_tensors(batch) if self.as_tensors else batch
            produced += block


def validation_set(n_curves, seed, batch_size=1024, ranges=TRAINING_RANGES, **simulate_kwargs):
    """The fixed-seed validation set: a list of :class:`SimulatedCurves`, one grid each.

    ``n_curves`` curves in ``ceil(n_curves / batch_size)`` batches, each on
    its own grid drawn from ``ranges``; the same ``seed`` always gives the
    same set, and it is drawn from a stream that the training streams of the
    same seed never use.

    Examples
    --------
    >>> sets = validation_set(10, seed=3, batch_size=4)
    >>> [s.n_curves for s in sets]
    [4, 4, 2]
    >>> bool(np.array_equal(sets[0].tissue, validation_set(10, seed=3, batch_size=4)[0].tissue))
    True
    """
    if int(n_curves) != n_curves or n_curves < 1:
        raise ValueError(f"n_curves must be a positive integer, got {n_curves!r}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _VALIDATION_STREAM]))
    sizes = [min(batch_size, n_curves - start) for start in range(0, int(n_curves), int(batch_size))]
    return [simulate_curves(size, rng, ranges, **simulate_kwargs) for size in sizes]


def n_batches_for(n_curves, batch_size):
    """Batches needed to cover ``n_curves`` (the paper's 500,000 curves at 1,024 per batch: 489).

    >>> n_batches_for(500_000, 1024)
    489
    """
    return math.ceil(int(n_curves) / int(batch_size))


__all__ = [
    "CURVE_KEYS",
    "TRUTH_KEYS",
    "SimulatedCurveStream",
    "SimulatedCurves",
    "n_batches_for",
    "to_tensors",
    "validation_set",
]
