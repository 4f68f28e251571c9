"""BIDS datasets of CT perfusion scans: finding scans with pybids, naming derivatives.

CT is not yet an official BIDS modality, so the dataset is indexed with a
package config (``ctp_nipype/data/bids_config.json``) used alone: entities
subject, session, acquisition, run, desc, datatype (``ct``, ``perf`` or
``anat``), suffix and extension. A scan is any file with suffix ``ctp``, with or
without a datatype folder (ISLES'24 keeps it directly in the session folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import __url__, __version__

CONFIG = Path(__file__).parent / "data" / "bids_config.json"


class BIDSError(ValueError):
    """A dataset, participant or session that cannot be used."""


@dataclass(frozen=True)
class CTPScan:
    """One CTP scan of a BIDS dataset."""

    path: Path
    subject: str
    session: str | None = None
    acquisition: str | None = None
    run: int | None = None

    @property
    def prefix(self):
        """``sub-<l>[_ses-<l>][_acq-<l>][_run-<n>]``, the derivatives' file-name prefix."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        if self.acquisition:
            parts.append(f"acq-{self.acquisition}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        return "_".join(parts)

    @property
    def derivatives_subdir(self):
        """``sub-<l>/[ses-<l>/]perf``."""
        sub = Path(f"sub-{self.subject}")
        if self.session:
            sub = sub / f"ses-{self.session}"
        return sub / "perf"


def _strip(label, prefix):
    label = str(label)
    return label[len(prefix) :] if label.startswith(prefix) else label


def collect_scans(bids_dir, participant_labels=None, session_labels=None):
    """All CTP scans of a dataset, optionally filtered by participant and session.

    Parameters
    ----------
    bids_dir : str or Path
        Root of the BIDS dataset.
    participant_labels, session_labels : list of str, optional
        Labels with or without the ``sub-`` / ``ses-`` prefix.

    Returns
    -------
    list of CTPScan, sorted by subject, session, acquisition, run.

    Raises
    ------
    BIDSError
        When the folder is not a dataset, holds no CTP scan, or a requested
        participant/session does not exist.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    root = Path(bids_dir)
    if not root.is_dir():
        raise BIDSError(f"The BIDS dataset folder {root} does not exist.")
    if not (root / "dataset_description.json").exists():
        raise BIDSError(
            f"{root} has no dataset_description.json, so it is not a BIDS dataset; "
            "point BIDS_DIR at the dataset's root folder."
        )
    try:
        # metadata are read per scan by the loader, with its own errors; index names only
        layout = BIDSLayout(str(root), validate=False, config=[str(CONFIG)], derivatives=False,
                            indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    except (OSError, ValueError) as err:
        raise BIDSError(f"pybids could not index {root}: {err}") from None
    files = layout.get(suffix="ctp", extension=[".nii", ".nii.gz"], return_type="object")
    if not files:
        raise BIDSError(
            f"No CTP scan found in {root}: expected files named sub-<label>[_ses-<label>]_ctp.nii[.gz] "
            "(in the session folder or a ct/ or perf/ folder)."
        )
    scans = []
    for f in files:
        ents = f.get_entities()
        if "subject" not in ents:
            continue
        scans.append(
            CTPScan(
                Path(f.path),
                str(ents["subject"]),
                ents.get("session"),
                ents.get("acquisition"),
                ents.get("run"),
            )
        )
    available = sorted({s.subject for s in scans})
    if participant_labels:
        wanted = [_strip(p, "sub-") for p in participant_labels]
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise BIDSError(
                f"Participant(s) {', '.join(missing)} not found in {root}; available: {', '.join(available)}."
            )
        scans = [s for s in scans if s.subject in wanted]
    if session_labels:
        wanted_sessions = [_strip(s, "ses-") for s in session_labels]
        sessions = sorted({s.session for s in scans if s.session})
        scans = [s for s in scans if s.session in wanted_sessions]
        if not scans:
            raise BIDSError(
                f"No CTP scan with session(s) {', '.join(wanted_sessions)} for the selected participants; "
                f"available: {', '.join(sessions) or 'none (the scans have no session)'}."
            )
    return sorted(scans, key=lambda s: (s.subject, s.session or "", s.acquisition or "", s.run or 0))


def check_output_outside_input(output_dir, input_dirs, what="output folder"):
    """Refuse an output (or work) folder inside an input dataset, or containing it.

    Paths are compared after resolving symbolic links, so a link into the
    dataset is refused too.
    """
    out = Path(os.path.realpath(output_dir))
    for source in input_dirs:
        src = Path(os.path.realpath(source))
        if out == src or src in out.parents:
            raise BIDSError(
                f"The {what} {out} lies inside the input dataset {src}; nothing may be written there. "
                "Choose a folder outside it (for derivatives, e.g. a sibling folder)."
            )
        if out in src.parents:
            raise BIDSError(f"The {what} {out} contains the input dataset {src}; choose a folder beside it.")


def find_dataset_root(path):
    """The outermost folder above ``path`` that holds a ``dataset_description.json``, or None.

    The single-scan command uses it to refuse writing into the dataset a scan comes from.

    >>> find_dataset_root("/") is None
    True
    """
    root = None
    for parent in Path(os.path.realpath(path)).parents:
        if (parent / "dataset_description.json").is_file():
            root = parent
    return root


def write_dataset_description(output_dir, source_dirs=()):
    """The derivatives' ``dataset_description.json`` (written once, kept if present)."""
    from .io import write_json

    path = Path(output_dir) / "dataset_description.json"
    if path.exists():
        return path
    payload = {
        "Name": "ctp_nipype perfusion derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "ctp_nipype", "Version": __version__, "CodeURL": __url__}],
        "SourceDatasets": [{"URL": Path(os.path.abspath(d)).as_uri()} for d in source_dirs],
    }
    return write_json(path, payload)


def read_sidecar(path):
    """The JSON sidecar of a NIfTI, or {} when there is none."""
    from .io import sidecar_path

    side = sidecar_path(path)
    return json.loads(side.read_text()) if side.exists() else {}
