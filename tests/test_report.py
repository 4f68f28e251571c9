"""The per-scan report on the phantom: contents, self-containedness, and a render in headless Chromium."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from ctp_nipype.interfaces.report import ScanReport
from ctp_nipype.interfaces.stats import LesionVolumes, MapStats
from ctp_nipype.io import write_curves_tsv, write_json, write_nifti, write_perfusion_maps
from ctp_nipype.perfusion.convolution import convolve
from ctp_nipype.sims.phantom import PhantomLabel, make_phantom
from ctp_nipype.perfusion.prepare import prepare_curves
from ctp_nipype.perfusion.svd import SVDModel
from ctp_nipype.reports.scan import ScanReportData, curve_regions, place_square_roi, roi_curve_data

from ctp_nipype.validation import label_mask

import render_report
from helpers import write_phantom_inputs

METHODS = ("ssvd", "osvd")


def phantom_derivatives(folder, motion=True, seed=0, with_outputs=True):
    """The files a workflow would have made for a phantom scan; returns (phantom, dict of paths)."""
    ph = make_phantom("small", seed=seed, noise_sd_hu=1.0)
    scan = folder / "sub-01_ctp.nii.gz"
    write_nifti(scan, ph.hu, ph.affine, sidecar={"FrameTimesStart": ph.frame_times.tolist()})
    curves_file = folder / "sub-01_desc-global_aif.tsv"
    write_curves_tsv(curves_file, {"time": ph.frame_times, "aif": ph.aif, "vof": ph.vof, "aif_corrected": ph.aif})
    artery = np.argwhere(ph.labels == PhantomLabel.ARTERY)
    write_json(folder / "sub-01_desc-global_aif.json", {"AIFVoxels": artery.tolist(), "PartialVolumeCorrection": {"Scale": 2.0}})
    paths = {"scan": str(scan), "curves": str(curves_file)}
    if motion:
        columns = {"time": ph.frame_times}
        names = ("trans_x_mm", "trans_y_mm", "trans_z_mm", "rot_x_deg", "rot_y_deg", "rot_z_deg")
        # the trace of a moved phantom (the maps come from the still one: as after motion correction)
        parameters = make_phantom("small", seed=seed, motion=True, noise_sd_hu=0).motion_parameters
        columns.update({name: parameters[:, i] for i, name in enumerate(names)})
        columns["framewise_displacement_mm"] = np.r_[0, np.abs(np.diff(parameters[:, :3], axis=0)).sum(1)]
        paths["motion"] = str(write_curves_tsv(folder / "sub-01_desc-motion_params.tsv", columns))
    if not with_outputs:
        return ph, paths
    curves = prepare_curves(ph.hu, ph.frame_times, ph.aif)
    maps, residues = {}, []
    for method in METHODS:
        fit = SVDModel(curves.aif, curves.frame_times, method=method).fit(curves.tissue, ph.brain_mask)
        maps.update({(method, name): getattr(fit, name) for name in ("cbf", "cbv", "mtt", "tmax")})
        written = write_perfusion_maps(folder, "sub-01", method, {"residue": fit.residue}, ph.affine)
        residues.append(str(written["residue"]))
    map_files, masks = write_phantom_inputs(folder, ph, maps)
    stats = MapStats(map_files=map_files, brain_mask=masks["brain"], gm_mask=masks["gm"], wm_mask=masks["wm"],
                     csf_mask=masks["csf"], vessel_mask=masks["vessel"], lesion_mask=masks["lesion"]).run(cwd=str(folder))
    lesion_files = []
    for method in METHODS:
        result = LesionVolumes(
            cbf_file=str(folder / f"sub-01_desc-{method}_cbf.nii.gz"),
            delay_file=str(folder / f"sub-01_desc-{method}_tmax.nii.gz"),
            brain_mask=masks["brain"], csf_mask=masks["csf"], vessel_mask=masks["vessel"],
        ).run(cwd=str(folder))
        lesion_files.append(result.outputs.out_json)
    paths.update(map_files=map_files, residue_files=residues, masks=masks, stats=stats.outputs.out_tsv,
                 lesion_files=lesion_files)
    return ph, paths


def report_inputs(paths):
    """ScanReport's inputs but the series, from the paths of :func:`phantom_derivatives`."""
    masks = paths["masks"]
    return dict(
        curves_file=paths["curves"], motion_file=paths["motion"],
        brain_mask=masks["brain"], gm_mask=masks["gm"], wm_mask=masks["wm"], csf_mask=masks["csf"],
        vessel_mask=masks["vessel"], lesion_mask=masks["lesion"], map_files=paths["map_files"],
        residue_files=paths["residue_files"], stats_file=paths["stats"], lesion_files=paths["lesion_files"],
    )


@pytest.fixture(scope="module")
def derivatives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    ph, paths = phantom_derivatives(folder)
    return ph, paths


@pytest.fixture(scope="module")
def report(derivatives, tmp_path_factory):
    ph, paths = derivatives
    work = tmp_path_factory.mktemp("report_work")
    result = ScanReport(in_file=paths["scan"], **report_inputs(paths)).run(cwd=str(work))
    return ph, result.outputs.out_report


def test_report_is_self_contained_with_every_section(report):
    _, path = report
    assert path.endswith("sub-01_desc-perfusion_report.html")
    html = open(path, encoding="utf-8").read()
    for anchor in ("triage", "summary", "motion", "vascular", "maps", "lesion", "curves", "stats"):
        assert f'id="{anchor}"' in html
    # the first panel: the triage numbers per method and the trials' criteria spelt out
    assert html.index('id="triage"') < html.index('id="summary"')
    triage_panel = html[html.index('id="triage"'):html.index('id="summary"')]
    assert "DEFUSE 3" in triage_panel and "core &lt; 70 ml, mismatch ratio &gt;= 1.8, mismatch volume &gt;= 15 ml" in triage_panel
    assert "mismatch ratio &gt; 1.2, mismatch volume &gt; 10 ml" in triage_panel and "Tmax &gt; 6 s" in triage_panel
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    # two triage summaries, motion, AIF, cbf, cbv, mtt, tmax, lesion overlay, ROI locations, ROI curves
    assert len(sources) == 11
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:|file:|//)', html)
    # scan summary, units, lesion volumes from the JSONs, the regions of the stats table
    assert "60 x 60 x 4" in html and "FrameTimesStart" in html
    assert "ml/100g/min" in html
    assert "hypoperfused [ml]" in html and ">ischemic<" in html
    assert "osvd" in html and "ssvd" in html


def test_roi_curves_reconstruct_the_observed_tissue_curve():
    """The reconstruction AIF (x) residue of the ROI means agrees with the observed ROI curve (noise-free)."""
    ph = make_phantom("small", seed=1, noise_sd_hu=0)
    curves = prepare_curves(ph.hu, ph.frame_times, ph.aif)
    fit = SVDModel(curves.aif, curves.frame_times, method="osvd").fit(curves.tissue, ph.brain_mask)
    lesion = label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA)
    data = ScanReportData(
        title="x", hu=ph.hu, frame_times=ph.frame_times, affine=ph.affine, voxel_size_mm=(4, 4, 5),
        curves={"time": ph.frame_times, "aif": ph.aif}, aif_column="aif", brain=ph.brain_mask,
        grey_matter=label_mask(ph, PhantomLabel.GREY_MATTER, PhantomLabel.CORE, PhantomLabel.PENUMBRA),
        white_matter=label_mask(ph, PhantomLabel.WHITE_MATTER, PhantomLabel.CORE, PhantomLabel.PENUMBRA),
        csf=label_mask(ph, PhantomLabel.CSF), vessels=label_mask(ph, PhantomLabel.ARTERY, PhantomLabel.VEIN),
        lesion=lesion, residues={"osvd": fit.residue},
    )
    regions = curve_regions(data)
    assert [name for name, _ in regions] == ["normal GM", "normal WM", "ischemic GM", "ischemic WM"]
    rois = [(name, place_square_roi(region)) for name, region in regions]
    for name, roi in rois:
        assert 0 < roi.sum() <= 25 and len(np.flatnonzero(roi.any(axis=(0, 1)))) == 1
    assert (rois[2][1] & ~lesion).sum() == 0 and (rois[0][1] & lesion).sum() == 0
    times, entries, skipped = roi_curve_data(data, rois)
    assert not skipped
    for entry, (_, roi) in zip(entries, rois):
        observed = entry["observed"]
        np.testing.assert_allclose(observed, curves.tissue[roi].mean(axis=0), rtol=1e-5, atol=1e-4)
        reconstructed = entry["reconstructed"]["osvd"]
        direct = convolve(curves.aif, fit.residue[roi].mean(axis=0), 1.0)
        np.testing.assert_allclose(reconstructed, direct, rtol=1e-6, atol=1e-6)
        assert np.abs(reconstructed - observed).max() < 0.1 * observed.max()  # oSVD fits the curve
    # ischemic residue decays more slowly: Tmax later and CBF (max K) lower than normal grey matter
    normal, ischemic = entries[0]["residue"]["osvd"], entries[2]["residue"]["osvd"]
    assert np.argmax(ischemic) > np.argmax(normal) and ischemic.max() < normal.max()


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = render_report.find_chromium()
    if chromium is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium); the render check needs it")
    _, path = report
    result = render_report.render(path, tmp_path / "report.png", chromium=chromium)
    assert result["images"] == 11  # a triage summary per method (2), motion, AIF/VOF, 4 map panels, lesion, ROIs, curves
    assert result["broken"] == [], result
    assert result["errors"] == [], result
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_render_check_catches_broken_images_and_script_errors(tmp_path):
    """The render check can fail: a broken image and an uncaught error are reported."""
    chromium = render_report.find_chromium()
    if chromium is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium); the render check needs it")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><title>bad</title></head><body>'
        '<img alt="broken" src="data:image/png;base64,AAAA"/><script>undefinedFunction();</script></body></html>'
    )
    result = render_report.render(page, tmp_path / "bad.png", chromium=chromium)
    assert result["images"] == 1 and result["broken"] == ["broken"]
    assert any("undefinedFunction" in error for error in result["errors"])


def test_minimal_report_and_network_maps(tmp_path):
    """Only the scan and the curves: a page that says what is missing; network maps (bad) share the Tmax scale."""
    ph, paths = phantom_derivatives(tmp_path, motion=False, with_outputs=False)
    result = ScanReport(in_file=paths["scan"], curves_file=paths["curves"]).run(cwd=str(tmp_path))
    html = open(result.outputs.out_report, encoding="utf-8").read()
    assert "No maps were given." in html and "No residue functions were given." in html
    assert html.count("<img ") == 1  # the AIF figure, with the brain mask computed from the scan

    from ctp_nipype.reports.scan import scan_report_html

    curves = prepare_curves(ph.hu, ph.frame_times, ph.aif)
    fit = SVDModel(curves.aif, curves.frame_times, method="osvd").fit(curves.tissue, ph.brain_mask)
    local_aif = np.broadcast_to(curves.aif, fit.residue.shape)
    data = ScanReportData(
        title="net", hu=ph.hu, frame_times=ph.frame_times, affine=ph.affine, voxel_size_mm=(4, 4, 5),
        curves={"time": ph.frame_times, "aif": ph.aif}, aif_column="aif", brain=ph.brain_mask,
        maps={("osvd", "tmax"): fit.tmax, ("transformer", "bad"): ph.delay, ("transformer", "cbf"): ph.cbf},
        residues={"osvd": fit.residue, "transformer": fit.residue}, local_aifs={"transformer": local_aif},
        lesion=label_mask(ph, PhantomLabel.CORE, PhantomLabel.PENUMBRA),
    )
    html = scan_report_html(data)
    assert 'alt="tmax/bad maps"' in html and 'alt="cbf maps"' in html
    rois = [(name, place_square_roi(region)) for name, region in curve_regions(data)]
    _, entries, _ = roi_curve_data(data, rois)
    for entry in entries:  # a local AIF equal to the global one reconstructs the same curve
        np.testing.assert_allclose(entry["reconstructed"]["transformer"], entry["reconstructed"]["osvd"], rtol=1e-5)


def test_report_reads_what_it_draws_and_embeds_the_triage_summaries_unchanged(derivatives, report, tmp_path):
    """The page is byte for byte the same whether the series is read whole (.nii.gz) or lazily (the pipeline's
    uncompressed .nii) and whether TriageSummary's PNGs are embedded or the report draws them again."""
    import nibabel as nb

    from ctp_nipype.interfaces.triage import TriageSummary

    _, paths = derivatives
    expected = Path(report[1]).read_bytes()
    scan = Path(paths["scan"])
    series = tmp_path / "sub-01_ctp.nii"  # the lazily read series; its sidecar (the frame times) copied
    nb.save(nb.load(str(scan)), str(series))
    (tmp_path / "sub-01_ctp.json").write_bytes(scan.with_name("sub-01_ctp.json").read_bytes())
    delay_files = [p for p in paths["map_files"] if p.endswith("_tmax.nii.gz")]
    summaries = TriageSummary(in_file=str(series), brain_mask=paths["masks"]["brain"],
                              lesion_files=paths["lesion_files"], delay_files=delay_files
                              ).run(cwd=str(tmp_path)).outputs.out_files
    assert len(summaries) == len(METHODS)
    for name, extra in (("drawn", {}), ("embedded", {"summary_files": summaries})):
        work = tmp_path / name
        work.mkdir()
        out = ScanReport(in_file=str(series), **report_inputs(paths), **extra).run(cwd=str(work)).outputs.out_report
        assert Path(out).read_bytes() == expected, name


def test_time_averaged_slices_and_voxel_curves_read_only_what_is_asked(tmp_path):
    """Slice by slice from a lazy proxy, the very values of the whole series' average; the ROIs' curves from an
    array, a proxy or a gzipped file (one pass) are series[mask], in its order."""
    import nibabel as nb

    from ctp_nipype.io import load_ctp
    from ctp_nipype.perfusion.masks import time_average
    from ctp_nipype.reports.scan import TimeAveragedSlices, read_voxel_curves

    rng = np.random.default_rng(3)
    series = np.asarray(rng.normal(40.0, 20.0, (9, 7, 5, 12)), np.float32)
    times = {"FrameTimesStart": (1.5 * np.arange(12)).tolist()}
    plain = write_nifti(tmp_path / "s_ctp.nii", series, np.eye(4), sidecar=times)
    packed = write_nifti(tmp_path / "r_residue.nii.gz", series, np.eye(4))
    proxy = load_ctp(plain, lazy=True).data
    assert isinstance(proxy, nb.arrayproxy.ArrayProxy)
    whole = time_average(series)
    background = TimeAveragedSlices(proxy)
    np.testing.assert_array_equal(background[1:8, 2:6, 3], whole[1:8, 2:6, 3])
    np.testing.assert_array_equal(background[:, :, 0], whole[:, :, 0])
    assert background.read_slices == [0, 3]
    np.testing.assert_array_equal(np.asarray(background), whole)
    mask = rng.random(series.shape[:3]) < 0.2
    mask[:, :, 1] = False
    for source in (series, proxy, str(packed)):
        curves = read_voxel_curves(source, mask)
        assert curves.dtype == np.float32
        np.testing.assert_array_equal(curves, series[mask])
