"""ISA-L gzip (ctp_nipype.fastgzip): nibabel's image reads go through it, and its files are ordinary gzip."""

import gzip

import nibabel as nb
import numpy as np
import pytest

from ctp_nipype import fastgzip
from ctp_nipype.io import write_nifti

pytestmark = pytest.mark.skipif(fastgzip.igzip is None, reason="isal is not installed")


def test_image_reads_go_through_isal(tmp_path):
    """nibabel's array proxies open files with ImageOpener, whose map is a copy of Opener's: both are registered."""
    path = tmp_path / "x.nii.gz"
    write_nifti(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4))
    proxy = nb.load(str(path)).dataobj
    with proxy._get_fileobj() as opener:
        assert isinstance(opener.fobj, fastgzip.igzip.IGzipFile)


def test_files_are_plain_gzip_both_ways(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 4, 3, 6)).astype(np.float32)
    ours = tmp_path / "ours.nii.gz"
    write_nifti(ours, data, np.eye(4))
    # read back with the standard library's gzip only
    plain = tmp_path / "plain.nii"
    plain.write_bytes(gzip.decompress(ours.read_bytes()))
    np.testing.assert_array_equal(np.asanyarray(nb.load(str(plain)).dataobj), data)
    # a file gzipped by the standard library reads through ISA-L
    theirs = tmp_path / "theirs.nii.gz"
    theirs.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(np.asanyarray(nb.load(str(theirs)).dataobj), data)
