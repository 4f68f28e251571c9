"""Figures of the preprocessing steps (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import numpy as np


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
        Background image (the time-averaged scan), shown in a brain window.
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
        z = int(np.bincount(voxels[:, 2]).argmax())
        axes[0, k].imshow(image[:, :, z].T, cmap="gray", vmin=0, vmax=100, origin="lower")
        in_slice = voxels[voxels[:, 2] == z]
        axes[0, k].scatter(in_slice[:, 0], in_slice[:, 1], s=30, facecolors="none", edgecolors=colors[name])
        axes[0, k].set_title(f"{name} voxels, slice {z} ({len(in_slice)} of {len(voxels)})")
        axes[0, k].set_axis_off()
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)
    return path
