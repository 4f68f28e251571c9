"""Workflow factories: plain options in, a Nipype workflow out (fMRIPrep's ``init_*_wf`` style).

Each workflow exposes an ``inputnode`` and an ``outputnode`` (identity
interfaces) as its interface, so that users can embed it in their own
workflows and connect to named fields.

Every interface of ctp_nipype writes a JSON sidecar next to each output file.
Nipype's ``remove_unnecessary_outputs`` clean-up deletes files that are not
declared outputs, so a workflow that needs the sidecars downstream sets
``workflow.config["execution"]["remove_unnecessary_outputs"] = False``
(:func:`init_ctp_wf` does).
"""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface, Merge
from nipype.pipeline import engine as pe

from ..interfaces.preprocessing import (
    BrainMask,
    CSFMask,
    GuidedFilter,
    LoadCTP,
    MotionCorrection,
    SelectAIFVOF,
    VesselMask,
)
from ..interfaces.slabs import JoinSlabs, SplitSlabs
from ..interfaces.svd import SVDDeconvolution
from ..perfusion.filtering import RADIUS_MM

from ..perfusion.constants import DEFAULT_METHODS, SVD_METHODS
from ..perfusion.constants import METHODS as ALL_METHODS

#: the maps each method writes (besides its 4D curves)
METHOD_MAPS = {m: ("cbf", "cbv", "mtt", "tmax") for m in SVD_METHODS}
METHOD_MAPS["transformer"] = ("cbf", "cbv", "mtt", "bad")


def check_methods(methods):
    """Validate a list of method names and return it as a tuple (order kept, duplicates dropped)."""
    methods = tuple(dict.fromkeys(str(m).lower() for m in methods))
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(
            f"Unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL_METHODS)}."
        )
    return methods


def init_ctp_preproc_wf(motion_correction=False, guided_filter=True, frame_interval=None,
                        guided_filter_radius_mm=RADIUS_MM, partial_volume_correction=True, allow_long_frames=False,
                        name="ctp_preproc_wf"):
    """Preprocessing of one CTP scan.

    Workflow graph: ``docs/workflows.md`` (``ctp_preproc_wf``), drawn from this factory by
    :mod:`ctp_nipype.workflows.graphs`. With motion correction, its motion TSV also goes to brain, csf,
    vessel and select_vessels: the frames it flags as displaced are left out of those four steps.

    Parameters
    ----------
    motion_correction : bool
        Rigid registration of every frame to the pre-bolus mean (SimpleITK).
    guided_filter : bool
        He et al.'s guided filter on every frame (eps 0.01, the paper's radius in mm), within the brain
        mask's bounding box (the values there are those of the whole-image filter; the rest is not used).
    frame_interval : float, optional
        Frame interval (s) used only when no other timing source exists.
    guided_filter_radius_mm : float
        The filter's in-plane radius in mm, rounded to voxels (default 1.88 mm: the
        paper's 2 voxels of 0.94 mm; 1 voxel on 1.9-4 mm grids).
    partial_volume_correction : bool
        Rescale the AIF (automatic or the user's) so that its first-pass area equals the VOF's
        (de la Rosa et al. 2021, as the paper does); ``False`` keeps the AIF as it is, e.g. a user AIF
        that is already corrected. The curves TSV's ``aif_corrected`` column is then the AIF itself.
    allow_long_frames : bool
        Accept frame intervals above 10 s and series above 10 minutes (otherwise refused as a
        likely unit mix-up: :func:`ctp_nipype.perfusion.timing.check_timing_units`).

    Inputs (``inputnode``)
    ----------------------
    in_file
        4D CTP NIfTI in HU.
    prefix
        File-name prefix of every output (``sub-01_ses-01``).
    brain_mask, aif_file, vof_file
        Optional user replacements of the automatic brain mask and AIF/VOF.

    Outputs (``outputnode``)
    ------------------------
    preproc_file
        The series to deconvolve (uniform grid, motion corrected and filtered as asked).
    series_file
        The series before filtering (for reports).
    brain_mask, csf_mask, vessel_mask
        3D masks.
    curves_file, curves_json, curves_png, vascular_dseg
        The global AIF/VOF curves TSV, its sidecar, its figure and the chosen voxels.
    motion_file
        Motion parameters TSV (only with motion correction).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        IdentityInterface(fields=["in_file", "prefix", "brain_mask", "aif_file", "vof_file"]), name="inputnode"
    )
    outputnode = pe.Node(
        IdentityInterface(
            fields=[
                "preproc_file",
                "series_file",
                "brain_mask",
                "csf_mask",
                "vessel_mask",
                "curves_file",
                "curves_json",
                "curves_png",
                "vascular_dseg",
                "motion_file",
            ]
        ),
        name="outputnode",
    )
    load = pe.Node(LoadCTP(warn_head_motion=not motion_correction, allow_long_frames=bool(allow_long_frames)),
                   name="load")
    brain = pe.Node(BrainMask(), name="brain_mask")
    csf = pe.Node(CSFMask(), name="csf_mask")
    vessel = pe.Node(VesselMask(), name="vessel_mask")
    select = pe.Node(SelectAIFVOF(correct_partial_volume=bool(partial_volume_correction)), name="select_vessels")
    if frame_interval is not None:
        load.inputs.frame_interval = frame_interval

    workflow.connect([
        (inputnode, load, [("in_file", "in_file"), ("prefix", "out_prefix")]),
        (inputnode, brain, [("brain_mask", "in_mask"), ("prefix", "out_prefix")]),
        (inputnode, csf, [("prefix", "out_prefix")]),
        (inputnode, vessel, [("prefix", "out_prefix")]),
        (inputnode, select, [("aif_file", "aif_file"), ("vof_file", "vof_file"), ("prefix", "out_prefix")]),
        (brain, csf, [("out_file", "brain_mask")]),
        (brain, vessel, [("out_file", "brain_mask")]),
        (csf, vessel, [("out_file", "csf_mask")]),
        (brain, select, [("out_file", "brain_mask")]),
        (csf, select, [("out_file", "exclude_mask")]),
        (brain, outputnode, [("out_file", "brain_mask")]),
        (csf, outputnode, [("out_file", "csf_mask")]),
        (vessel, outputnode, [("out_file", "vessel_mask")]),
        (select, outputnode, [
            ("out_file", "curves_file"),
            ("out_json", "curves_json"),
            ("out_png", "curves_png"),
            ("voxels_file", "vascular_dseg"),
        ]),
    ])  # fmt: skip

    if motion_correction:
        motion = pe.Node(MotionCorrection(), name="motion_correction")
        workflow.connect([
            (inputnode, motion, [("prefix", "out_prefix")]),
            (load, motion, [("out_file", "in_file")]),
            (motion, outputnode, [("motion_file", "motion_file")]),
        ])  # fmt: skip
        series, series_field = motion, "out_file"
        # frames the head was displaced in stay out of the masks and the AIF/VOF selection
        for node in (brain, csf, vessel, select):
            workflow.connect(motion, "motion_file", node, "motion_file")
    else:
        series, series_field = load, "out_file"

    for node in (brain, csf, vessel, select):
        workflow.connect(series, series_field, node, "in_file")
    workflow.connect(series, series_field, outputnode, "series_file")

    if guided_filter:
        gfilter = pe.Node(GuidedFilter(radius_mm=guided_filter_radius_mm), name="guided_filter")
        workflow.connect([
            (inputnode, gfilter, [("prefix", "out_prefix")]),
            (series, gfilter, [(series_field, "in_file")]),
            (brain, gfilter, [("out_file", "mask_file")]),  # filtered where the maps are made
            (gfilter, outputnode, [("out_file", "preproc_file")]),
        ])  # fmt: skip
    else:
        workflow.connect(series, series_field, outputnode, "preproc_file")
    return workflow


def init_perfusion_wf(methods=DEFAULT_METHODS, device="auto", weights=None, aif_column="aif_corrected",
                      method_options=None, n_slabs=0, n_procs=1, working_voxel_mm=None, name="perfusion_wf"):
    """Perfusion maps by each requested method, slab by slab.

    Workflow graph: ``docs/workflows.md`` (``perfusion_wf``), drawn from this factory by
    :mod:`ctp_nipype.workflows.graphs`.

    The series is cut into slabs of slices holding about as many brain voxels each
    (:class:`~ctp_nipype.interfaces.slabs.SplitSlabs`); every method runs on each slab as a separate job,
    which MultiProc runs in parallel and SLURM spreads over nodes, and the slabs are joined into whole-scan
    maps (:class:`~ctp_nipype.interfaces.slabs.JoinSlabs`) before any statistics. The maps do not depend on
    the split (tested).

    Parameters
    ----------
    methods : sequence of str
        Any of ``ssvd``, ``csvd``, ``osvd``, ``transformer``.
    device : str
        ``auto``, ``cpu`` or ``cuda`` for the network.
    weights : str, optional
        Network weights (.safetensors); default the shipped ones.
    aif_column : str
        Column of the curves TSV used as the AIF (``aif_corrected`` after partial-volume correction).
    method_options : dict, optional
        Inputs set on every method's interface when it has them (``kappa_h``, ``rho``,
        ``threshold``, ``oi_threshold``, ``n_baseline_frames``, ``frame_interval``,
        ``peak_interpolation``: Tmax's, and TTP's in :func:`init_ctp_wf`).
    n_slabs : int
        Slabs to cut the scan into; 0 (default): as the memory available asks, at least ``n_procs``.
    n_procs : int
        Processes that will run the slabs (at least this many slabs).
    working_voxel_mm : float, optional
        Bin the series in-plane to about this voxel size (mm) before deconvolution; the maps are written on
        the scan's grid (each brain voxel holds its block's value) and their sidecars say so (``WorkingGrid``).

    Inputs (``inputnode``): ``in_file`` (preprocessed 4D series), ``curves_file`` (AIF TSV),
    ``mask_file`` (brain mask), ``prefix``.

    Outputs (``outputnode``): ``<method>_maps`` (the maps and 4D curves of one method),
    ``<method>_cbf``, ``<method>_cbv`` and ``<method>_delay`` (Tmax or BAD), ``maps`` (all files, flattened),
    ``parameter_maps`` (the 3D maps only) and ``curve_maps`` (the 4D residues and local AIFs).
    """
    methods = check_methods(methods)
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["in_file", "curves_file", "mask_file", "prefix"]), name="inputnode")
    per_method = [f"{m}_{kind}" for m in methods for kind in ("maps", "cbf", "cbv", "delay")]
    outputnode = pe.Node(
        IdentityInterface(fields=["maps", "parameter_maps", "curve_maps"] + per_method), name="outputnode"
    )
    split = pe.Node(SplitSlabs(n_slabs=int(n_slabs or 0), n_procs=max(1, int(n_procs))), name="split_slabs")
    if working_voxel_mm is not None:
        split.inputs.working_voxel_mm = float(working_voxel_mm)
    sources = pe.Node(Merge(2), name="sources")
    workflow.connect([
        (inputnode, split, [("in_file", "in_file"), ("mask_file", "mask_file")]),
        (inputnode, sources, [("in_file", "in1"), ("curves_file", "in2")]),
    ])  # fmt: skip
    merge_all = pe.Node(Merge(len(methods)), name="merge_all")
    merge_parameters = pe.Node(Merge(len(methods)), name="merge_parameters")
    merge_curves = pe.Node(Merge(len(methods)), name="merge_curves")
    for index, method in enumerate(methods, start=1):
        maps = list(METHOD_MAPS[method]) + ["residue"]
        if method == "transformer":
            from ..interfaces.transformer import TransformerPerfusion  # torch only when asked for

            # a progress bar with the time left for each slab (the network's step takes minutes)
            node = pe.MapNode(TransformerPerfusion(device=device, progress=True), iterfield=["in_file", "mask_file"],
                              name="transformer")
            if weights:
                node.inputs.weights = weights
            maps.append("localaif")
        else:
            node = pe.MapNode(SVDDeconvolution(method=method), iterfield=["in_file", "mask_file"], name=method)
        # every method reads the same AIF column (a method without the input would silently use another)
        node.inputs.aif_column = aif_column
        accepted = set(node.inputs.copyable_trait_names())
        for key, value in dict(method_options or {}).items():
            if value is not None and key in accepted:
                setattr(node.inputs, key, value)
        merge = pe.Node(Merge(len(maps)), name=f"merge_{method}")
        parameters = pe.Node(Merge(len(METHOD_MAPS[method])), name=f"merge_{method}_parameters")
        curve_names = maps[len(METHOD_MAPS[method]):]
        curves = pe.Node(Merge(len(curve_names)), name=f"merge_{method}_curves")
        # the 3D maps and the 4D curves are joined by two steps side by side: the lesion masks and the
        # statistics need only the maps, which join in a second, while the curves take a few (a clinical
        # scan's residue is a gigabyte to write)
        joins = {}
        for suffix, names in (("", list(METHOD_MAPS[method])), ("_curves", curve_names)):
            slab_maps = pe.Node(Merge(len(names), no_flatten=True), name=f"slabs_{method}{suffix}")  # a list per map
            join = pe.Node(JoinSlabs(method=method), name=f"join_{method}{suffix}")
            for slot, map_name in enumerate(names, start=1):
                workflow.connect(node, map_name, slab_maps, f"in{slot}")
            workflow.connect([
                (slab_maps, join, [("out", "map_files")]),
                (split, join, [("plan_file", "plan_file")]),
                (inputnode, join, [("in_file", "template_file"), ("mask_file", "mask_file"),
                                   ("prefix", "out_prefix")]),
                (sources, join, [("out", "sources")]),
            ])  # fmt: skip
            for map_name in names:
                joins[map_name] = join
        workflow.connect([
            (inputnode, node, [("curves_file", "aif_file"), ("prefix", "out_prefix")]),
            (split, node, [("slab_files", "in_file"), ("mask_files", "mask_file")]),
        ])  # fmt: skip
        # the whole-scan maps, under the names the method's interface gives them
        workflow.connect([
            (merge, outputnode, [("out", f"{method}_maps")]),
            (merge, merge_all, [("out", f"in{index}")]),
            (parameters, merge_parameters, [("out", f"in{index}")]),
            (curves, merge_curves, [("out", f"in{index}")]),
            (joins["cbf"], outputnode, [("cbf", f"{method}_cbf"), ("cbv", f"{method}_cbv"),
                                        (METHOD_MAPS[method][3], f"{method}_delay")]),
        ])  # fmt: skip
        for slot, map_name in enumerate(maps, start=1):
            workflow.connect(joins[map_name], map_name, merge, f"in{slot}")
        for slot, map_name in enumerate(METHOD_MAPS[method], start=1):
            workflow.connect(joins[map_name], map_name, parameters, f"in{slot}")
        for slot, map_name in enumerate(curve_names, start=1):
            workflow.connect(joins[map_name], map_name, curves, f"in{slot}")
    flatten = pe.Node(Merge(1, ravel_inputs=True), name="flatten_maps")
    flatten_parameters = pe.Node(Merge(1, ravel_inputs=True), name="flatten_parameter_maps")
    flatten_curves = pe.Node(Merge(1, ravel_inputs=True), name="flatten_curve_maps")
    workflow.connect([
        (merge_all, flatten, [("out", "in1")]),
        (flatten, outputnode, [("out", "maps")]),
        (merge_parameters, flatten_parameters, [("out", "in1")]),
        (flatten_parameters, outputnode, [("out", "parameter_maps")]),
        (merge_curves, flatten_curves, [("out", "in1")]),
        (flatten_curves, outputnode, [("out", "curve_maps")]),
    ])  # fmt: skip
    return workflow


def init_ctp_wf(
    output_dir,
    subdir="",
    methods=DEFAULT_METHODS,
    motion_correction=False,
    guided_filter=True,
    device="auto",
    weights=None,
    frame_interval=None,
    method_options=None,
    guided_filter_radius_mm=RADIUS_MM,
    partial_volume_correction=True,
    allow_long_frames=False,
    n_slabs=0,
    n_procs=1,
    working_voxel_mm=None,
    name="ctp_wf",
):
    """The whole scan: preprocessing, perfusion by every method, derivatives.

    Workflow graph: ``docs/workflows.md`` (``ctp_wf``), drawn from this factory by
    :mod:`ctp_nipype.workflows.graphs`: every node, the statistics, lesion, report and sink nodes included.

    Triage: ``ttp`` writes ``<prefix>_ttp.nii.gz`` (time to peak of the tissue curves, one map
    whatever the methods); each ``lesion_<method>`` the core and hypoperfused masks, the rCBF and
    rCBV maps and the lesion JSON (volumes, mismatch, HIR, DEFUSE 3 / EXTEND flags);
    ``triage_summary`` one ``<prefix>_desc-<method>_summary.png`` per method.

    Parameters
    ----------
    output_dir : str
        Derivatives root (BIDS App) or the flat output folder (``ctp-perfusion``).
    subdir : str
        Folder below ``output_dir`` (``sub-01/ses-01/perf`` for BIDS, ``""`` flat).
    methods, device, weights, method_options, n_slabs, n_procs, working_voxel_mm
        See :func:`init_perfusion_wf`.
    motion_correction, guided_filter, frame_interval, guided_filter_radius_mm, partial_volume_correction,
    allow_long_frames
        See :func:`init_ctp_preproc_wf`.

    Inputs (``inputnode``): ``in_file``, ``prefix`` and the optional user replacements
    ``brain_mask``, ``aif_file``, ``vof_file``.

    Outputs (``outputnode``): ``maps`` (derivative paths), ``preproc_derivatives``,
    ``stats_derivatives`` (region statistics, lesion volumes and masks, rCBF/rCBV, TTP, the triage
    summary figures), ``report`` (the HTML report).
    """
    from ..interfaces.bids import DerivativesDataSink
    from ..interfaces.report import ScanReport
    from ..interfaces.stats import LesionVolumes, MapStats
    from ..interfaces.triage import TimeToPeak, TriageSummary

    methods = check_methods(methods)
    workflow = pe.Workflow(name=name)
    # our interfaces write a JSON sidecar next to every output; Nipype's default clean-up
    # of node folders would delete them before the sinks copy them
    workflow.config["execution"] = {"remove_unnecessary_outputs": False}
    inputnode = pe.Node(
        IdentityInterface(fields=["in_file", "prefix", "brain_mask", "aif_file", "vof_file"]), name="inputnode"
    )
    outputnode = pe.Node(
        IdentityInterface(fields=["maps", "preproc_derivatives", "stats_derivatives", "report"]), name="outputnode"
    )
    preproc = init_ctp_preproc_wf(
        motion_correction=motion_correction, guided_filter=guided_filter, frame_interval=frame_interval,
        guided_filter_radius_mm=guided_filter_radius_mm, partial_volume_correction=partial_volume_correction,
        allow_long_frames=allow_long_frames,
    )
    options = dict(method_options or {})
    if frame_interval is not None:
        options.setdefault("frame_interval", frame_interval)
    perfusion = init_perfusion_wf(methods=methods, device=device, weights=weights, method_options=options,
                                  n_slabs=n_slabs, n_procs=n_procs, working_voxel_mm=working_voxel_mm)
    # the sinks always run (cheap copies), so a rerun restores deleted derivatives from the cache
    ds_maps = pe.Node(DerivativesDataSink(base_directory=str(output_dir), subdir=subdir), name="ds_maps",
                      run_without_submitting=True, overwrite=True)
    preproc_files = ["brain_mask", "csf_mask", "vessel_mask", "curves_file", "curves_png", "vascular_dseg"]
    if motion_correction:
        preproc_files.append("motion_file")
    collect = pe.Node(Merge(len(preproc_files)), name="collect_preproc")
    ds_preproc = pe.Node(DerivativesDataSink(base_directory=str(output_dir), subdir=subdir), name="ds_preproc",
                         run_without_submitting=True, overwrite=True)

    workflow.connect([
        (inputnode, preproc, [
            ("in_file", "inputnode.in_file"),
            ("prefix", "inputnode.prefix"),
            ("brain_mask", "inputnode.brain_mask"),
            ("aif_file", "inputnode.aif_file"),
            ("vof_file", "inputnode.vof_file"),
        ]),
        (inputnode, perfusion, [("prefix", "inputnode.prefix")]),
        (preproc, perfusion, [
            ("outputnode.preproc_file", "inputnode.in_file"),
            ("outputnode.curves_file", "inputnode.curves_file"),
            ("outputnode.brain_mask", "inputnode.mask_file"),
        ]),
        (perfusion, ds_maps, [("outputnode.maps", "in_files")]),
        (ds_maps, outputnode, [("out_files", "maps")]),
        (collect, ds_preproc, [("out", "in_files")]),
        (ds_preproc, outputnode, [("out_files", "preproc_derivatives")]),
    ])  # fmt: skip
    for slot, field in enumerate(preproc_files, start=1):
        workflow.connect(preproc, f"outputnode.{field}", collect, f"in{slot}")

    # statistics of every map in every region, and the clinical lesion measures per method
    map_stats = pe.Node(MapStats(), name="map_stats")
    per_lesion = 5  # core and hypoperfused masks, lesion JSON, rCBF, rCBV
    stats_files = pe.Node(Merge(4 + per_lesion * len(methods), ravel_inputs=True), name="collect_stats")
    ds_stats = pe.Node(DerivativesDataSink(base_directory=str(output_dir), subdir=subdir), name="ds_stats",
                       run_without_submitting=True, overwrite=True)
    workflow.connect([
        (inputnode, map_stats, [("prefix", "out_prefix")]),
        (perfusion, map_stats, [("outputnode.parameter_maps", "map_files")]),
        (preproc, map_stats, [
            ("outputnode.brain_mask", "brain_mask"),
            ("outputnode.csf_mask", "csf_mask"),
            ("outputnode.vessel_mask", "vessel_mask"),
        ]),
        (map_stats, stats_files, [("out_tsv", "in1"), ("out_json", "in2")]),
        (stats_files, ds_stats, [("out", "in_files")]),
        (ds_stats, outputnode, [("out_files", "stats_derivatives")]),
    ])  # fmt: skip
    report = pe.Node(ScanReport(), name="report")
    lesion_jsons = pe.Node(Merge(len(methods)), name="collect_lesions")
    ds_report = pe.Node(DerivativesDataSink(base_directory=str(output_dir), subdir=subdir), name="ds_report",
                        run_without_submitting=True, overwrite=True)
    workflow.connect([
        (inputnode, report, [("prefix", "out_prefix")]),
        (preproc, report, [
            ("outputnode.series_file", "in_file"),
            ("outputnode.curves_file", "curves_file"),
            ("outputnode.curves_png", "aif_png"),
            ("outputnode.brain_mask", "brain_mask"),
            ("outputnode.csf_mask", "csf_mask"),
            ("outputnode.vessel_mask", "vessel_mask"),
        ]),
        (perfusion, report, [("outputnode.parameter_maps", "map_files"), ("outputnode.curve_maps", "residue_files")]),
        (map_stats, report, [("out_tsv", "stats_file")]),
        (lesion_jsons, report, [("out", "lesion_files")]),
        (report, ds_report, [("out_report", "in_files")]),
        (ds_report, outputnode, [("out_files", "report")]),
    ])  # fmt: skip
    if motion_correction:
        workflow.connect(preproc, "outputnode.motion_file", report, "motion_file")

    # triage: time to peak (one map per scan), the lesion measures and relative maps per method, the summaries
    ttp = pe.Node(TimeToPeak(aif_column="aif_corrected"), name="ttp")
    for key, value in options.items():
        if value is not None and key in ("peak_interpolation", "n_baseline_frames", "frame_interval"):
            setattr(ttp.inputs, key, value)
    summary = pe.Node(TriageSummary(), name="triage_summary")
    delay_maps = pe.Node(Merge(len(methods)), name="collect_delays")
    workflow.connect([
        (inputnode, ttp, [("prefix", "out_prefix")]),
        (preproc, ttp, [
            ("outputnode.preproc_file", "in_file"),
            ("outputnode.curves_file", "aif_file"),
            ("outputnode.brain_mask", "mask_file"),
        ]),
        (ttp, stats_files, [("ttp", "in3")]),
        (ttp, report, [("ttp", "ttp_file")]),
        (inputnode, summary, [("prefix", "out_prefix")]),
        (preproc, summary, [("outputnode.series_file", "in_file"), ("outputnode.brain_mask", "brain_mask")]),
        (lesion_jsons, summary, [("out", "lesion_files")]),
        (delay_maps, summary, [("out", "delay_files")]),
        (summary, stats_files, [("out_files", "in4")]),
        (summary, report, [("out_files", "summary_files")]),  # embedded, not drawn again
    ])  # fmt: skip
    if frame_interval is not None:
        summary.inputs.frame_interval = frame_interval
    for index, method in enumerate(methods):
        lesion = pe.Node(LesionVolumes(), name=f"lesion_{method}")
        first = 5 + per_lesion * index
        workflow.connect(lesion, "out_json", lesion_jsons, f"in{index + 1}")
        workflow.connect(perfusion, f"outputnode.{method}_delay", delay_maps, f"in{index + 1}")
        workflow.connect([
            (perfusion, lesion, [
                (f"outputnode.{method}_cbf", "cbf_file"),
                (f"outputnode.{method}_cbv", "cbv_file"),
                (f"outputnode.{method}_delay", "delay_file"),
            ]),
            (preproc, lesion, [
                ("outputnode.brain_mask", "brain_mask"),
                ("outputnode.csf_mask", "csf_mask"),
                ("outputnode.vessel_mask", "vessel_mask"),
            ]),
            (lesion, stats_files, [
                ("core_mask", f"in{first}"),
                ("hypoperfused_mask", f"in{first + 1}"),
                ("out_json", f"in{first + 2}"),
                ("rcbf", f"in{first + 3}"),
                ("rcbv", f"in{first + 4}"),
            ]),
        ])  # fmt: skip
    return workflow
