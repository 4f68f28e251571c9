"""The numpy layer (perfusion/, sims/) imports and runs without torch, nipype, nibabel and SimpleITK."""

import subprocess
import sys
import textwrap

BLOCKED = ("torch", "nipype", "nibabel", "SimpleITK")

SCRIPT = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import pkgutil
    import sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked for this test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np

    import ctp_nipype.perfusion
    import ctp_nipype.sims

    names = []
    for package in (ctp_nipype.perfusion, ctp_nipype.sims):
        for module in pkgutil.iter_modules(package.__path__):
            names.append(f"{{package.__name__}}.{{module.name}}")
            importlib.import_module(names[-1])

    from ctp_nipype.perfusion.svd import SVDModel
    from ctp_nipype.sims.simulate import simulate_curves

    sim = simulate_curves(50, 0, frame_interval=1.0, n_frames=60, snr_db=np.inf)
    fit = SVDModel(sim.global_aif[0], sim.frame_times, method="osvd").fit(sim.tissue[:1])
    assert np.isfinite(fit.cbf).all() and fit.cbf[0] > 0
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print(len(names), "modules", " ".join(sorted(names)))
    """
)


def test_numpy_layer_imports_and_runs_without_torch_nipype_nibabel_simpleitk():
    script = SCRIPT.format(blocked=BLOCKED)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = result.stdout.split()
    for expected in ("ctp_nipype.perfusion.svd", "ctp_nipype.perfusion.maps", "ctp_nipype.perfusion.evaluation",
                     "ctp_nipype.perfusion.motion", "ctp_nipype.perfusion.aif", "ctp_nipype.sims.simulate",
                     "ctp_nipype.sims.phantom", "ctp_nipype.sims.testsets", "ctp_nipype.sims.synthetic"):
        assert expected in names, (expected, result.stdout)


def test_the_blocker_blocks():
    """The finder does what the test above relies on: a blocked package cannot be imported."""
    script = SCRIPT.format(blocked=BLOCKED).replace("import ctp_nipype.perfusion\n", "import torch\n", 1)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "torch is blocked" in result.stderr
