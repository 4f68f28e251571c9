"""ctp_nipype.workflows.graphs: the workflow graphs of the docs are what the factories draw today."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctp_nipype.workflows import graphs

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: kinds of node init_ctp_wf builds with all options on (issue 32: the hand-drawn graph showed 4 of them); a new
#: kind needs no edit here: the chart is checked against the workflow itself
CTP_WF_KINDS = {
    "IdentityInterface", "LoadCTP", "MotionCorrection", "BrainMask", "CSFMask", "VesselMask", "SelectAIFVOF",
    "GuidedFilter", "SVDDeconvolution", "TransformerPerfusion", "Merge", "DerivativesDataSink", "MapStats",
    "LesionVolumes", "ScanReport",
}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    graphs.write_graphs(folder)
    return folder


@pytest.mark.parametrize("relative", [graphs.MARKDOWN] + [f"{graphs.DOT_FOLDER}/{name}.dot" for name in graphs.GRAPHS])
def test_the_checked_in_graphs_are_what_the_factories_draw(regenerated, relative):
    checked_in = DOCS / relative
    assert checked_in.is_file(), f"{checked_in} is missing: run python -m ctp_nipype.workflows.graphs docs"
    assert checked_in.read_text(encoding="utf-8") == (regenerated / relative).read_text(encoding="utf-8"), (
        f"{checked_in} differs from what the workflow factories draw: run python -m ctp_nipype.workflows.graphs docs"
    )


def test_the_drawn_ctp_wf_shows_every_kind_of_node_it_has():
    workflow = graphs.build("ctp_wf")
    kinds = graphs.interface_kinds(workflow)
    assert kinds >= CTP_WF_KINDS
    chart = graphs.mermaid(workflow)
    dot = (DOCS / graphs.DOT_FOLDER / "ctp_wf.dot").read_text(encoding="utf-8")
    for kind in kinds:
        assert f"<i>{kind}</i>" in chart, kind
        assert f".{kind}." in dot, kind
    # one box per node: the chart and the workflow agree on the node count
    assert chart.count("<br/><i>") == len(workflow.list_node_names())
