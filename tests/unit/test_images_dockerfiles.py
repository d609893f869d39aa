"""The Dockerfiles and the kind path are pinned, non-root, lint-clean and agree with each other.

No Docker engine exists on the build machines, so the images are checked statically:
hadolint, a parser for the rules hadolint does not know (pins from versions.env, a
numeric non-root USER equal to the chart's runAsUser, entrypoints that exist), and
shellcheck on hack/kind-*.sh.
"""

from __future__ import annotations

import json
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
                    pinned = (
                        "-c constraints.txt" in command
                        or "--no-deps" in command
                        or re.search(r"\"torch==\$torch_version\"", command)
                    )
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


@pytest.mark.parametrize("folder", sorted(IMAGES))
def test_torch_index_is_an_optional_build_arg(folder):
    dockerfile = load(folder)
    text = (ROOT / folder / "Dockerfile").read_text()
    if folder == "operator":
        assert 'startswith("torch")' in text, "the operator image should leave torch out"
        return
    build = next(s for s in dockerfile.stages if s.name == "build")
    default = next(
        arg for kw, arg in build.instructions if kw == "ARG" and "TORCH_CPU_INDEX" in arg
    )
    assert default == "TORCH_CPU_INDEX="
    assert '${TORCH_CPU_INDEX:+--index-url "$TORCH_CPU_INDEX"}' in text


def test_model_server_image_trains_the_builtin_bundles_at_build_time():
    dockerfile = load("model_server")
    bundles = next(s for s in dockerfile.stages if s.name == "bundles")
    run = bundles.last("RUN")
    assert run is not None and shlex.split(run)[:2] == ["driftwarden", "train"]
    assert "train" in COMMANDS
    runtime = dockerfile.stages[-1]
    copies = [arg for kw, arg in runtime.instructions if kw == "COPY"]
    assert any(c.startswith("--from=bundles ") for c in copies)
    env = " ".join(arg for kw, arg in runtime.instructions if kw == "ENV")
    assert "DRIFTWARDEN_BUNDLES_DIR=/opt/driftwarden-bundles" in env


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


def test_operator_runs_without_torch():
    """The operator image leaves torch out; nothing the operator imports may need it."""
    program = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not in the operator image")
sys.meta_path.insert(0, NoTorch())
import driftwarden.cli, driftwarden.operator.__main__, driftwarden.operator.handlers
import driftwarden.operator.generate
assert "torch" not in sys.modules
"""
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_operator_image_requirements_leave_out_only_torch():
    text = (ROOT / "operator" / "Dockerfile").read_text()
    one_liner = re.search(r"RUN (python -c '.+?') > requirements.txt", text)
    assert one_liner, "the operator Dockerfile should derive requirements.txt from pyproject.toml"
    proc = subprocess.run(
        ["bash", "-c", one_liner.group(1).replace("python ", f"{sys.executable} ", 1)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    kept = proc.stdout.split()
    assert [d for d in declared if d not in kept] == [d for d in declared if d.startswith("torch")]
