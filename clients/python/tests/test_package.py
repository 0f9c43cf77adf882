"""The SDK installs as a user installs it (pip install ./clients/python) and works from anywhere."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .conftest import PYTHON_ROOT


def test_pip_installs_it_with_its_types_and_the_demo_agent() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetd-pip-") as folder:
        source = Path(folder, "source")
        # A copy: pip's build leaves build/ and egg-info beside the sources.
        shutil.copytree(PYTHON_ROOT, source, ignore=shutil.ignore_patterns("tests", "__pycache__", ".pytest_cache", "build", "*.egg-info"))
        target = Path(folder, "site")
        # The dependencies are Debian's (python3-httpx, python3-websockets), already importable; no
        # index is reachable here, so the build uses the installed setuptools.
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-index", "--no-deps", "--target", str(target), str(source)], check=True
        )
        shutil.rmtree(source)
        env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
        python = sys.executable
        found = subprocess.run(
            [python, "-c", "import fleetd, pathlib; print(pathlib.Path(fleetd.__file__).parent)"], cwd=folder, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        installed = Path(found)
        assert installed.is_relative_to(target)
        assert (installed / "py.typed").exists() and (installed / "wire.py").exists()
        usage = subprocess.run([python, "-m", "fleetd.agent", "--help"], cwd=folder, env=env, check=True, capture_output=True, text=True).stdout
        assert "--capabilities" in usage
        assert (target / "bin" / "fleetd-agent").exists()
