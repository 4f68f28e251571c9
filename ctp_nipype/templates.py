"""The anatomical templates the digital phantom is built on, read from files (the I/O layer of :mod:`ctp_nipype.sims`).

:func:`load_mni152` reads the MNI ICBM152 2009a maps that nilearn ships
inside its wheel; :func:`ctp_nipype.sims.phantom.make_phantom` imports this
module only when it builds a phantom, so the simulators stay importable
without nibabel and nilearn.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: the MNI ICBM152 2009a files that nilearn ships in its wheel (its ``datasets/data`` folder)
MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "grey_matter": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "white_matter": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def load_mni152():
    """The 1 mm MNI maps as nibabel images: T1, grey matter, white matter (values rescaled to [0, 1] later).

    Read straight from the files inside the nilearn wheel (importing
    ``nilearn.datasets`` costs seconds, for scikit-learn); when they are not
    where nilearn 0.10-0.14 keeps them, the public loaders are used.
    """
    import nibabel as nb

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The phantom needs nilearn (it ships the MNI152 templates): pip install nilearn.")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    paths = {name: folder / file for name, file in MNI_FILES.items()}
    if all(path.exists() for path in paths.values()):
        return {name: nb.load(str(path)) for name, path in paths.items()}
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    return {
        "t1": load_mni152_template(resolution=1),
        "grey_matter": load_mni152_gm_template(resolution=1),
        "white_matter": load_mni152_wm_template(resolution=1),
    }
