#!/usr/bin/env bash
# The Python packages that the GPU machine's image lacks, as wheels for its Python (3.12, x86-64), into .whl/.
#
# Run here, in the repository root, before a device session (benchmarks/gpu/README.md): the device machine
# reaches no package index, so what ctp-train, the benchmarks and the single-scan command import beyond the
# image's own packages (torch, numpy, scipy, safetensors, tqdm, matplotlib, pandas, scikit-learn ... ) travels as
# wheels (`carry: [".whl"]`). The versions are this checkout's venv's, so that both machines run the same code.
# The list was found by running ctp-train, the benchmarks and `ctp_nipype.cli.demo` here with every other
# third-party import refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
NAMES="nibabel pybids universal_pathlib pathlib_abc SQLAlchemy bids-validator bidsschematools acres frozendict
nilearn nipype looseversion traits prov etelemetry ci-info isal"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
FREEZE=$("$PY" -m pip freeze 2>/dev/null)
for name in $NAMES; do
    pin=$(printf '%s\n' "$FREEZE" | grep -i -E "^${name//[-_]/[-_]}==" | head -1 || true)
    if [ -z "$pin" ]; then echo "wheels.sh: $name is not installed in $PY's environment; run make install first" >&2; exit 1; fi
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
du -sh .whl
ls .whl
