"""The Dockerfiles and the kind path are pinned, non-root, lint-clean and agree with each other.

No Docker engine exists on the build machines, so the images are checked statically:
hadolint, a parser for the rules hadolint does not know (pins from versions.env, a
numeric non-root USER equal to the chart's runAsUser, entrypoints that exist), and
shellcheck on hack/kind-*.sh.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from driftwarden.cli import COMMANDS
from driftwarden.testing.tools import versions

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGES = {  # folder -> the `driftwarden` sub-command its image runs
    "operator": "operator",
    "model_server": "serve",
    "drift_worker": "worker",
}
SCRIPTS = [*sorted((ROOT / "hack").glob("*.sh")), ROOT / ".ci" / "run"]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [arg for kw, arg in self.instructions if kw == keyword]
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) and their defaults
    stages: list[Stage]


def parse_dockerfile(text: str) -> Dockerfile:
    """Return the global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    logical: list[str] = []
    buffer = ""
    in_heredoc = False
    for raw in text.splitlines():
        if in_heredoc:
            in_heredoc = raw.strip() != "EOF"
            continue
        line = raw.rstrip()
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buffer and line.lstrip().startswith("#"):
            continue
        if "<<" in line and re.search(r"<<-?'?EOF'?", line):
            in_heredoc = True
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args=args, stages=stages)


def image_problems(dockerfile: Dockerfile, pins: dict[str, str]) -> list[str]:
    """Return every rule a Dockerfile breaks (empty when it complies)."""
    problems = []
    if len(dockerfile.stages) < 2:
        problems.append("not multi-stage: build tools would ship in the runtime image")
    known_stages: set[str] = set()
    for stage in dockerfile.stages:
        if stage.base not in known_stages and stage.base != "${PYTHON_IMAGE}":
            problems.append(
                f"FROM {stage.base}: use the pinned ${{PYTHON_IMAGE}} or an earlier stage"
            )
        if stage.name:
            known_stages.add(stage.name)
        for keyword, arg in stage.instructions:
            if keyword == "ADD":
                problems.append(f"ADD {arg}: use COPY (ADD fetches URLs and unpacks archives)")
            if keyword == "RUN" and "pip install" in arg:
                for command in re.split(r"&&|;", arg):
                    if "pip install" not in command:
                        continue
                    pinned = "-c constraints.txt" in command or "--no-deps" in command
                    if not pinned:
                        problems.append(f"unpinned pip install: {command.strip()}")
    if dockerfile.args.get("PYTHON_IMAGE") != pins["PYTHON_IMAGE"]:
        problems.append(
            f"ARG PYTHON_IMAGE={dockerfile.args.get('PYTHON_IMAGE')} differs from versions.env "
            f"PYTHON_IMAGE={pins['PYTHON_IMAGE']}"
        )
    runtime = dockerfile.stages[-1]
    user = runtime.last("USER")
    if user is None or not re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user):
        problems.append(f"runtime USER is {user!r}: use a numeric non-root uid:gid")
    entrypoint = runtime.last("ENTRYPOINT")
    if entrypoint is None or not entrypoint.startswith("["):
        problems.append(f"ENTRYPOINT {entrypoint!r} is not exec form (signals would miss Python)")
    return problems


def runtime_command(dockerfile: Dockerfile) -> list[str]:
    runtime = dockerfile.stages[-1]
    return json.loads(runtime.last("ENTRYPOINT")) + json.loads(runtime.last("CMD") or "[]")


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return versions()


def load(folder: str) -> Dockerfile:
    return parse_dockerfile((ROOT / folder / "Dockerfile").read_text())


def test_checker_flags_a_single_stage_root_image(pins):
    bad = parse_dockerfile(
        "FROM python:latest\nADD https://example.com/x.tgz /x\n"
        "RUN pip install requests\nUSER root\nENTRYPOINT driftwarden serve\n"
    )
    problems = "\n".join(image_problems(bad, pins))
    for expected in (
        "not multi-stage",
        "FROM python:latest",
        "ADD",
        "unpinned pip install",
        "ARG PYTHON_IMAGE",
        "USER is 'root'",
        "not exec form",
    ):
        assert expected in problems, (expected, problems)


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_dockerfile_follows_the_image_rules(folder, pins):
    assert image_problems(load(folder), pins) == []


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_image_runs_an_existing_driftwarden_command(folder):
    command = runtime_command(load(folder))
    assert command[0] == "driftwarden"
    assert command[1] == IMAGES[folder]
    assert command[1] in COMMANDS, f"`driftwarden {command[1]}` does not exist (driftwarden.cli)"


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_image_user_matches_the_chart_security_context(folder):
    values = yaml.safe_load((ROOT / "charts" / "driftwarden" / "values.yaml").read_text())
    uid, gid = load(folder).stages[-1].last("USER").split(":")
    assert int(uid) == values["podSecurityContext"]["runAsUser"]
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]


@pytest.mark.parametrize("folder", ["model_server", "drift_worker"])
def test_torch_is_an_optional_flavour_with_an_optional_index(folder):
    dockerfile = load(folder)
    text = (ROOT / folder / "Dockerfile").read_text()
    build = next(s for s in dockerfile.stages if s.name == "build")
    build_args = [arg for kw, arg in build.instructions if kw == "ARG"]
    assert "FLAVOUR=" in build_args, "the default flavour leaves torch out"
    assert "TORCH_CPU_INDEX=" in build_args
    assert '${TORCH_CPU_INDEX:+--extra-index-url "$TORCH_CPU_INDEX"}' in text


@pytest.mark.parametrize("folder", ["model_server", "drift_worker"])
def test_image_trains_the_builtin_bundles_at_build_time(folder):
    """Model server and worker carry the same built-ins; neither writes to its read-only root."""
    dockerfile = load(folder)
    bundles = next(s for s in dockerfile.stages if s.name == "bundles")
    run = bundles.last("RUN")
    assert run is not None and "driftwarden train --out /opt/driftwarden-bundles" in run
    assert "train" in COMMANDS
    runtime = dockerfile.stages[-1]
    copies = [arg for kw, arg in runtime.instructions if kw == "COPY"]
    assert any(c.startswith("--from=bundles ") for c in copies)
    env = " ".join(arg for kw, arg in runtime.instructions if kw == "ENV")
    assert "DRIFTWARDEN_BUNDLES_DIR=/opt/driftwarden-bundles" in env


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_compile_step_skips_only_torch_test_helpers(folder):
    """Everything installed is byte-compiled (read-only root) except torch's py3.12+ test files."""
    build = next(s for s in load(folder).stages if s.name == "build")
    compile_step = next(
        arg for kw, arg in build.instructions if kw == "RUN" and "compileall" in arg
    )
    command = shlex.split(next(c for c in compile_step.split("&&") if "compileall" in c))
    assert command[:3] == ["python", "-m", "compileall"] and command[-1] == "/opt/driftwarden/lib"
    excludes = [command[i + 1] for i, word in enumerate(command) if word == "-x"]
    assert excludes in ([], ["/torch/testing/_internal/"]), excludes


def test_python_image_pin_is_a_full_patch_tag(pins):
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", pins["PYTHON_IMAGE"]), pins[
        "PYTHON_IMAGE"
    ]


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_hadolint_passes(folder):
    proc = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(ROOT / folder / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_sends_only_what_the_images_install():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "ignore everything by default (no .venv, .git or caches in the context)"
    assert {"!pyproject.toml", "!constraints.txt", "!src/"} <= set(lines)


# --- kind -----------------------------------------------------------------------------------


def test_kind_config_is_a_local_multi_node_cluster():
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1


def test_kind_node_image_is_digest_pinned_and_matches_the_tested_minor(pins):
    image = pins["KIND_NODE_IMAGE"]
    match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+@sha256:[0-9a-f]{64}", image)
    assert match, image
    tested = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", pins["KUBERNETES_VERSION"])
    assert match.groups() == tested.groups(), "kind should run the minor the cluster tier tests"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pins["KIND_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["KUBE_PROMETHEUS_STACK_VERSION"])


def test_make_kind_targets_run_the_hack_scripts():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("kind-up", "kind-images", "kind-install", "kind-demo", "kind-down"):
        match = re.search(rf"^{target}:.*\n\t(.+)$", makefile, re.MULTILINE)
        assert match, f"Makefile has no {target} target"
        script = match.group(1).split()[-1]
        assert (ROOT / script).is_file(), f"{target} runs {script}, which does not exist"


def test_kind_install_pins_kube_prometheus_stack_and_wires_its_selectors():
    script = (ROOT / "hack" / "kind-install.sh").read_text()
    assert '--version "$KUBE_PROMETHEUS_STACK_VERSION"' in script
    assert 'monitoring.additionalLabels.release="$KPS_RELEASE"' in script
    assert "grafana.sidecar.dashboards.searchNamespace=ALL" in script


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(script):
    proc = subprocess.run(
        [str(BIN / "shellcheck"), "--external-sources", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def image_requirements(folder: str, flavour: str = "") -> list[str]:
    """Run a Dockerfile's requirements one-liner as its build would, return the requirements."""
    text = (ROOT / folder / "Dockerfile").read_text()
    one_liner = re.search(r"RUN (python -c '.+?') (.+?) > requirements.txt", text)
    assert one_liner, f"{folder}/Dockerfile should derive requirements.txt from pyproject.toml"
    script = '"$PY" ' + one_liner.group(1).removeprefix("python ") + " " + one_liner.group(2)
    proc = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
        env={"PY": sys.executable, "FLAVOUR": flavour, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


HEAVY = {"torch", "numpy", "numba", "scipy", "scikit-learn", "pandas", "plotnine"}


def test_operator_image_installs_only_the_operator_group():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    kept = image_requirements("operator")
    assert kept == project["dependencies"] + project["optional-dependencies"]["operator"]
    assert not _names(kept) & HEAVY


@pytest.mark.parametrize(
    ("folder", "group"), [("model_server", "model-server"), ("drift_worker", "drift-worker")]
)
def test_server_and_worker_images_add_torch_only_in_the_torch_flavour(folder, group):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    default = image_requirements(folder)
    assert default == project["dependencies"] + extras[group]
    assert "torch" not in _names(default) and "plotnine" not in _names(default)
    assert image_requirements(folder, "torch") == default + extras["torch"]


def test_dev_installs_every_group_and_every_requirement_is_constrained():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "driftwarden[all]" in extras["dev"]
    assert set(extras) - {"all", "dev"} == set(
        re.fullmatch(r"driftwarden\[(.+)\]", extras["all"][0]).group(1).split(",")
    )
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    declared = project["dependencies"] + [
        d for g, deps in extras.items() if g not in ("all", "dev") for d in deps
    ]
    assert {n.replace("_", "-") for n in _names(declared)} <= pinned


ENTRY_POINTS = {
    # The operator image has none of HEAVY; the default server and worker images lack torch.
    "operator": (
        HEAVY,
        [
            "driftwarden.cli",
            "driftwarden.operator.__main__",
            "driftwarden.operator.handlers",
            "driftwarden.operator.generate",
        ],
    ),
    "model-server": (
        {"torch", "plotnine"},
        [
            "driftwarden.model_server.__main__",
            "driftwarden.model_server.app",
            "driftwarden.bundles",
        ],
    ),
    "drift-worker": (
        {"torch", "plotnine"},
        [
            "driftwarden.drift_worker.__main__",
            "driftwarden.drift_worker.app",
            "driftwarden.drift_worker.shard",
            "driftwarden.detectors",
        ],
    ),
}

_BLOCKED_IMPORTS = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0].replace("sklearn", "scikit-learn") in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in this image)")
sys.meta_path.insert(0, Missing())
"""


@pytest.mark.parametrize("image", sorted(ENTRY_POINTS))
def test_entry_points_import_without_what_their_image_leaves_out(image):
    blocked, modules = ENTRY_POINTS[image]
    program = (
        _BLOCKED_IMPORTS.format(blocked=sorted(blocked))
        + "".join(f"import {m}\n" for m in modules)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_mmd_without_torch_names_the_torch_flavour():
    program = (
        _BLOCKED_IMPORTS.format(blocked=["torch"])
        + """
import numpy as np
from driftwarden.detectors import MMD
try:
    MMD(np.zeros((10, 2)))
except ImportError as exc:
    print(exc)
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch is not installed, and the MMD or NM-DDM detector needs it" in proc.stdout
    assert "-torch image flavour" in proc.stdout


def test_torch_builtin_without_torch_names_the_torch_flavour(tmp_path):
    program = (
        _BLOCKED_IMPORTS.format(blocked=["torch"])
        + """
from driftwarden.bundles import load_bundle
from driftwarden.bundles.errors import BundleError
try:
    load_bundle("builtin://digits")
except BundleError as exc:
    print(exc)
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "DRIFTWARDEN_BUNDLES_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "torch is not installed, and built-in bundle 'digits' (a torch model) needs it"
        in proc.stdout
    )
    assert "-torch image flavour" in proc.stdout
    assert not any(tmp_path.iterdir()), "nothing is trained or written"
