"""Figures of the preprocessing steps (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import numpy as np


def panel_slice(voxels):
    """The slice (z index) that :func:`plot_vascular_functions` shows for voxels (n, 3): the one holding most.

    >>> panel_slice([[0, 0, 3], [1, 1, 5], [2, 2, 5]])
    5
    """
    return int(np.bincount(np.asarray(voxels, int)[:, 2]).argmax())


def plot_vascular_functions(path, frame_times, curves, image, aif_voxels=None, vof_voxels=None, title=None):
    """PNG of the AIF/VOF curves and, beside them, where their voxels lie.

    Parameters
    ----------
    path : str or Path
        Output PNG.
    frame_times : array_like (T,)
        Seconds.
    curves : dict
        ``{label: curve in HU}``, e.g. aif, vof, aif_corrected.
    image : ndarray (x, y, z)
        Background image (the time-averaged scan), shown in a brain window; only the slices of
        :func:`panel_slice` are read.
    aif_voxels, vof_voxels : ndarray (n, 3) of int, optional
        Array indices of the averaged voxels; each panel shows the slice that
        holds most of them.
    title : str, optional

    Returns
    -------
    path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [(name, vox) for name, vox in (("AIF", aif_voxels), ("VOF", vof_voxels)) if vox is not None and len(vox)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(5 + 4 * len(panels), 4), squeeze=False)
    ax = axes[0, 0]
    styles = {"aif": ("tab:red", "-"), "vof": ("tab:blue", "-"), "aif_corrected": ("tab:red", "--")}
    for label, curve in curves.items():
        color, line = styles.get(label, (None, "-"))
        ax.plot(frame_times, curve, line, color=color, label=label)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("attenuation [HU]")
    ax.legend()
    ax.set_title(title or "vascular functions")
    colors = {"AIF": "red", "VOF": "cyan"}
    for k, (name, voxels) in enumerate(panels, start=1):
        voxels = np.asarray(voxels, int)
        z = panel_slice(voxels)
        axes[0, k].imshow(image[:, :, z].T, cmap="gray", vmin=0, vmax=100, origin="lower")
        in_slice = voxels[voxels[:, 2] == z]
        axes[0, k].scatter(in_slice[:, 0], in_slice[:, 1], s=30, facecolors="none", edgecolors=colors[name])
        axes[0, k].set_title(f"{name} voxels, slice {z} ({len(in_slice)} of {len(voxels)})")
        axes[0, k].set_axis_off()
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)
    return path
