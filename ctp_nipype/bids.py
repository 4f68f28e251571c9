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
import re
from dataclasses import dataclass
from pathlib import Path


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


#: the extensions a derivative name may end with, longest first
EXTENSIONS = (".nii.gz", ".nii", ".json", ".tsv", ".html", ".png")

_DERIVATIVE_NAME = re.compile(
    r"^(?P<prefix>.+?)(?:_label-(?P<label>[A-Za-z0-9]+))?(?:_desc-(?P<desc>[A-Za-z0-9]+))?_(?P<suffix>[A-Za-z0-9]+)"
    r"(?P<extension>(?:\.[A-Za-z0-9]+)*)$"
)


def derivative_name(prefix, suffix, desc=None, label=None, extension=".nii.gz"):
    """The file name of a derivative, from its entities: ``<prefix>[_label-<label>][_desc-<desc>]_<suffix><ext>``.

    The one place where the conventions' output names are made (as niworkflows' DerivativesDataSink
    builds its names from entities). ``prefix`` is the scan's entities (``sub-01_ses-01``) or, for a
    file outside a BIDS dataset, its name without ``_ctp`` and extension; ``label`` comes before
    ``desc`` (the BIDS entity order). An empty prefix gives the name's tail, for matching.

    >>> derivative_name("sub-01_ses-01", "cbf", desc="osvd")
    'sub-01_ses-01_desc-osvd_cbf.nii.gz'
    >>> derivative_name("sub-01", "mask", desc="osvd", label="core")
    'sub-01_label-core_desc-osvd_mask.nii.gz'
    >>> derivative_name("scan", "aif", desc="global", extension=".tsv")
    'scan_desc-global_aif.tsv'
    >>> derivative_name("sub-01", "ctp")
    'sub-01_ctp.nii.gz'
    >>> derivative_name("", "stats", desc="regions", extension=".tsv")
    '_desc-regions_stats.tsv'
    """
    for key, value in (("suffix", suffix), ("desc", desc), ("label", label)):
        if value is not None and not (str(value).isalnum() and str(value).isascii()):
            raise ValueError(f"A derivative's {key} must be a non-empty alphanumeric string, got {value!r}.")
    parts = [str(prefix)]
    if label is not None:
        parts.append(f"label-{label}")
    if desc is not None:
        parts.append(f"desc-{desc}")
    parts.append(str(suffix))
    return "_".join(parts) + extension


def parse_derivative_name(path):
    """The entities of a derivative's file name (the inverse of :func:`derivative_name`), or None.

    >>> parse_derivative_name("/d/sub-01_ses-01_desc-osvd_cbf.nii.gz")
    {'prefix': 'sub-01_ses-01', 'label': None, 'desc': 'osvd', 'suffix': 'cbf', 'extension': '.nii.gz'}
    >>> parse_derivative_name("sub-01_label-core_desc-csvd_mask.nii.gz")["label"]
    'core'
    >>> parse_derivative_name("cbf.nii.gz") is None
    True
    """
    match = _DERIVATIVE_NAME.match(Path(path).name)
    return None if match is None else match.groupdict()


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


#: the name under which a derivatives dataset links the dataset its scans come from (``bids:raw:...``)
RAW_LINK = "raw"


def write_dataset_description(output_dir, source_dirs=()):
    """The derivatives' ``dataset_description.json`` (written once, kept if present).

    The first source dataset is declared under ``DatasetLinks`` as ``raw``, so that the sidecars'
    ``Sources`` may name its files as ``bids:raw:<path>`` (BIDS URIs); a description kept from an
    earlier run gets the link added when it lacks it.
    """
    from .io import generated_by, read_json, write_json

    path = Path(output_dir) / "dataset_description.json"
    links = {RAW_LINK: Path(os.path.abspath(source_dirs[0])).as_uri()} if source_dirs else {}
    if path.exists():
        payload = read_json(path)
        if not links or RAW_LINK in payload.get("DatasetLinks", {}):
            return path
        payload["DatasetLinks"] = {**payload.get("DatasetLinks", {}), **links}
        return write_json(path, payload)
    payload = {
        "Name": "ctp_nipype perfusion derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": generated_by(),
        "SourceDatasets": [{"URL": Path(os.path.abspath(d)).as_uri()} for d in source_dirs],
    }
    if links:
        payload["DatasetLinks"] = links
    return write_json(path, payload)


def linked_dataset(derivatives_root, name=RAW_LINK):
    """The folder a derivatives dataset links under ``name`` in its ``DatasetLinks``, or None.

    A link is a ``file:`` URI or a path relative to the derivatives root.
    """
    from urllib.parse import unquote, urlparse

    description = Path(derivatives_root) / "dataset_description.json"
    if not description.is_file():
        return None
    link = (json.loads(description.read_text(encoding="utf-8")).get("DatasetLinks") or {}).get(name)
    if not link:
        return None
    parsed = urlparse(link)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme:
        return None  # a remote dataset: no local file can lie in it
    return (Path(derivatives_root) / link).resolve()


def _inside(path, root):
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return None


def _written_by_a_node(path):
    """Whether a file lies in the folder of a Nipype node (a pipeline intermediate, not a user's file)."""
    folder = Path(path).parent
    return (folder / "_node.pklz").exists() or any(folder.glob("result_*.pklz"))


def source_uris(sources, derivatives_root, subdir=""):
    """``Sources`` of a published sidecar as BIDS URIs, never paths into the work directory.

    * a file of the linked raw dataset (:func:`linked_dataset`) -> ``bids:raw:<path in it>``;
    * a file of the derivatives dataset, or a pipeline intermediate that the derivatives sink publishes
      under ``subdir`` -> ``bids::<subdir>/<name>`` (a path relative to the derivatives dataset);
      without a ``dataset_description.json`` (the flat output of ``ctp-perfusion``) the plain relative path;
    * an intermediate copy of the scan (``*_ctp.nii[.gz]`` written by a node: the loaded, motion-corrected or
      filtered series, never published) -> the sources of that copy, read from its sidecar, recursively;
    * a user's file outside both datasets -> its absolute path; a BIDS URI -> itself.

    The order is kept and duplicates are dropped.
    """
    root = Path(os.path.realpath(derivatives_root))
    is_dataset = (root / "dataset_description.json").is_file()
    raw = linked_dataset(root)
    raw = Path(os.path.realpath(raw)) if raw is not None else None
    scheme = "bids::" if is_dataset else ""

    def resolve(source, seen):
        source = str(source)
        if source.startswith("bids:"):
            return [source]
        path = Path(os.path.realpath(source))
        if raw is not None and _inside(path, raw) is not None:
            return [f"bids:{RAW_LINK}:{_inside(path, raw)}"]
        if _inside(path, root) is not None:
            return [scheme + _inside(path, root)]
        if not _written_by_a_node(path):
            return [str(path)]
        entities = parse_derivative_name(path)
        if entities and entities["suffix"] == "ctp" and path not in seen:
            from .io import sidecar_path

            side = sidecar_path(path)
            upstream = json.loads(side.read_text(encoding="utf-8")).get("Sources", []) if side.is_file() else []
            return [uri for item in upstream for uri in resolve(item, seen | {path})]
        return [scheme + (Path(subdir) / path.name).as_posix()]

    return list(dict.fromkeys(uri for source in sources for uri in resolve(source, frozenset())))


def read_sidecar(path):
    """The JSON sidecar of a NIfTI, or {} when there is none."""
    from .io import sidecar_path

    side = sidecar_path(path)
    return json.loads(side.read_text()) if side.exists() else {}
