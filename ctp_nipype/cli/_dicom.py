"""The DICOM options of the command lines: a DICOM folder as input, ``--dicom-out`` after the run."""

from __future__ import annotations

from pathlib import Path


def add_dicom_options(parser, source_option=True):
    """``--series-uid``, ``--dicom-out`` and (for a NIfTI input) ``--dicom-source``."""
    parser.add_argument("--series-uid", metavar="UID",
                        help="with a DICOM folder holding several perfusion series: the SeriesInstanceUID to use")
    parser.add_argument("--dicom-out", type=Path, metavar="DIR",
                        help="also write the results as DICOM for PACS (SEG masks, Parametric Maps, Secondary "
                        "Capture figures) into DIR, referencing the source study (they identify the patient)")
    if source_option:
        parser.add_argument("--dicom-source", type=Path, metavar="DICOM_DIR",
                            help="with --dicom-out and a NIfTI input: the DICOM series the NIfTI was converted from "
                            "(default: the input folder when the input is DICOM)")


def dicom_input(args):
    """``(in_file, prefix or None, keeper)``: a DICOM folder converted into the work folder, a NIfTI as it is.

    Checks the ``--dicom-out`` options before anything runs.
    """
    from ..io import InputError

    source = getattr(args, "dicom_source", None)
    if Path(args.in_file).is_dir():
        from ..bids import check_output_outside_input, find_dataset_root
        from ..dicom.convert import prepare_dicom_run

        if source is None:
            args.dicom_source = args.in_file
        dataset = find_dataset_root(Path(args.in_file) / "x")  # DICOM kept in a dataset's sourcedata/
        if dataset is not None:
            check_output_outside_input(args.out_dir, [dataset])
        in_file, prefix, keeper = prepare_dicom_run(args.in_file, args.out_dir, args.work_dir, args.series_uid)
        return in_file, prefix, keeper
    if args.dicom_out is not None and source is None:
        raise InputError(
            "--dicom-out needs the source DICOM series to reference: run on the DICOM folder itself, or give "
            "--dicom-source DICOM_DIR (the series the NIfTI was converted from)."
        )
    if source is not None:
        if not Path(source).is_dir():
            raise InputError(f"--dicom-source {source} is not a folder; give the folder of the source DICOM series.")
        check_source_matches(source, args.in_file, args.series_uid)
    return args.in_file, None, None


def check_source_matches(dicom_dir, nifti, series_uid=None):
    """The source series lies on the NIfTI's grid (checked before the run, not after it)."""
    import nibabel as nb

    from ..dicom.write import _check_overlap, source_slices

    try:
        img = nb.load(str(nifti))
    except Exception:  # noqa: BLE001 - the scan's own checks name the problem
        return
    _check_overlap(img.affine, img.shape, source_slices(dicom_dir, series_uid), Path(nifti).name)


def export_dicom_outputs(args, results_dir, prefix, methods=None):
    """Write the ``--dicom-out`` objects (when asked) and print what was written."""
    if getattr(args, "dicom_out", None) is None:
        return []
    from ..dicom.write import export_dicom

    written = export_dicom(results_dir, prefix, args.dicom_source, args.dicom_out, methods=methods,
                           series_uid=args.series_uid)
    print(f"DICOM for PACS: {len(written)} objects in {args.dicom_out} "
          f"({', '.join(sorted({p.name.split('_')[0] for p in written}))})")
    return written
