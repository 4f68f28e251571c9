"""Report figures (matplotlib, Agg backend), each returned as PNG bytes.

Images are shown with the array's x axis to the right and y upwards
(``origin='lower'`` on the transposed slice), as :mod:`ctp_nipype.viz` does.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

#: colour maps of the perfusion maps
CMAPS = {"cbf": "jet", "cbv": "jet", "mtt": "jet", "tmax": "jet", "bad": "jet"}
#: display window (HU) of the time-averaged scan behind overlays
BRAIN_WINDOW_HU = (0.0, 100.0)
#: curve colours of the methods (the same in every figure)
METHOD_COLOURS = {"ssvd": "tab:blue", "csvd": "tab:orange", "osvd": "tab:green", "transformer": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def to_png(fig, dpi=80):
    """The figure as PNG bytes; the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def slices_to_show(mask, max_slices=6):
    """Up to ``max_slices`` axial slice indices evenly spread over the slices that hold the mask.

    >>> m = np.zeros((2, 2, 10), bool); m[..., 2:8] = True
    >>> slices_to_show(m, 3)
    [2, 4, 7]
    """
    mask = np.asarray(mask, bool)
    present = np.flatnonzero(mask.any(axis=(0, 1)))
    if present.size == 0:
        present = np.arange(mask.shape[2])
    if present.size <= max_slices:
        return [int(k) for k in present]
    return [int(present[i]) for i in np.round(np.linspace(0, present.size - 1, max_slices)).astype(int)]


def shared_range(arrays, mask, upper_percentile=99.0):
    """A display range ``(0, highest upper_percentile)`` common to arrays, inside ``mask``.

    Perfusion maps are non-negative; values below 0 (SVD noise) show in the lowest colour.

    >>> shared_range([np.arange(101.0), 2 * np.arange(101.0)], np.ones(101, bool))
    (0.0, 198.0)
    """
    mask = np.asarray(mask, bool)
    values = [np.asarray(a)[mask] for a in arrays]
    values = [v[np.isfinite(v)] for v in values]
    values = [v for v in values if v.size]
    high = max((float(np.percentile(v, upper_percentile)) for v in values), default=1.0)
    return 0.0, high if high > 0 else 1.0


def _crop_box(mask, margin=2):
    """In-plane bounding box (slices) of a mask, with a margin."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return slice(None), slice(None)
    xs, ys = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    return (slice(max(xs[0] - margin, 0), xs[-1] + margin + 1), slice(max(ys[0] - margin, 0), ys[-1] + margin + 1))


def map_mosaic(maps, map_name, units, brain, slices, value_range=None, range_mask=None):
    """Rows = methods, columns = slices of one map, one colour scale and one colour bar in units.

    Parameters
    ----------
    maps : dict
        ``{method: 3D map}``.
    map_name : str
        ``cbf``, ``cbv``, ``mtt``, ``tmax``, ``bad`` (title, colour map).
    units : str
    brain : ndarray of bool
        Outside is shown blank; the in-plane view is cropped to it.
    slices : list of int
    value_range : (float, float), optional
        Default :func:`shared_range` over all methods in ``range_mask``.
    range_mask : ndarray of bool, optional
        Voxels that set the colour scale (default ``brain``; give the tissue,
        without vessels and CSF, so that the vessels' CBF does not set it).

    Returns
    -------
    bytes
    """
    plt = _pyplot()
    methods = list(maps)
    if value_range is None:
        value_range = shared_range(list(maps.values()), brain if range_mask is None else range_mask)
    vmin, vmax = value_range
    bx, by = _crop_box(brain)
    fig, axes = plt.subplots(
        len(methods), len(slices), figsize=(1.9 * len(slices) + 1.2, 1.9 * len(methods) + 0.4), squeeze=False
    )
    image = None
    for row, method in enumerate(methods):
        for col, k in enumerate(slices):
            ax = axes[row, col]
            values = np.where(brain[bx, by, k], maps[method][bx, by, k], np.nan)
            image = ax.imshow(values.T, origin="lower", cmap=CMAPS.get(map_name, "viridis"), vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(method)
            if row == 0:
                ax.set_title(f"slice {k}", fontsize=9)
    fig.suptitle(f"{map_name.upper()} [{units}]")
    fig.subplots_adjust(left=0.06, right=0.88, top=0.9, bottom=0.03, wspace=0.03, hspace=0.05)
    bar = fig.add_axes([0.9, 0.1, 0.02, 0.75])
    fig.colorbar(image, cax=bar).set_label(units)
    return to_png(fig)


def lesion_overlay(background, brain, lesions, slices):
    """Core (red) and hypoperfused tissue (yellow) of every method over the time-averaged scan.

    Parameters
    ----------
    background : ndarray (x, y, z)
        Time-averaged scan, HU.
    brain : ndarray of bool
        For cropping.
    lesions : dict
        ``{method: (core mask, hypoperfused mask, title)}``.
    slices : list of int

    Returns
    -------
    bytes
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    colours = ListedColormap([(1.0, 0.85, 0.0, 0.55), (0.9, 0.0, 0.0, 0.75)])
    bx, by = _crop_box(brain)
    methods = list(lesions)
    fig, axes = plt.subplots(
        len(methods), len(slices), figsize=(1.9 * len(slices) + 0.4, 1.9 * len(methods) + 0.5), squeeze=False
    )
    for row, method in enumerate(methods):
        core, hypo, title = lesions[method]
        label = np.where(core, 2.0, np.where(hypo, 1.0, np.nan))
        for col, k in enumerate(slices):
            ax = axes[row, col]
            ax.imshow(background[bx, by, k].T, origin="lower", cmap="gray", vmin=BRAIN_WINDOW_HU[0], vmax=BRAIN_WINDOW_HU[1])
            ax.imshow(label[bx, by, k].T, origin="lower", cmap=colours, vmin=1, vmax=2, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(method)
        axes[row, 0].set_title(title, fontsize=9, loc="left")
    fig.suptitle("core (red) and hypoperfused (yellow)")
    fig.tight_layout()
    return to_png(fig)


def motion_plot(times, motion):
    """Translations (mm), rotations (degrees) and displacements (mm) over time, censored frames shaded.

    ``motion`` is ``{column: values}`` with the columns of the motion TSV
    (``trans_*_mm``, ``rot_*_deg``, ``framewise_displacement_mm``,
    ``displacement_mm``, ``censored``); missing columns are left out.
    """
    plt = _pyplot()
    groups = [
        ("translation [mm]", [c for c in motion if c.startswith("trans_")]),
        ("rotation [deg]", [c for c in motion if c.startswith("rot_")]),
        ("displacement [mm]", [c for c in ("framewise_displacement_mm", "displacement_mm") if c in motion]),
    ]
    censored = np.asarray(motion.get("censored", np.zeros(len(times))), float) > 0.5
    groups = [(label, columns) for label, columns in groups if columns]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.0 * len(groups) + 0.3), sharex=True, squeeze=False)
    for ax, (label, columns) in zip(axes[:, 0], groups):
        for column in columns:
            ax.plot(times, motion[column], label=column)
        if censored.any():
            ax.fill_between(times, 0, 1, where=censored, step="mid", color="tab:red", alpha=0.15,
                            transform=ax.get_xaxis_transform(), label="censored (masks, AIF/VOF)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, ncol=3, loc="upper left")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time [s]")
    fig.tight_layout()
    return to_png(fig)


def vascular_functions(frame_times, curves, image, aif_voxels=None, vof_voxels=None, title=None):
    """The AIF/VOF figure of :func:`ctp_nipype.viz.plot_vascular_functions`, as PNG bytes."""
    from ..viz import plot_vascular_functions

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vascular.png"
        plot_vascular_functions(path, frame_times, curves, image, aif_voxels, vof_voxels, title=title)
        return path.read_bytes()


def roi_curves(frame_times, rois):
    """Per ROI: mean residue of each method (top) and observed vs reconstructed tissue curves (bottom).

    Parameters
    ----------
    frame_times : ndarray (N,)
        Seconds (the uniform grid of the residues).
    rois : list of dict
        Each with ``name``, ``observed`` (N,) mean tissue concentration [HU],
        ``residue`` ``{method: (N,) mean flow-scaled residue [1/s]}`` and
        ``reconstructed`` ``{method: (N,) AIF (x) residue [HU]}``.

    Returns
    -------
    bytes
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(rois), figsize=(3.6 * len(rois) + 0.5, 6), squeeze=False, sharex=True)
    for col, roi in enumerate(rois):
        top, bottom = axes[0, col], axes[1, col]
        for method, residue in roi["residue"].items():
            top.plot(frame_times, residue, color=METHOD_COLOURS.get(method), label=method)
        top.axhline(0, color="k", lw=0.5)
        top.set_title(roi["name"], fontsize=10)
        bottom.plot(frame_times, roi["observed"], "k.", ms=4, label="observed")
        for method, curve in roi["reconstructed"].items():
            bottom.plot(frame_times, curve, color=METHOD_COLOURS.get(method), label=method)
        bottom.set_xlabel("time [s]")
        if col == 0:
            top.set_ylabel("flow-scaled residue K [1/s]")
            bottom.set_ylabel("tissue concentration [HU]")
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def roi_locations(background, brain, rois):
    """Where the ROIs lie: one panel per ROI on its slice, the ROI outlined.

    ``rois`` is a list of ``(name, 3D bool mask)``.
    """
    plt = _pyplot()
    bx, by = _crop_box(brain)
    fig, axes = plt.subplots(1, len(rois), figsize=(2.6 * len(rois), 2.9), squeeze=False)
    for ax, (name, mask) in zip(axes[0], rois):
        k = int(np.flatnonzero(mask.any(axis=(0, 1)))[0])
        ax.imshow(background[bx, by, k].T, origin="lower", cmap="gray", vmin=BRAIN_WINDOW_HU[0], vmax=BRAIN_WINDOW_HU[1])
        ax.contour(mask[bx, by, k].T.astype(float), levels=[0.5], colors="magenta", linewidths=1.5, origin="lower")
        ax.set_title(f"{name} (slice {k})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return to_png(fig)
