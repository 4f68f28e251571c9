"""A module of the package as it was at an earlier commit, for same-run comparisons in the benchmarks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path


def module_at(rev, relative_path):
    """``relative_path`` (e.g. ``ctp_nipype/nn/fused.py``) as it was at git revision ``rev``, imported as a
    private module of its package (``ctp_nipype.nn._fused_at_<rev>``), so that its relative imports work."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{relative_path}"],
                            check=True, capture_output=True, text=True).stdout
    package = ".".join(Path(relative_path).with_suffix("").parts[:-1])
    name = f"{package}._{Path(relative_path).stem}_at_{rev.replace('/', '_').replace('~', '_').replace('^', '_')}"
    path = Path(tempfile.mkdtemp(prefix="old_code_")) / Path(relative_path).name
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
