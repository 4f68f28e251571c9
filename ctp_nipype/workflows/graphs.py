"""Workflow graphs drawn from the factories, for the docs (``docs/workflows.md`` and ``docs/graphs/``).

The graphs are generated, never drawn by hand, so that they cannot drift from the code:
``tests/test_graphs.py`` regenerates them and fails when the checked-in copies differ. After changing a
factory, regenerate them with::

    python -m ctp_nipype.workflows.graphs docs

Each workflow is drawn with every optional step switched on (motion correction, the guided filter, all four
methods), so that every kind of node appears. Two text forms are written per workflow:

* ``docs/graphs/<name>.dot``: nipype's own hierarchical graph (``Workflow.write_graph``, ``graph2use="colored"``,
  nodes labelled ``name.Interface.module``); ``dot -Tpng`` draws it where graphviz is installed (with ``dot`` on
  the PATH, ``--png`` writes the drawings beside it);
* ``docs/workflows.md``: the same workflows as Mermaid flowcharts (rendered by GitHub and most markdown
  viewers): one box per node with its interface, one arrow per pair of connected nodes labelled with the
  inputs it feeds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from .base import ALL_METHODS, init_ctp_preproc_wf, init_ctp_wf, init_perfusion_wf

#: the workflows drawn, by file name: (factory, keyword arguments, one line saying what it does)
GRAPHS = {
    "ctp_wf": (
        init_ctp_wf,
        dict(output_dir="<output_dir>", subdir="sub-<label>/ses-<label>/perf", methods=ALL_METHODS,
             motion_correction=True, guided_filter=True),
        "One scan, end to end: preprocessing, perfusion by every method, statistics, lesions, report, "
        "derivatives (`ctp_nipype.workflows.base.init_ctp_wf`).",
    ),
    "ctp_preproc_wf": (
        init_ctp_preproc_wf,
        dict(motion_correction=True, guided_filter=True),
        "Preprocessing: loading, motion correction, masks, the AIF/VOF, the guided filter "
        "(`ctp_nipype.workflows.base.init_ctp_preproc_wf`).",
    ),
    "perfusion_wf": (
        init_perfusion_wf,
        dict(methods=ALL_METHODS),
        "Perfusion maps by each method (`ctp_nipype.workflows.base.init_perfusion_wf`).",
    ),
}

MARKDOWN = "workflows.md"
DOT_FOLDER = "graphs"


def build(name):
    """The workflow drawn under ``name`` (see :data:`GRAPHS`)."""
    factory, kwargs, _ = GRAPHS[name]
    return factory(**kwargs)


def interface_kinds(workflow):
    """The interface class names of every node of a workflow, sub-workflows included."""
    kinds = set()
    for node_name in workflow.list_node_names():
        kinds.add(type(workflow.get_node(node_name).interface).__name__)
    return kinds


def _mermaid_id(node):
    return (f"{node._hierarchy}.{node.name}" if node._hierarchy else node.name).replace(".", "__")


def mermaid(workflow):
    """A Mermaid flowchart of a workflow: sub-workflows as subgraphs, nodes with their interface, one arrow
    per pair of connected nodes labelled with the inputs it feeds (sorted, so that the text is stable)."""
    graph = workflow._create_flat_graph()  # nipype's own flattening, as write_graph(graph2use="flat") uses
    top = workflow.name
    groups = {}
    for node in graph.nodes():
        hierarchy = node._hierarchy or top
        groups.setdefault(hierarchy, []).append(node)
    lines = ["flowchart TB"]
    for hierarchy in sorted(groups, key=lambda h: (h != top, h)):
        nodes = sorted(groups[hierarchy], key=lambda n: n.name)
        indent = "  "
        if hierarchy != top:
            lines.append(f"  subgraph {hierarchy.replace('.', '__')}[\"{hierarchy.split('.', 1)[-1]}\"]")
            indent = "    "
        for node in nodes:
            lines.append(f"{indent}{_mermaid_id(node)}[\"{node.name}<br/><i>{type(node.interface).__name__}</i>\"]")
        if hierarchy != top:
            lines.append("  end")
    edges = []
    for source, destination, data in graph.edges(data=True):
        inputs = sorted({dest if isinstance(dest, str) else dest[0] for _, dest in data.get("connect", [])})
        edges.append((_mermaid_id(source), _mermaid_id(destination), ", ".join(inputs)))
    for source, destination, label in sorted(edges):
        lines.append(f"  {source} -->|{label}| {destination}" if label else f"  {source} --> {destination}")
    return "\n".join(lines) + "\n"


def dot(workflow, folder, name):
    """nipype's hierarchical graph of a workflow as ``<folder>/<name>.dot`` (no graphviz needed)."""
    with tempfile.TemporaryDirectory(prefix="ctp_graph_") as tmp:
        written = Path(workflow.write_graph(dotfilename=str(Path(tmp) / f"{name}.dot"), graph2use="colored",
                                            format="dot", simple_form=False))
        target = Path(folder) / f"{name}.dot"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(written.read_text(encoding="utf-8").rstrip("\n") + "\n", encoding="utf-8")
    return target


def markdown(charts):
    """``docs/workflows.md`` from the Mermaid charts by workflow name."""
    parts = [
        "# Workflow graphs",
        "",
        "Generated from the workflow factories by `python -m ctp_nipype.workflows.graphs docs`; do not edit by "
        "hand (`tests/test_graphs.py` fails when this page differs from what the factories draw). Every optional "
        "step is switched on (motion correction, the guided filter, all four methods) so that every kind of node "
        "appears. nipype's own drawings of the same graphs are in `docs/graphs/*.dot` (`dot -Tpng` renders them).",
        "",
    ]
    for name, chart in charts.items():
        parts += [f"## {name}", "", GRAPHS[name][2], "", "```mermaid", chart.rstrip("\n"), "```", ""]
    return "\n".join(parts)


def write_graphs(docs_dir, png=False):
    """Write ``<docs_dir>/workflows.md`` and ``<docs_dir>/graphs/<name>.dot`` (and PNGs with ``png``)."""
    docs_dir = Path(docs_dir)
    written, charts = [], {}
    for name in GRAPHS:
        workflow = build(name)
        charts[name] = mermaid(workflow)
        written.append(dot(workflow, docs_dir / DOT_FOLDER, name))
        if png:
            from nipype.pipeline.engine.utils import format_dot

            written.append(Path(format_dot(str(written[-1]), format="png")))
    page = docs_dir / MARKDOWN
    page.write_text(markdown(charts), encoding="utf-8")
    return [page] + written


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the workflow graphs of the docs from the factories.")
    parser.add_argument("docs_dir", type=Path, help="the docs folder (writes workflows.md and graphs/*.dot)")
    parser.add_argument("--png", action="store_true", help="also draw PNGs with graphviz's dot (must be on the PATH)")
    args = parser.parse_args(argv)
    if args.png and shutil.which("dot") is None:
        parser.error("--png needs graphviz's dot on the PATH")
    for path in write_graphs(args.docs_dir, png=args.png):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
