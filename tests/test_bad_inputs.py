"""Bad input through every command line: one clear line, a non-zero exit, input untouched.

The commands: ``ctp-perfusion``, ``ctp-bids-app``, ``ctp-finetune``, ``ctp-train``,
``ctp-evaluate``, ``ctp-phantom``, ``ctp-compare``, ``ctp-convert`` (its DICOM cases and an ISLES layout's;
every DICOM bad input is also in ``tests/test_dicom.py``).

Every case of the table builds its inputs in an input folder (a loose scan
or a BIDS dataset), runs the command's ``main(argv)`` in-process and checks:

* the exit code is non-zero (2: input the user must fix);
* stderr is exactly one line, ``<prog>: error: ...``, that names what is
  wrong (the case's pattern) and has no traceback;
* every file of the input folder has the same checksum before and after,
  and nothing was added to it.

A few cases run again as real processes (exit status and stderr of the
console entry), and an int16 scan with ``scl_slope``/``scl_inter`` must run
and give the same maps as the same values stored as float32.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nb
import numpy as np
import pytest

from ctp_nipype.cli import bids_app, compare, convert, evaluate, finetune, train
from ctp_nipype.cli import perfusion as perfusion_cli
from ctp_nipype.cli import phantom as phantom_cli
from ctp_nipype.io import InputError
from ctp_nipype.sims.phantom import make_phantom

SCAN = "sub-01_ses-01_ctp.nii.gz"
FAST_PERFUSION = ["--method", "ssvd", "--no-guided-filter", "--nprocs", "1"]
FAST_BIDS = ["--methods", "ssvd", "--no-guided-filter", "--nprocs", "1"]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size="small", seed=0)


# ---------------------------------------------------------------------------------------------
# writing inputs


def save_scan(path, data, affine, frame_times=None, dtype=None, sidecar=None):
    """A NIfTI with time in seconds (pixdim[4] 1 s) and, unless ``sidecar`` is False, FrameTimesStart."""
    data = np.asarray(data)
    img = nb.Nifti1Image(data, affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.save(img, str(path))
    side = path.with_name(path.name.replace(".nii.gz", ".json").replace(".nii", ".json"))
    if sidecar is None and frame_times is not None:
        sidecar = {"FrameTimesStart": [float(t) for t in frame_times]}
    if sidecar:
        side.write_text(json.dumps(sidecar))
    return path


def good_scan(folder, ph, name=SCAN, **kwargs):
    return save_scan(Path(folder) / name, ph.hu, ph.affine, ph.frame_times, **kwargs)


def bids_dataset(root, ph, scan_data=None, name="sub-01_ses-01_ctp.nii.gz"):
    """A one-scan BIDS dataset (ISLES'24 layout: the scan in the session folder)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bad inputs", "BIDSVersion": "1.10.0"}))
    data = ph.hu if scan_data is None else scan_data
    save_scan(root / "sub-01" / "ses-01" / name, data, ph.affine, ph.frame_times)
    return root


def curve_tsv(path, text):
    path = Path(path)
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def aif_text(ph, n=None, column="aif", value=None):
    n = ph.frame_times.size if n is None else n
    rows = [f"{value if value is not None else 40 + 300 * np.exp(-0.5 * ((i - 15) / 3) ** 2)}" for i in range(n)]
    return f"{column}\n" + "\n".join(rows) + "\n"


def mask_file(path, shape, affine, value=1):
    img = nb.Nifti1Image(np.full(shape, value, np.uint8), affine)
    nb.save(img, str(path))
    return path


def weights_files(folder):
    """Garbage, another network's, mismatched and pickled weights files."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ctp_nipype.nn.model import ModelConfig, PerfusionTransformer
    from ctp_nipype.nn.weights import save_weights

    folder = Path(folder)
    (folder / "garbage.safetensors").write_bytes(b"\x00" * 64 + b"this is not a weights file")
    save_file({"fc.weight": torch.zeros(3, 3)}, str(folder / "resnet.safetensors"))
    torch.manual_seed(0)
    small = PerfusionTransformer(ModelConfig(d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                                             dim_feedforward=16, n_time_frequencies=4))
    tmp = save_weights(small, folder / "small.safetensors")
    with safe_open(str(tmp), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta["config"] = json.dumps(ModelConfig().to_dict())  # metadata of the default network, tensors of the small one
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(folder / "mismatch.safetensors"),
              metadata=meta)
    tmp.unlink()
    tmp.with_suffix(".json").unlink()
    torch.save(small.state_dict(), folder / "pickled.pt")


# ---------------------------------------------------------------------------------------------
# the table


@dataclass
class Case:
    """A bad input: ``build(inp, tmp, ph)`` writes it under ``inp`` and returns the command's argv."""

    name: str
    prog: str  # a key of PROGRAMS
    build: Callable
    expect: str  # regular expression the error line must match
    needs: tuple = field(default_factory=tuple)  # "weights", "non-root", "sysfs"


def _p(name, build, expect, needs=()):
    return Case(name, "perfusion", build, expect, tuple(needs))


def _b(name, build, expect, needs=()):
    return Case(name, "bids", build, expect, tuple(needs))


def _x(prog):
    """Cases of the other command lines: ``_x("finetune")(name, build, expect)``."""

    def case(name, build, expect, needs=()):
        return Case(name, prog, build, expect, tuple(needs))

    return case


def _scan_with(data_fn=None, **kwargs):
    """A ctp-perfusion case on a scan whose data is ``data_fn(ph)``."""

    def build(inp, tmp, ph):
        data = ph.hu if data_fn is None else data_fn(ph)
        scan = save_scan(inp / SCAN, data, ph.affine, ph.frame_times, **kwargs)
        return [scan, tmp / "out"]

    return build


def _with_nan(ph):
    data = ph.hu.copy()
    data[10, 10, 1, 5] = np.nan
    return data


def _with_inf(ph):
    data = ph.hu.copy()
    data[3, 4, 0, 7] = -np.inf
    return data


def _sidecar(payload):
    def build(inp, tmp, ph):
        scan = save_scan(inp / SCAN, ph.hu, ph.affine, sidecar=False)
        (inp / "sub-01_ses-01_ctp.json").write_text(payload if isinstance(payload, str) else json.dumps(payload))
        return [scan, tmp / "out"]

    return build


def _no_timing(inp, tmp, ph):
    img = nb.Nifti1Image(ph.hu, ph.affine)  # xyzt units unknown: pixdim[4] is no timing source
    nb.save(img, str(inp / SCAN))
    return [inp / SCAN, tmp / "out"]


def _broken_file(kind):
    def build(inp, tmp, ph):
        good = good_scan(inp, ph)
        raw = good.read_bytes()
        if kind == "corrupt gzip":
            raw = raw[:100] + bytes(b ^ 0x5A for b in raw[100:400]) + raw[400:]
        elif kind == "truncated gzip":
            raw = raw[: len(raw) // 2]
        elif kind == "empty":
            raw = b""
        elif kind == "not gzip":
            raw = b"this is a text file, not a NIfTI\n" * 20
        good.write_bytes(raw)
        return [good, tmp / "out"]

    return build


def _truncated_nii(inp, tmp, ph):
    path = save_scan(inp / "sub-01_ses-01_ctp.nii", ph.hu, ph.affine, ph.frame_times)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return [path, tmp / "out"]


def _aif(text):
    def build(inp, tmp, ph):
        scan = good_scan(inp, ph)
        body = text(ph) if callable(text) else text
        return [scan, tmp / "out", "--aif", curve_tsv(inp / "aif.tsv", body)]

    return build


def _mask(shape=None, affine=None, value=1):
    def build(inp, tmp, ph):
        scan = good_scan(inp, ph)
        m = mask_file(inp / "mask.nii.gz", shape or ph.hu.shape[:3], ph.affine if affine is None else affine(ph), value)
        return [scan, tmp / "out", "--mask", m]

    return build


def _in_dataset(out, work=None):
    def build(inp, tmp, ph):
        root = bids_dataset(inp / "ds", ph)
        argv = [root / "sub-01" / "ses-01" / SCAN, out(root, tmp)]
        if work is not None:
            argv += ["-w", work(root, tmp)]
        return argv

    return build


def _output_is_a_file(prog):
    def build(inp, tmp, ph):
        (tmp / "out").write_text("I am a file")
        if prog == "perfusion":
            return [good_scan(inp, ph), tmp / "out"]
        return [bids_dataset(inp, ph), tmp / "out", "participant", "-w", tmp / "work"]

    return build


def _read_only_output(prog):
    def build(inp, tmp, ph):
        out = tmp / "out"
        out.mkdir()
        out.chmod(0o500)
        try:
            (out / "probe").write_text("x")
        except OSError:
            pass
        else:
            (out / "probe").unlink()
            out.chmod(0o700)
            # as root, chmod blocks nothing: an existing folder of sysfs refuses new files even to root
            out = Path("/sys/kernel")
            try:
                tempfile.NamedTemporaryFile(dir=out).close()
            except OSError:
                pass
            else:
                pytest.skip("chmod does not block writes here and /sys/kernel is writable: no unwritable folder")
        if prog == "perfusion":
            return [good_scan(inp, ph), out]
        return [bids_dataset(inp, ph), out, "participant", "-w", tmp / "work"]

    return build


def _uncreatable_output(prog):
    def build(inp, tmp, ph):
        out = Path("/sys/ctp_nipype_test_output")  # sysfs refuses new folders, even to root
        try:
            out.mkdir()
        except OSError:
            pass
        else:
            out.rmdir()
            pytest.skip("/sys accepts new folders here")
        if not Path("/sys").is_dir():
            pytest.skip("no /sys on this system")
        if prog == "perfusion":
            return [good_scan(inp, ph), out]
        return [bids_dataset(inp, ph), out, "participant", "-w", tmp / "work"]

    return build


def _weights(prog, file_name):
    def build(inp, tmp, ph):
        weights_files(inp)
        if prog == "perfusion":
            return [good_scan(inp, ph), tmp / "out", "--method", "transformer", "--weights", inp / file_name]
        root = bids_dataset(inp / "ds", ph)
        return [root, tmp / "out", "participant", "-w", tmp / "work", "--methods", "transformer",
                "--weights", inp / file_name]

    return build


def _bids(extra=(), dataset=None, out=None, work=None):
    """A ctp-bids-app participant-level case; ``dataset(inp, ph)`` builds the dataset (default: one good scan),
    ``out(root, tmp)`` and ``work(root, tmp)`` place the output and work folders (default beside ``inp``)."""

    def build(inp, tmp, ph):
        root = (dataset or bids_dataset)(inp, ph)
        out_dir = tmp / "out" if out is None else out(root, tmp)
        work_dir = tmp / "work" if work is None else work(root, tmp)
        return [root, out_dir, "participant", "-w", work_dir, *extra]

    return build


def _world_writable(folder):
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def _bids_sidecar(payload):
    def dataset(inp, ph):
        root = bids_dataset(inp, ph)
        (root / "sub-01" / "ses-01" / "sub-01_ses-01_ctp.json").write_text(json.dumps(payload))
        return root

    return dataset


def _broken_annex(inp, ph):
    """The scan as git-annex leaves it before ``git annex get``: a link into .git/annex/objects that is not there."""
    root = bids_dataset(inp, ph)
    scan = root / "sub-01" / "ses-01" / SCAN
    scan.unlink()
    scan.symlink_to("../../.git/annex/objects/Xk/7Q/MD5E-s1--0.nii.gz/MD5E-s1--0.nii.gz")
    return root


def _empty_dataset(inp, ph):
    (inp / "dataset_description.json").write_text(json.dumps({"Name": "empty", "BIDSVersion": "1.10.0"}))
    (inp / "README").write_text("nothing here yet\n")
    return inp


def _no_description(inp, ph):
    good_scan(inp / "sub-01" / "ses-01", ph)
    return inp


def _broken_description(inp, ph):
    root = bids_dataset(inp, ph)
    (root / "dataset_description.json").write_text('{"Name": "broken", ')
    return root


def _bids_scan(data_fn=None, corrupt=False):
    def dataset(inp, ph):
        root = bids_dataset(inp, ph, None if data_fn is None else data_fn(ph))
        if corrupt:
            scan = root / "sub-01" / "ses-01" / SCAN
            raw = scan.read_bytes()
            scan.write_bytes(raw[: len(raw) // 3])
        return root

    return dataset


def _timing(sidecar=None, pixdim=None, extra=()):
    """A ctp-perfusion case on the good scan with its timing replaced: a sidecar dict and/or pixdim[4] (s)."""

    def build(inp, tmp, ph):
        img = nb.Nifti1Image(ph.hu, ph.affine)
        img.header.set_xyzt_units("mm", "sec")
        if pixdim is not None:
            img.header["pixdim"][4] = pixdim
        nb.save(img, str(inp / SCAN))
        if sidecar is not None:
            (inp / "sub-01_ses-01_ctp.json").write_text(json.dumps(sidecar))
        return [inp / SCAN, tmp / "out", *extra]

    return build


def _zero_affine(inp, tmp, ph):
    img = nb.Nifti1Image(ph.hu, ph.affine)
    img.set_sform(np.zeros((4, 4)), code=1)  # what a broken converter writes: sform all zero, no qform
    img.set_qform(None, code=0)
    img.header.set_xyzt_units("mm", "sec")
    nb.save(img, str(inp / SCAN))
    (inp / "sub-01_ses-01_ctp.json").write_text(json.dumps({"FrameTimesStart": ph.frame_times.tolist()}))
    return [inp / SCAN, tmp / "out"]


def _rgb(inp, tmp, ph):
    rgb = np.zeros(ph.hu.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nb.save(nb.Nifti1Image(rgb, ph.affine), str(inp / SCAN))
    (inp / "sub-01_ses-01_ctp.json").write_text(json.dumps({"FrameTimesStart": ph.frame_times.tolist()}))
    return [inp / SCAN, tmp / "out"]


def _finetune(extra=(), out=None, weights=None):
    """A ctp-finetune case on the good scan and a good AIF; ``out(inp, tmp)`` places --out."""

    def build(inp, tmp, ph):
        scan = good_scan(inp, ph)
        aif = curve_tsv(inp / "aif.tsv", aif_text(ph))
        argv = ["--scan", scan, "--aif", aif, "--out", tmp / "tuned" if out is None else out(inp, tmp),
                "--steps", "1", *extra]
        if weights is not None:
            weights_files(inp)
            argv += ["--weights", weights(inp)]
        return argv

    return build


def _finetune_ms_aif(inp, tmp, ph):
    rows = "".join(f"{1000 * t:g}\t{40 + i}\n" for i, t in enumerate(ph.frame_times))
    aif = curve_tsv(inp / "ms.tsv", "time\taif\n" + rows)
    return ["--scan", good_scan(inp, ph), "--aif", aif, "--out", tmp / "tuned", "--steps", "1"]


def _in_finetune_dataset(inp, tmp, ph):
    root = bids_dataset(inp / "ds", ph)
    scan = root / "sub-01" / "ses-01" / SCAN
    aif = curve_tsv(inp / "aif.tsv", aif_text(ph))
    return ["--scan", scan, "--aif", aif, "--out", root / "derivatives" / "tuned", "--steps", "1"]


def _resume_pickle(inp, tmp, ph):
    import torch

    run = tmp / "run"
    (run / "stage1").mkdir(parents=True)  # the cpu recipe trains in stages
    torch.save({"model": {}}, run / "stage1" / "checkpoint.pt")  # an old, pickled checkpoint: never loaded
    (run / "stage1" / "log.tsv").write_text("step\n")
    return ["--recipe", "cpu", "--out", run, "--resume", "--no-progress", "--max-steps", "1"]


def _resume_fake_safetensors(inp, tmp, ph):
    run = tmp / "run"
    (run / "stage1").mkdir(parents=True)
    (run / "stage1" / "checkpoint.safetensors").write_bytes(b"\x80\x04\x95 a pickle renamed")
    (run / "stage1" / "log.tsv").write_text("step\n")
    return ["--recipe", "cpu", "--out", run, "--resume", "--no-progress", "--max-steps", "1"]


def _unwritable(build_argv):
    """A case whose output folder is read-only (as _read_only_output); ``build_argv(out, inp, tmp, ph)``."""

    def build(inp, tmp, ph):
        out = _read_only_output("perfusion")(inp, tmp, ph)[1]
        return build_argv(out, inp, tmp, ph)

    return build


_FINETUNE = _x("finetune")
_TRAIN = _x("train")
_EVALUATE = _x("evaluate")
_PHANTOM = _x("phantom")
_CONVERT = _x("convert")


def _dicom_series(edit=None, **options):
    """The phantom as a DICOM folder under ``inp`` (``edit(folder)`` then spoils it); argv of ctp-convert."""

    def build(inp, tmp, ph):
        from ctp_nipype.sims.dicom_phantom import write_dicom_series

        folder = inp / "dicom"
        write_dicom_series(ph.hu[..., :12], ph.affine, folder, frame_times=ph.frame_times[:12], **options)
        if edit is not None:
            edit(folder)
        return [folder, tmp / "bids", "--participant-label", "01"]

    return build


def _copy_first_image(folder):
    import shutil

    shutil.copyfile(folder / "IM00001.dcm", folder / "copy.dcm")
#: --device cuda where torch sees no GPU: refused before any work (skipped on a machine with a GPU)
NO_GPU = ("no-gpu",)

CASES = [
    # -- the scan itself
    _p("3D image", _scan_with(lambda ph: ph.hu[..., 0]), r"has 3 dimensions .*a 4D \(x, y, z, time\) series is needed"),
    _p("5D image", _scan_with(lambda ph: ph.hu[..., None]), r"has 5 dimensions"),
    _p("fewer than 10 frames", _scan_with(lambda ph: ph.hu[..., :8], sidecar=False),
       r"has 8 frames; at least 10 are needed"),
    _p("NaN voxel", _scan_with(_with_nan), r"contains 1 NaN or infinite values; replace them"),
    _p("infinite voxel", _scan_with(_with_inf), r"contains 1 NaN or infinite values"),
    _p("all-zero scan", _scan_with(lambda ph: np.zeros_like(ph.hu)), r"same value in every frame.*no contrast bolus"),
    _p("constant scan (no bolus)", _scan_with(lambda ph: np.repeat(ph.hu[..., :1], ph.hu.shape[3], axis=3)),
       r"same value in every frame.*check that it is the perfusion series"),
    _p("values outside the HU range", _scan_with(lambda ph: np.where(ph.labels[..., None] == 8, 9e4, ph.hu)),
       r"outside the plausible HU range.*Convert the scan to HU"),
    _p("stored values without rescale (not HU)", _scan_with(lambda ph: ph.hu + 2000),
       r"does not look like Hounsfield units.*RescaleSlope"),
    _p("missing scan", lambda inp, tmp, ph: [inp / "nothing_ctp.nii.gz", tmp / "out"], r"input scan .* does not exist"),
    _p("corrupt gzip", _broken_file("corrupt gzip"), r"cannot be read as NIfTI.*not truncated"),
    _p("truncated .nii.gz", _broken_file("truncated gzip"), r"cannot be read as NIfTI"),
    _p("truncated .nii", _truncated_nii, r"cannot be read as NIfTI"),
    _p("empty file", _broken_file("empty"), r"cannot be read as NIfTI"),
    _p("text file named .nii.gz", _broken_file("not gzip"), r"cannot be read as NIfTI"),
    # -- timing
    _p("no timing at all", _no_timing, r"No frame timing found.*FrameTimesStart.*RepetitionTime.*pixdim.*--frame-interval"),
    _p("non-monotonic frame times", _sidecar({"FrameTimesStart": [0, 1, 2, 1.5] + list(range(4, 60))}),
       r"not strictly increasing \(frame 3 at 1.5 s follows 2.0 s\)"),
    _p("negative frame times", _sidecar({"FrameTimesStart": list(range(-5, 55))}), r"negative times"),
    _p("frame times of another length", _sidecar({"FrameTimesStart": list(range(59))}),
       r"has 59 values but the scan has 60 frames"),
    _p("RepetitionTime zero", _sidecar({"RepetitionTime": 0}), r"RepetitionTime must be a positive number"),
    _p("sidecar not JSON", _sidecar('{"FrameTimesStart": [0, 1,'), r"is not valid JSON.*fix or remove"),
    _p("sidecar a JSON list", _sidecar([0, 1, 2]), r"holds a JSON list, not an object"),
    # -- user curves and masks
    _p("AIF of the wrong length", _aif(lambda ph: aif_text(ph, n=30)), r"has 30 rows but the scan has 60 frames"),
    _p("AIF without the aif column", _aif(lambda ph: aif_text(ph, column="artery")),
       r"no 'aif' column \(columns: artery\)"),
    _p("AIF with text", _aif(lambda ph: aif_text(ph, value="high")), r"Line 2 of .* no number in column 'aif'"),
    _p("AIF with NaN", _aif(lambda ph: aif_text(ph, value="nan")), r"'aif' column .* NaN or infinite"),
    _p("AIF that is binary", _aif(b"\xff\xfe\x00\x89PNG\x00\x00"), r"not a tab-separated text file"),
    _p("AIF empty", _aif(""), r"is empty; it needs a header row"),
    _p("mask of another shape", _mask(shape=(60, 60, 3)), r"has shape \(60, 60, 3\) but the scan has \(60, 60, 4\)"),
    _p("mask of another affine", _mask(affine=lambda ph: ph.affine @ np.diag([2.0, 2.0, 1.0, 1.0])),
       r"another grid than the scan.*resample it"),
    _p("empty mask", _mask(value=0), r"brain mask .* is empty"),
    # -- options
    _p("threshold out of range", lambda inp, tmp, ph: [good_scan(inp, ph), tmp / "out", "--threshold", "1.5"],
       r"--threshold 1.5 is out of range"),
    _p("baseline frames beyond the scan", lambda inp, tmp, ph: [good_scan(inp, ph), tmp / "out",
       "--baseline-frames", "60"], r"--baseline-frames 60 leaves no frame"),
    # -- where the output goes
    _p("output folder inside the input dataset", _in_dataset(lambda root, tmp: root / "derivatives" / "ctp"),
       r"output folder .* lies inside the input dataset"),
    _p("work folder inside the input dataset", _in_dataset(lambda root, tmp: tmp / "out",
       lambda root, tmp: root / "work"), r"work folder \(-w\) .* lies inside the input dataset"),
    _p("output folder is a file", _output_is_a_file("perfusion"), r"is a file, not a folder"),
    _p("unwritable output folder", _read_only_output("perfusion"), r"is not writable"),
    _p("output folder that cannot be created", _uncreatable_output("perfusion"), r"cannot be created"),
    # -- weights
    _p("weights: garbage", _weights("perfusion", "garbage.safetensors"), r"cannot be read as safetensors weights"),
    _p("weights: another network", _weights("perfusion", "resnet.safetensors"),
       r"does not hold ctp_nipype PerfusionTransformer weights"),
    _p("weights: mismatched architecture", _weights("perfusion", "mismatch.safetensors"),
       r"does not match the network"),
    _p("weights: pickle", _weights("perfusion", "pickled.pt"), r"not a \.safetensors file.*no pickle"),
    _p("weights: missing", _weights("perfusion", "absent.safetensors"), r"weights file .* does not exist"),
    # -- ctp-bids-app
    _b("BIDS: dataset folder missing", lambda inp, tmp, ph: [inp / "nowhere", tmp / "out", "participant"],
       r"does not exist|no dataset_description"),
    _b("BIDS: empty dataset", _bids(dataset=_empty_dataset), r"No CTP scan found"),
    _b("BIDS: no dataset_description.json", _bids(dataset=_no_description), r"no dataset_description.json"),
    _b("BIDS: broken dataset_description.json", _bids(dataset=_broken_description), r"is not valid JSON"),
    _b("BIDS: unknown participant", _bids(["--participant-label", "99"]), r"Participant\(s\) 99 not found.*available: 01"),
    _b("BIDS: unknown session", _bids(["--session-label", "07"]), r"No CTP scan with session\(s\) 07.*available: 01"),
    _b("BIDS: hematocrit factor out of range", _bids(["--kappa-h", "2"]), r"--kappa-h 2.0 is out of range"),
    _b("BIDS: output inside the dataset", _bids(out=lambda root, tmp: root / "derivatives" / "ctp"),
       r"output folder .* lies inside the input dataset"),
    _b("BIDS: output containing the dataset", _bids(out=lambda root, tmp: root.parent),
       r"output folder .* contains the input dataset"),
    _b("BIDS: work folder inside the dataset", _bids(work=lambda root, tmp: root / "work"),
       r"work folder \(-w\) .* lies inside the input dataset"),
    _b("BIDS: output folder is a file", _output_is_a_file("bids"), r"is a file, not a folder"),
    _b("BIDS: unwritable output folder", _read_only_output("bids"), r"is not writable"),
    _b("BIDS: output folder that cannot be created", _uncreatable_output("bids"), r"cannot be created"),
    _b("BIDS: corrupt weights", _weights("bids", "garbage.safetensors"), r"cannot be read as safetensors weights"),
    _b("BIDS: weights of another network", _weights("bids", "mismatch.safetensors"), r"does not match the network"),
    # a bad scan found while the workflow runs: the failed step, its error and the crash report, in one line
    _b("BIDS: truncated scan (fails in the workflow)", _bids(dataset=_bids_scan(corrupt=True)),
       r"step '.*load' failed: InputError: The CTP scan .* cannot be read as NIfTI.*Crash report: "),
    # a header that is refused (here: 3D) is found before the run, from the header alone
    # -- units and timing (rules of ctp_nipype.perfusion.timing)
    _p("RepetitionTime in milliseconds", _timing({"RepetitionTime": 1200}),
       r"look like milliseconds.*RepetitionTime in seconds \(1\.2\)"),
    _p("FrameTimesStart in milliseconds", _timing({"FrameTimesStart": [1200.0 * i for i in range(60)]}),
       r"look like milliseconds.*divide every value of the sidecar's FrameTimesStart by 1000"),
    _p("pixdim[4] of 1200 with unit seconds", _timing(pixdim=1200.0),
       r"look like milliseconds.*set_xyzt_units\(t='msec'\)"),
    _p("one corrupt frame time", _timing({"FrameTimesStart": [1.0 * i for i in range(59)] + [6000.0]}),
       r"frame 59 at 6000 s follows frame 58 at 58 s.*corrupt frame time"),
    _p("a scan of 20 minutes", _timing({"RepetitionTime": 20.0}),
       r"more than a CT perfusion series.*--allow-long-frames"),
    _p("--frame-interval contradicting the sidecar", _timing({"RepetitionTime": 1.0}, extra=["--frame-interval", "2"]),
       r"--frame-interval 2 contradicts the scan's own timing \(sidecar RepetitionTime: 1 s per frame\)"),
    _p("--frame-interval in milliseconds", _timing(extra=["--frame-interval", "1000"]),
       r"--frame-interval 1000 s is longer than a CT perfusion frame.*--frame-interval 1\b"),
    _p("AIF time column in milliseconds",
       _aif(lambda ph: "time\taif\n" + "".join(f"{1000 * t:g}\t{40 + 300 * np.exp(-0.5 * ((i - 15) / 3) ** 2)}\n"
                                                for i, t in enumerate(ph.frame_times))),
       r"'time' column of .* look like milliseconds.*divide the 'time' column by 1000 \(the curve itself is fine\)"),
    _p("RGB24 image", _rgb, r"stores RGB colour values, not Hounsfield units"),
    _p("all-zero affine", _zero_affine,
       r"has no usable geometry: its affine .* singular"),
    # -- options checked before any work
    _p("--weights is a folder", lambda inp, tmp, ph: [good_scan(inp, ph), tmp / "out", "--method", "transformer",
                                                      "--weights", inp], r"--weights .* is a folder"),
    _p("--plugin-args n_procs=abc", lambda inp, tmp, ph: [good_scan(inp, ph), tmp / "out", "--plugin-args",
                                                          "n_procs=abc"], r"--plugin-args n_procs='abc' is not a number"),
    _p("--device cuda without a GPU", lambda inp, tmp, ph: [good_scan(inp, ph), tmp / "out", "--method",
                                                           "transformer", "--device", "cuda"],
       r"--device cuda asks for a CUDA GPU, but torch sees none", NO_GPU),
    _b("BIDS: --device cuda without a GPU", _bids(["--methods", "transformer", "--device", "cuda"]),
       r"--device cuda asks for a CUDA GPU", NO_GPU),
    _b("BIDS: --plugin-args n_procs=abc", _bids(["--plugin-args", "n_procs=abc"]), r"n_procs='abc' is not a number"),
    _b("BIDS: work folder writable by others", _bids(work=lambda root, tmp: _world_writable(tmp / "work")),
       r"work folder \(-w\) .* is writable by others .*chmod go-w"),
    _b("BIDS: one scan in milliseconds", _bids(dataset=_bids_sidecar({"RepetitionTime": 1000})),
       r"look like milliseconds"),
    _b("BIDS: a broken git-annex link", _bids(dataset=_broken_annex), r"broken symbolic link.*git annex get"),
    # -- ctp-finetune
    _FINETUNE("finetune: --out inside the input dataset", _in_finetune_dataset,
              r"output folder .* lies inside the input dataset"),
    _FINETUNE("finetune: --batch-size 0", _finetune(["--batch-size", "0"]), r"--batch-size 0 is out of range"),
    _FINETUNE("finetune: read-only --out", _unwritable(lambda out, inp, tmp, ph: _finetune(out=lambda i, t: out)(
        inp, tmp, ph)), r"is not writable"),
    _FINETUNE("finetune: --weights is a folder", _finetune(weights=lambda inp: inp), r"--weights .* is a folder"),
    _FINETUNE("finetune: pickled weights", _finetune(weights=lambda inp: inp / "pickled.pt"),
              r"not a \.safetensors file.*no pickle"),
    _FINETUNE("finetune: missing scan", lambda inp, tmp, ph: ["--scan", inp / "none.nii.gz", "--aif", inp / "a.tsv",
                                                              "--out", tmp / "tuned"], r"scan .* does not exist"),
    _FINETUNE("finetune: AIF in milliseconds", _finetune_ms_aif, r"look like milliseconds"),
    # -- ctp-train
    _TRAIN("train: --resume from a pickled checkpoint.pt", _resume_pickle,
           r"checkpoint.pt was written by an older ctp-train as a pickle.*--init-weights"),
    _TRAIN("train: --resume from a pickle named .safetensors", _resume_fake_safetensors,
           r"cannot be read as a safetensors checkpoint"),
    _TRAIN("train: --init-weights a pickle", lambda inp, tmp, ph: (weights_files(inp), [
        "--out", tmp / "run", "--init-weights", inp / "pickled.pt", "--max-steps", "1"])[1],
           r"not a \.safetensors file.*no pickle"),
    _TRAIN("train: --threads 0", lambda inp, tmp, ph: ["--out", tmp / "run", "--threads", "0"],
           r"--threads 0 is out of range"),
    _TRAIN("train: --device cuda without a GPU", lambda inp, tmp, ph: ["--out", tmp / "run", "--device", "cuda"],
           r"--device cuda asks for a CUDA GPU", NO_GPU),
    _TRAIN("train: unknown recipe", lambda inp, tmp, ph: ["--out", tmp / "run", "--recipe", "nonesuch"],
           r"nonesuch"),
    # -- ctp-evaluate
    _EVALUATE("evaluate: pickled weights", lambda inp, tmp, ph: (weights_files(inp), [
        tmp / "ev", "--methods", "transformer", "--weights", inp / "pickled.pt", "--n-curves", "11"])[1],
              r"not a \.safetensors file.*no pickle"),
    _EVALUATE("evaluate: a pickle named .safetensors", lambda inp, tmp, ph: (
        curve_tsv(inp / "w.safetensors", b"\x80\x04\x95 pickle"), [
            tmp / "ev", "--methods", "transformer", "--weights", inp / "w.safetensors", "--n-curves", "11"])[1],
              r"cannot be read as safetensors weights"),
    _EVALUATE("evaluate: --weights is a folder", lambda inp, tmp, ph: [
        tmp / "ev", "--methods", "transformer", "--weights", inp, "--n-curves", "11"], r"--weights .* is a folder"),
    _EVALUATE("evaluate: --device cuda without a GPU", lambda inp, tmp, ph: [
        tmp / "ev", "--methods", "transformer", "--device", "cuda", "--n-curves", "11"],
              r"--device cuda asks for a CUDA GPU", NO_GPU),
    _EVALUATE("evaluate: unknown test set", lambda inp, tmp, ph: [tmp / "ev", "--sets", "9"], r"Unknown test set"),
    _EVALUATE("evaluate: read-only output", _unwritable(lambda out, inp, tmp, ph: [out, "--n-curves", "11"]),
              r"is not writable"),
    # -- ctp-phantom
    _PHANTOM("phantom: --subjects 0", lambda inp, tmp, ph: [tmp / "ph", "--subjects", "0"],
             r"--subjects 0 is out of range"),
    _PHANTOM("phantom: --noise-sd -1", lambda inp, tmp, ph: [tmp / "ph", "--noise-sd", "-1"],
             r"--noise-sd -1.0 is out of range"),
    _PHANTOM("phantom: output is a file", lambda inp, tmp, ph: ((tmp / "ph").write_text("x"), [tmp / "ph"])[1],
             r"is a file, not a folder"),
    # -- ctp-compare and ctp-convert (an ISLES layout)
    _x("compare")("compare: our derivatives missing", lambda inp, tmp, ph: [
        inp / "nowhere", inp, tmp / "cmp"], r"nowhere"),
    _CONVERT("convert: ISLES source folder missing", lambda inp, tmp, ph: [
        "isles2018", inp / "nowhere", tmp / "bids"], r"nowhere"),
    _b("BIDS: 3D scan (refused before the run)", _bids(dataset=_bids_scan(lambda ph: ph.hu[..., 0])),
       r"The CTP scan .* has 3 dimensions"),
    # -- ctp-convert (DICOM)
    _CONVERT("convert: no DICOM", lambda inp, tmp, ph: (curve_tsv(inp / "a.txt", "text"), [
        inp, tmp / "bids", "--participant-label", "01"])[1], r"No DICOM file found in"),
    _CONVERT("convert: missing timing tags", _dicom_series(time_tag=None), r"has no acquisition time.*Re-export"),
    _CONVERT("convert: duplicated instance", _dicom_series(_copy_first_image), r"Duplicated instance.*remove one"),
    _CONVERT("convert: bad participant label", lambda inp, tmp, ph: (curve_tsv(inp / "a.txt", "text"), [
        inp, tmp / "bids", "--participant-label", "0 1"])[1], r"not a BIDS label"),
]


def checksums(folder):
    """``{relative path: sha256}`` of every file below ``folder``, and every folder (value None)."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


#: each command line's ``main`` and the name its error lines start with
PROGRAMS = {
    "perfusion": (perfusion_cli.main, "ctp-perfusion"),
    "bids": (bids_app.main, "ctp-bids-app"),
    "finetune": (finetune.main, "ctp-finetune"),
    "train": (train.main, "ctp-train"),
    "evaluate": (evaluate.main, "ctp-evaluate"),
    "phantom": (phantom_cli.main, "ctp-phantom"),
    "compare": (compare.main, "ctp-compare"),
    "convert": (convert.main, "ctp-convert"),
}


def _main(prog):
    return PROGRAMS[prog][0]


def _argv(case, argv):
    argv = [str(a) for a in argv]
    if case.prog not in ("perfusion", "bids"):
        return argv
    if case.prog == "perfusion" and "--method" not in argv:
        argv += FAST_PERFUSION
    elif case.prog == "bids" and "--methods" not in argv:
        argv += FAST_BIDS
    elif case.prog == "bids":
        argv += ["--no-guided-filter", "--nprocs", "1"]
    return argv


def _prepare(case, tmp_path, ph):
    inp = tmp_path / "in"
    inp.mkdir()
    argv = _argv(case, case.build(inp, tmp_path, ph))
    return inp, argv


def check_error_line(err, prog, expect):
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith(f"{PROGRAMS[prog][1]}: error: "), lines[0]
    assert re.search(expect, lines[0]), f"{expect!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_line_and_leaves_the_input_alone(case, tmp_path, phantom, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "no-gpu" in case.needs:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible here: --device cuda is valid")
    inp, argv = _prepare(case, tmp_path, phantom)
    before = checksums(inp)
    code = _main(case.prog)(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    check_error_line(err, case.prog, case.expect)
    assert checksums(inp) == before, "the input folder changed"
    for folder in (tmp_path / "out", Path("/sys/ctp_nipype_test_output")):  # nothing half-made when refused early
        if folder.is_dir() and "workflow" not in case.name:
            assert not [p for p in folder.rglob("*") if "_desc-" in p.name]


def test_at_least_twenty_kinds_and_every_command():
    assert len(CASES) >= 20
    assert {c.prog for c in CASES} == set(PROGRAMS)
    assert len({c.name for c in CASES}) == len(CASES)


SUBPROCESS_CASES = ["3D image", "corrupt gzip", "AIF with text", "BIDS: empty dataset",
                    "BIDS: truncated scan (fails in the workflow)"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_process_exit_code_and_stderr(name, tmp_path, phantom):
    case = next(c for c in CASES if c.name == name)
    inp, argv = _prepare(case, tmp_path, phantom)
    before = checksums(inp)
    module = "ctp_nipype.cli.perfusion" if case.prog == "perfusion" else "ctp_nipype.cli.bids_app"
    # run from inside the input folder: not even the current directory may be written to
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=inp, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    check_error_line(proc.stderr, case.prog, case.expect)
    assert checksums(inp) == before


def test_debug_shows_the_traceback(tmp_path, phantom):
    case = next(c for c in CASES if c.name == "3D image")
    inp, argv = _prepare(case, tmp_path, phantom)
    with pytest.raises(InputError, match="has 3 dimensions"):
        perfusion_cli.main(argv + ["--debug"])
    proc = subprocess.run([sys.executable, "-m", "ctp_nipype.cli.perfusion", *argv, "--debug"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr


# ---------------------------------------------------------------------------------------------
# a scan stored as int16 with scl_slope / scl_inter is valid


def test_int16_scan_with_scaling_runs_like_the_float_scan(tmp_path, phantom, capsys):
    slope, inter = 0.5, -1024.0
    stored = np.round((phantom.hu - inter) / slope).astype(np.int16)
    inp = tmp_path / "in"
    img = nb.Nifti1Image(stored, phantom.affine)
    img.header.set_slope_inter(slope, inter)
    img.header.set_xyzt_units("mm", "sec")
    int_scan = inp / "int16_ctp.nii.gz"
    inp.mkdir()
    nb.save(img, str(int_scan))
    (inp / "int16_ctp.json").write_text(json.dumps({"FrameTimesStart": phantom.frame_times.tolist()}))
    on_disk = nb.load(int_scan)
    assert on_disk.get_data_dtype() == np.int16 and on_disk.dataobj.slope == slope
    hu = np.asarray(on_disk.dataobj, dtype=np.float32)  # what the scan means: slope * stored + inter
    np.testing.assert_allclose(hu, phantom.hu, atol=slope / 2 + 1e-3)
    float_scan = save_scan(inp / "float32_ctp.nii.gz", hu, phantom.affine, phantom.frame_times)
    before = checksums(inp)

    assert perfusion_cli.main([str(int_scan), str(tmp_path / "out_int"), *FAST_PERFUSION]) == 0
    assert perfusion_cli.main([str(float_scan), str(tmp_path / "out_float"), *FAST_PERFUSION]) == 0
    assert "error" not in capsys.readouterr().err
    assert checksums(inp) == before
    for name in ("cbf", "cbv", "mtt", "tmax"):
        from_int = np.asarray(nb.load(tmp_path / "out_int" / f"int16_desc-ssvd_{name}.nii.gz").dataobj)
        from_float = np.asarray(nb.load(tmp_path / "out_float" / f"float32_desc-ssvd_{name}.nii.gz").dataobj)
        np.testing.assert_array_equal(from_int, from_float)
    cbf = np.asarray(nb.load(tmp_path / "out_int" / "int16_desc-ssvd_cbf.nii.gz").dataobj)
    grey = phantom.labels == 1
    assert 20 < np.median(cbf[grey]) < 150  # plausible grey-matter CBF: the scaling was applied
