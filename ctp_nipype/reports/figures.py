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
CMAPS = {"cbf": "jet", "cbv": "jet", "mtt": "jet", "tmax": "jet", "bad": "jet", "ttp": "jet"}
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
    # one image: the panels tiled (rows = methods, columns = slices, one blank pixel column / row between
    # them), drawn by one imshow on one axes; 18 axes of their own took most of a clinical report's time
    tiles = [[np.where(brain[bx, by, k], maps[method][bx, by, k], np.nan).T for k in slices] for method in methods]
    height, width = tiles[0][0].shape
    gap = max(1, round(0.03 * width))
    montage = np.full((len(methods) * (height + gap) - gap, len(slices) * (width + gap) - gap), np.nan, np.float32)
    for row, images in enumerate(tiles):
        for col, image in enumerate(images):
            # rows from the top, each tile drawn with its first row at the bottom (origin 'lower')
            top = (len(methods) - 1 - row) * (height + gap)
            montage[top : top + height, col * (width + gap) : col * (width + gap) + width] = image
    fig = plt.figure(figsize=(1.9 * len(slices) + 1.2, 1.9 * len(methods) + 0.4))
    ax = fig.add_axes([0.06, 0.03, 0.82, 0.87])
    image = ax.imshow(montage, origin="lower", cmap=CMAPS.get(map_name, "viridis"), vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_xticks([col * (width + gap) + width / 2 for col in range(len(slices))])
    ax.set_xticklabels([f"slice {k}" for k in slices], fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks([(len(methods) - 1 - row) * (height + gap) + height / 2 for row in range(len(methods))])
    ax.set_yticklabels(methods)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(f"{map_name.upper()} [{units}]")
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


#: colours of the triage summary: core, hypoperfused (delay > 6 s), severe (delay > 10 s), RGBA
TRIAGE_COLOURS = {"core": (1.0, 0.0, 0.0, 0.85), "hypoperfused": (0.0, 0.85, 0.2, 0.6),
                  "severe": (0.0, 0.45, 0.1, 0.8)}


def triage_lines(summary):
    """The summary's numbers as ``(label, value text)`` rows, delay rows named after the map (Tmax or BAD).

    >>> rows = triage_lines({"DelayMap": "bad", "CoreVolume": 12.0, "DelayThresholds": [6.0],
    ...                      "DelayAbove6sVolume": 30.5, "MismatchVolume": 18.5, "MismatchRatio": 2.54,
    ...                      "HypoperfusionIntensityRatio": None, "CoreRelativeCBFThreshold": 0.3})
    >>> rows[0], rows[1], rows[-1]
    (('Core (rCBF < 30%)', '12.0 ml'), ('BAD > 6 s', '30.5 ml'), ('HIR (BAD > 10 s / > 6 s)', 'n/a'))
    """
    from ..perfusion.triage import delay_label, volume_key

    delay = delay_label(summary.get("DelayMap", "tmax"))

    def ml(value):
        return "n/a" if value is None else f"{value:.1f} ml"

    def ratio(value):
        return "n/a (no core)" if value is None and summary.get("CoreVolume") == 0 else (
            "n/a" if value is None else f"{value:.2f}")

    core_percent = 100 * float(summary.get("CoreRelativeCBFThreshold", 0.3))
    rows = [(f"Core (rCBF < {core_percent:g}%)", ml(summary.get("CoreVolume")))]
    for threshold in summary.get("DelayThresholds", []):
        rows.append((f"{delay} > {threshold:g} s", ml(summary.get(volume_key(threshold)))))
    rows.append(("Mismatch volume", ml(summary.get("MismatchVolume"))))
    rows.append(("Mismatch ratio", ratio(summary.get("MismatchRatio"))))
    hir = summary.get("HypoperfusionIntensityRatio")
    rows.append((f"HIR ({delay} > 10 s / > 6 s)", "n/a" if hir is None else f"{hir:.2f}"))
    return rows


def triage_summary(background, brain, core, hypoperfused, delay, summary, title, slices, affine=None):
    """The one-page triage summary of one method: overlays on the slices, volumes, target-mismatch flags.

    Parameters
    ----------
    background : ndarray (x, y, z)
        Time-averaged scan, HU.
    brain : ndarray of bool
        Crops the slices.
    core, hypoperfused : ndarray of bool
        The lesion masks (:class:`~ctp_nipype.interfaces.stats.LesionVolumes`).
    delay : ndarray (x, y, z)
        Tmax or BAD, s: hypoperfused voxels above the severe threshold (10 s) are shown darker.
    summary : dict
        The method's lesion JSON.
    title : str
    slices : list of int
    affine : ndarray (4, 4), optional
        Voxel-to-world (RAS+) affine: marks the subject's left (L) and right (R) on the first slice.

    Returns
    -------
    bytes
        PNG.
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    sides = None
    if affine is not None and abs(float(np.asarray(affine)[0, 0])) > 0:
        sides = ("L", "R") if float(np.asarray(affine)[0, 0]) > 0 else ("R", "L")  # RAS+: x grows to the right

    from ..perfusion.triage import TARGET_MISMATCH, delay_label

    delay_name = delay_label(summary.get("DelayMap", "tmax"))
    severe_s = float(summary.get("SevereDelayThreshold", 10.0))
    hypo_s = float(summary.get("DelayThreshold", 6.0))
    bx, by = _crop_box(brain)
    n = max(len(slices), 1)
    fig = plt.figure(figsize=(2.0 * n + 5.2, 5.6))
    grid = fig.add_gridspec(2, n + 2, width_ratios=[1.0] * n + [0.05, 2.4], left=0.02, right=0.99, top=0.86,
                            bottom=0.1, wspace=0.04, hspace=0.12)
    core_map = ListedColormap([TRIAGE_COLOURS["core"]])
    delay_map = ListedColormap([TRIAGE_COLOURS["hypoperfused"], TRIAGE_COLOURS["severe"]])
    graded = np.where(hypoperfused, np.where(delay > severe_s, 2.0, 1.0), np.nan)
    core_layer = np.where(core, 1.0, np.nan)
    rows = [("core", core_layer, core_map, (1, 1)), ("delay", graded, delay_map, (1, 2))]
    for row, (name, layer, cmap, (vmin, vmax)) in enumerate(rows):
        for col, k in enumerate(slices):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(background[bx, by, k].T, origin="lower", cmap="gray", vmin=BRAIN_WINDOW_HU[0],
                      vmax=BRAIN_WINDOW_HU[1])
            ax.imshow(layer[bx, by, k].T, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"slice {k}", fontsize=8)
            if sides and row == 0 and col == 0:
                for x, letter in ((0.03, sides[0]), (0.97, sides[1])):
                    ax.text(x, 0.03, letter, color="yellow", fontsize=9, fontweight="bold", transform=ax.transAxes,
                            ha="left" if x < 0.5 else "right", va="bottom")
            if col == 0:
                ax.set_ylabel(f"core (rCBF < {100 * float(summary.get('CoreRelativeCBFThreshold', 0.3)):g}%)"
                              if name == "core" else f"{delay_name} > {hypo_s:g} s", fontsize=9)
    fig.legend(handles=[Patch(color=TRIAGE_COLOURS["core"], label="core"),
                        Patch(color=TRIAGE_COLOURS["hypoperfused"], label=f"{delay_name} > {hypo_s:g} s"),
                        Patch(color=TRIAGE_COLOURS["severe"], label=f"{delay_name} > {severe_s:g} s")],
               loc="lower left", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.02, 0.0))
    text_ax = fig.add_subplot(grid[:, n + 1])
    text_ax.axis("off")
    y = 0.98
    side = summary.get("AffectedHemisphere")
    text_ax.text(0, y, f"affected side: {side or 'n/a'}", fontsize=9, va="top", transform=text_ax.transAxes)
    y -= 0.07
    for label, value in triage_lines(summary):
        bold = label.startswith(("Core", f"{delay_name} > {hypo_s:g} s", "Mismatch"))
        text_ax.text(0, y, label, fontsize=10, va="top", transform=text_ax.transAxes,
                     fontweight="bold" if bold else "normal")
        text_ax.text(1, y, value, fontsize=10, va="top", ha="right", transform=text_ax.transAxes,
                     fontweight="bold" if bold else "normal")
        y -= 0.065
    y -= 0.02
    criteria_texts = summary.get("TargetMismatchCriteria", {})
    for name, criteria in TARGET_MISMATCH.items():
        met = summary.get(name)
        verdict = "n/a" if met is None else ("MET" if met else "not met")
        colour = "#c8f0c8" if met else "#eeeeee"
        text_ax.text(0, y, f"{name.replace('DEFUSE3', 'DEFUSE 3')} target mismatch: {verdict}", fontsize=10,
                     va="top", fontweight="bold", transform=text_ax.transAxes,
                     bbox={"boxstyle": "round", "facecolor": colour, "edgecolor": "#888888"})
        y -= 0.075
        text_ax.text(0, y, criteria_texts.get(name, criteria.text(delay_name)), fontsize=7.5, va="top",
                     transform=text_ax.transAxes, wrap=True, color="#333333")
        y -= 0.085
    fig.suptitle(f"CT perfusion triage: {title}", fontsize=12, fontweight="bold", x=0.02, ha="left")
    return to_png(fig, dpi=100)
