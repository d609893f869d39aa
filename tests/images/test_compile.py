"""The -torch flavours' compile step holds for the pinned torch under the images' Python.

The tier does not build the torch flavours (GBs), so it checks what broke them before
(issue 10): every torch source file outside the Dockerfiles' compileall exclusion must
compile under the images' Python minor. The dev venv holds torch at its constraints.txt
pin, on the same Python minor as the images (both asserted).
"""

from __future__ import annotations

import importlib.metadata
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from support.podman_pods import podman, ulimits

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(2400)


def compile_excludes(folder: str) -> list[str]:
    text = (ROOT / folder / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if "compileall" in line)
    command = shlex.split(next(c for c in line.split("&&") if "compileall" in c))
    return [command[i + 1] for i, word in enumerate(command) if word == "-x"]


@pytest.mark.parametrize("folder", ["model_server", "drift_worker"])
def test_pinned_torch_compiles_under_the_image_python(images, folder):
    component = folder.replace("_", "-")
    image_minor = podman(
        "run",
        "--rm",
        *ulimits(),
        "--entrypoint",
        "python",
        images[component],
        "-c",
        "import sys; print(*sys.version_info[:2])",
    ).stdout.split()
    assert [int(v) for v in image_minor] == list(sys.version_info[:2]), (
        "the dev venv must run the images' Python minor for this check to mean anything"
    )
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert importlib.metadata.version("torch").split("+")[0] == pins["torch"]
    excludes = compile_excludes(folder)
    program = f"""
import importlib.util, pathlib, re
root = pathlib.Path(importlib.util.find_spec("torch").origin).parent
skip = [re.compile(x) for x in {excludes!r}]
bad = []
for path in sorted(root.rglob("*.py")):
    if any(x.search(str(path)) for x in skip):
        continue
    try:
        compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        bad.append(f"{{path}}: {{exc}}")
print("\\n".join(bad))
"""
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "", (
        f"torch {pins['torch']} has files the images' Python {sys.version_info[:2]} cannot "
        f"compile outside {folder}/Dockerfile's compileall -x {excludes}:\n{proc.stdout}"
    )
