"""Per-voxel inference with the perfusion Transformer: numpy in, numpy out.

:func:`estimate_curves` is the library entry that the Nipype interface and
``ctp-evaluate`` call. It normalises the inputs (see :mod:`.model`), runs the
network over batches of voxels under :func:`torch.inference_mode` (mixed
precision on CUDA), reuses the decoder's AIF part for every batch (the global
AIF is the same for all voxels of a scan) and maps the outputs back to the
units of the conventions:

* ``cbf`` [ml/100 g/min] = ``6000 * kappa_H / rho * max(K)``;
* ``cbv`` [ml/100 g] = ``100 * kappa_H / rho * integral(C) / integral(Ca)``, the areas
  (trapezoidal rule) of the tissue curve and of the global AIF given (the partial-volume
  corrected one in the workflow): the conventions' CBV, by the code of the SVD family;
* ``mtt`` [s] = ``60 * CBV / CBF`` (0 where either is not positive);
* ``bad`` [s], the network's bolus arrival delay;
* ``local_aif`` (n, T) in the units of the input AIF; ``residue`` (n, T) = K in 1/s.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..perfusion.constants import KAPPA_H, RHO
from ..perfusion.convolution import convolve
from ..perfusion.evaluation import register_method
from ..perfusion.maps import curve_area, perfusion_maps
from ..perfusion.timing import check_frame_times, is_uniform
from .fused import FusedInference
from .model import normalise_tissue
from .weights import load_model

#: voxels per batch for 60 frames on the GPU; scaled by (60 / T)^2 (attention memory grows as T^2), at least 64
GPU_BATCH_AT_60_FRAMES = 32768
#: frames (voxels x frames) per batch on the CPU: 16 voxels of 60 frames, so that a layer's tensors (at most
#: 960 x 208 float32, 0.8 MiB) stay in a core's L2 cache; the fused path's scores are cut into blocks of their
#: own (:data:`ctp_nipype.nn.fused.SCORE_BLOCK_ELEMENTS`). Single-thread rounds of the fused path on
#: 512 voxels (2026-12-07, load average 4.8): 1,100, 1,256 and 1,185 voxels/s in batches of 8, 16 and 32.
CPU_FRAMES_PER_BATCH = 960


def resolve_device(device="auto"):
    """``'auto'`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU; use device='cpu' or 'auto'.")
    return device


def default_batch_size(n_frames, device):
    """Voxels per forward pass: :data:`CPU_FRAMES_PER_BATCH` frames on the CPU, :data:`GPU_BATCH_AT_60_FRAMES`
    scaled to the frame count on a GPU."""
    if torch.device(device).type != "cuda":
        return max(1, CPU_FRAMES_PER_BATCH // max(int(n_frames), 1))
    return max(64, int(GPU_BATCH_AT_60_FRAMES * min(1.0, (60.0 / n_frames) ** 2)))


def check_inputs(global_aif, tissue, frame_times):
    """Validate shapes and timing.

    Returns float arrays ``aif`` ((T,) or (n, T)), ``tissue`` (n, T), ``times``,
    the frame interval in seconds and the AIF peak(s) (scalar or (n, 1)).
    """
    aif = np.asarray(global_aif, dtype=np.float64)
    tissue = np.asarray(tissue)
    if aif.ndim not in (1, 2):
        raise ValueError(f"The global AIF must be one curve (T,) or one per tissue curve (n, T), got {aif.shape}.")
    n_frames = aif.shape[-1]
    if tissue.ndim != 2 or tissue.shape[1] != n_frames:
        raise ValueError(
            f"The tissue curves must have shape (n_voxels, {n_frames}) to match the AIF, got {tissue.shape}."
        )
    if aif.ndim == 2 and aif.shape[0] != tissue.shape[0]:
        raise ValueError(f"{aif.shape[0]} AIFs were given for {tissue.shape[0]} tissue curves; give one or one each.")
    times = check_frame_times(frame_times, n_frames)
    if not is_uniform(times):
        raise ValueError(
            "The network needs uniformly spaced frames; resample the series first "
            "(ctp_nipype.perfusion.timing.resample_to_uniform)."
        )
    if not np.all(np.isfinite(aif)) or not np.all(np.isfinite(tissue)):
        raise ValueError("The AIF or the tissue curves contain NaN or infinite values.")
    peak = aif.max(axis=-1, keepdims=aif.ndim == 2)
    if not np.all(peak > 0):
        raise ValueError("The global AIF has no positive peak: pass a baseline-subtracted concentration curve.")
    return aif, tissue, times, float(np.mean(np.diff(times))), peak


#: the smallest batch tried before a device is given up as out of memory
MIN_BATCH = 64


def is_out_of_memory(err):
    """Whether an exception means the device ran out of memory (a CUDA or a CPU allocation)."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_batches(step, n, batch_size, device, cpu_batch_size=None, min_batch=MIN_BATCH):
    """Call ``step(start, stop, device)`` over ``range(n)`` batch by batch, shrinking batches when memory runs out.

    A batch that runs out of memory is retried with half as many voxels (a
    warning says so), down to ``min_batch``; a CUDA device that still runs
    out hands the remaining batches to the CPU (``cpu_batch_size`` voxels
    each, with a warning). On the CPU, running out at ``min_batch`` re-raises.

    Returns
    -------
    torch.device
        The device of the last batch.
    """
    device = torch.device(device)
    start = 0
    while start < n:
        stop = min(start + batch_size, n)
        try:
            step(start, stop, device)
            start = stop
            continue
        except Exception as err:  # noqa: BLE001 - only memory errors are handled, the rest re-raised
            if not is_out_of_memory(err):
                raise
            if stop - start <= min_batch and device.type == "cpu":
                raise
        # out of the except block: the error's traceback no longer holds the failed batch's tensors
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if stop - start > min_batch:
            batch_size = max(min_batch, (stop - start) // 2)
            warnings.warn(
                f"{device.type.upper()} out of memory with {stop - start} voxels per batch; "
                f"retrying with batches of {batch_size}.",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            device = torch.device("cpu")
            batch_size = cpu_batch_size or batch_size
            warnings.warn(
                f"GPU out of memory even with {stop - start} voxels per batch; running the remaining "
                f"{n - start} voxels on the CPU (slower).",
                RuntimeWarning,
                stacklevel=2,
            )
    return device


def run_network(
    model, aif_normalised, tissue_normalised, frame_times, device, batch_size=None, progress=False, fused=True
):
    """Network outputs for all voxels (normalised units), batch by batch.

    ``aif_normalised`` is one curve (T,), whose decoder part is computed once
    per device and shared by all batches, or one curve per voxel (n, T).
    When the device runs out of memory the batches shrink, and on a GPU
    finally move to the CPU (:func:`run_batches`); the model is then moved to
    the CPU too.

    On the CPU, with torch using several threads and more than one batch to
    run, the voxels are shared between that many Python threads that each run
    their batches on one core; torch's thread count is set to 1 meanwhile and
    restored at the end (it is process-wide).

    On the CPU in float32 the batches run through :class:`~.fused.FusedInference` (the same network in
    fewer, larger operations; equal to the module's forward to float rounding) unless ``fused`` is
    False or the weights do not bound the attention's scores; elsewhere through the module's forward.

    Returns numpy arrays ``local_aif`` (n, T), ``residue`` (n, T) and ``bad`` (n,), float32.
    """
    device = torch.device(device)
    n, n_frames = tissue_normalised.shape
    batch_size = batch_size or default_batch_size(n_frames, device)
    out = {
        "local_aif": np.zeros((n, n_frames), np.float32),
        "residue": np.zeros((n, n_frames), np.float32),
        "bad": np.zeros(n, np.float32),
    }
    per_curve_aif = np.ndim(aif_normalised) == 2  # simulated curves each have their own global AIF: no shared cache
    inputs = {}  # per device: times, AIF and the AIF's decoder part

    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        # a terminal redraws the bar; a log file (a cluster job, CI) gets a line every 30 s instead of 10 a second
        bar = tqdm(total=n, desc="transformer", unit="voxel", mininterval=0.1 if sys.stderr.isatty() else 30.0)

    def prepare(on):
        """Move the model to a device and compute the AIF's decoder part there, once; on the CPU, repack the
        weights for the fused path (:mod:`.fused`) where it applies."""
        if on not in inputs:
            model.to(on)
            times = torch.as_tensor(frame_times, dtype=torch.float32, device=on)
            aif = torch.as_tensor(aif_normalised, dtype=torch.float32, device=on)
            with _autocast(on):
                cache = None if per_curve_aif else model.encode_aif(aif, times)
            fast = first_queries = None
            if fused and FusedInference.applies(model, aif, cache):
                fast = FusedInference(model)
                first_queries = None if per_curve_aif else fast.shared_queries(cache)
            inputs[on] = (times, aif, cache, fast, first_queries)
        return inputs[on]

    def step(start, stop, on):
        times, aif, cache, fast, first_queries = prepare(on)
        with _autocast(on):
            batch = torch.as_tensor(np.asarray(tissue_normalised[start:stop], np.float32), device=on)
            if fast is not None:
                result = fast(batch, None if cache is not None else aif[start:stop], times, cache, first_queries)
            elif per_curve_aif:
                result = model(batch, aif[start:stop], times)
            else:
                result = model(batch, frame_times=times, aif_cache=cache)
            for key in out:
                out[key][start:stop] = result[key].float().cpu().numpy()
        if bar is not None:
            bar.update(stop - start)

    cpu_batch = default_batch_size(n_frames, "cpu")
    workers = cpu_workers(n, batch_size) if device.type == "cpu" else 1
    if workers == 1:
        with torch.inference_mode():
            run_batches(step, n, batch_size, device, cpu_batch_size=cpu_batch)
    else:
        # On the CPU, several Python threads each running whole batches on one core beat one batch at a time
        # on all cores (the network's many small attention products parallelise poorly inside an operation):
        # 1.0-1.2x in same-run comparisons on 2 cores (768-913 against 704-878 voxels/s). Each thread takes
        # a contiguous share of the voxels; torch's operations release the GIL.
        bounds = np.linspace(0, n, workers + 1).round().astype(int)

        autocast_enabled, autocast_dtype = _cpu_autocast_state()  # thread-local: handed on to the threads

        def share(first, last):
            with torch.inference_mode(), torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_enabled):
                run_batches(lambda start, stop, on: step(first + start, first + stop, on), last - first,
                            batch_size, device, cpu_batch_size=cpu_batch)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # also for the AIF's part: one curve's small operations gain nothing from threads
        try:
            with torch.inference_mode():
                prepare(device)  # before the threads: the model moved and the AIF's decoder part cached once
            # numpy's BLAS (the fused path's attention products) on one thread per worker as well
            with ThreadPoolExecutor(workers) as pool, threadpool_limits(1, user_api="blas"):
                for future in [pool.submit(share, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
                    future.result()
        finally:
            torch.set_num_threads(threads)
    if bar is not None:
        bar.close()
    return out


def _cpu_autocast_state():
    """Whether CPU autocast is on in this thread, and its dtype (torch 2.4 and later, and before)."""
    try:
        return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


def cpu_workers(n_voxels, batch_size):
    """Threads that share the CPU inference: torch's thread count, at most one per batch of voxels."""
    return max(1, min(torch.get_num_threads(), -(-int(n_voxels) // max(int(batch_size), 1))))


def _autocast(device):
    """Mixed precision on CUDA, nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else _null_context()


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


#: how :func:`estimate_curves` sets the residue's height: the network's own, or fitted to the curve
FLOW_SCALES = ("network", "least_squares")


def least_squares_flow_scale(tissue, local_aif, residue, dt):
    """The factor ``c >= 0`` that makes ``c * residue`` fit the tissue curve best: ``C ~ c * (Ca_local (x) K)``.

    Keeps the network's residue *shape* and local AIF and sets the flow from the measured curve by
    linear least squares over every frame (``c = <C, m> / <m, m>`` with ``m = Ca_local (x) K``, the
    trapezoidal convolution of :func:`ctp_nipype.perfusion.convolution.convolve`), clipped at 0. For a
    fixed shape and local AIF it is exactly linear in the curve (``C -> a C`` gives ``c -> a c``), and
    on a noise-free curve that the shape and local AIF explain it returns the true scale.

    Parameters
    ----------
    tissue, local_aif, residue : ndarray, shape (n, T)
        Tissue curve and local AIF (same units), flow-scaled residue K in 1/s.
    dt : float
        Frame interval in seconds.

    Returns
    -------
    ndarray, shape (n, 1)

    Examples
    --------
    >>> aif = np.array([[0.0, 4.0, 2.0, 1.0, 0.0]])
    >>> residue = np.array([[0.02, 0.01, 0.005, 0.0, 0.0]])
    >>> tissue = 3.0 * convolve(aif, residue, 1.0)
    >>> float(least_squares_flow_scale(tissue, aif, residue, 1.0)[0, 0])
    3.0
    """
    model = convolve(np.asarray(local_aif, np.float64), np.asarray(residue, np.float64), dt)
    numerator = np.einsum("ij,ij->i", np.asarray(tissue, np.float64), model)
    denominator = np.einsum("ij,ij->i", model, model)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)
    return np.clip(scale, 0.0, None)[:, None]


def estimate_curves(
    global_aif,
    tissue,
    frame_times,
    weights=None,
    device="cpu",
    batch_size=None,
    kappa_h=KAPPA_H,
    rho=RHO,
    progress=False,
    model=None,
    flow_scale="network",
    fused=True,
):
    """Local AIF, flow-scaled residue, BAD and the perfusion maps of tissue curves.

    Parameters
    ----------
    global_aif : array_like, shape (T,) or (n, T)
        Global arterial concentration (HU above baseline): one for all curves
        (a scan; its decoder part is computed once) or one per curve (simulations).
    tissue : array_like, shape (n, T)
        Tissue concentration curves (HU above baseline), same grid.
    frame_times : array_like, shape (T,)
        Uniformly spaced frame times in seconds.
    weights : str or Path, optional
        A ``.safetensors`` weights file; default the shipped weights.
    device : str
        ``'cpu'``, ``'cuda'`` or ``'auto'``.
    batch_size : int, optional
        Voxels per forward pass; default sized to the device and sequence length.
    kappa_h, rho : float
        Hematocrit factor and tissue density (g/ml).
    progress : bool
        Show a progress bar.
    model : PerfusionTransformer, optional
        An already loaded network (then ``weights`` is ignored).
    flow_scale : {'network', 'least_squares'}
        ``'network'``: K as the network returns it. ``'least_squares'``: the network's residue shape
        and local AIF, scaled to fit the tissue curve (:func:`least_squares_flow_scale`), which makes
        CBF and CBV data-consistent and linear in the curve.
    fused : bool
        On the CPU, run the fused path (:mod:`.fused`; :func:`run_network`); False: the module's forward,
        the reference (equal to float rounding).

    Returns
    -------
    dict of ndarray
        ``cbf`` (n,) ml/100 g/min, ``cbv`` (n,) ml/100 g (from the areas of
        ``tissue`` and ``global_aif``), ``mtt`` (n,) s, ``bad`` (n,) s, ``local_aif`` (n, T) in the AIF's units, ``residue``
        (n, T) flow-scaled residue K in 1/s; ``flagged`` (n,) bool, voxels whose
        outputs were not all finite (set to 0 in every output).
    """
    if flow_scale not in FLOW_SCALES:
        raise ValueError(f"Unknown flow_scale {flow_scale!r}; choose from {FLOW_SCALES}.")
    aif, tissue, times, dt, peak = check_inputs(global_aif, tissue, frame_times)
    device = resolve_device(device)
    if model is None:
        model = load_model(weights, device)
    tissue_input, residue_unit = normalise_tissue(tissue, peak, model.config.tissue_normalisation)
    raw = run_network(
        model,
        (aif / peak).astype(np.float32),
        tissue_input,
        times - times[0],
        device,
        batch_size,
        progress,
        fused,
    )
    residue = raw["residue"] * residue_unit
    if flow_scale == "least_squares":
        residue = residue * least_squares_flow_scale(tissue, raw["local_aif"] * peak, residue, dt)
    maps = perfusion_maps(residue, curve_area(tissue.astype(np.float64), dt), curve_area(aif, dt), dt, kappa_h, rho)
    out = {
        "cbf": maps.cbf.astype(np.float32),
        "cbv": maps.cbv.astype(np.float32),
        "mtt": maps.mtt.astype(np.float32),
        "bad": raw["bad"],
        "local_aif": (raw["local_aif"] * peak).astype(np.float32),  # peak: scalar or (n, 1)
        "residue": residue.astype(np.float32),
    }
    # a voxel with any non-finite output (an overflow in half precision, say) is set to 0 and flagged
    flagged = np.zeros(tissue.shape[0], bool)
    for values in out.values():
        flagged |= ~np.isfinite(values if values.ndim == 1 else values.sum(axis=1))
    for values in out.values():
        values[flagged] = 0
    out["flagged"] = flagged
    return out


def transformer_method(global_aif, tissue, frame_times, weights=None, device="cpu"):
    """The network as a method of :mod:`ctp_nipype.perfusion.evaluation` (registered as ``'transformer'``).

    Returns ``'cbf'``, ``'delay'`` (the network's BAD, s) and ``'local_aif'``.
    """
    try:
        out = estimate_curves(global_aif, tissue, frame_times, weights=weights, device=device)
    except ValueError as error:
        if np.ndim(global_aif) == 2:
            raise RuntimeError(
                "The 'transformer' method got one global AIF per curve (shape (n, T)), as every simulated "
                f"curve has its own, and estimate_curves refused it: {error}"
            ) from error
        raise
    return {"cbf": out["cbf"], "delay": out["bad"], "local_aif": out.get("local_aif")}


register_method("transformer", transformer_method)
