"""The example bots ship with the package: pyproject.toml installs the repository's examples/
folder as ``chaos_shims.examples``, so ``chaos-shims demo`` runs from a wheel (and from an
editable install) in any working directory, while examples/ stays the bots' one source.

The builds work on a copy of the sources in a temporary folder: setuptools writes build/ and
*.egg-info next to what it builds, and other tests use this checkout at the same time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from chaos_shims.demo import BOTS, EXAMPLES_PACKAGE

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the project's CI runs 3.11

pytestmark = [pytest.mark.timeout(90), pytest.mark.filterwarnings("error::ResourceWarning")]

ROOT = Path(__file__).resolve().parents[1]
#: what a build of the package reads
SOURCES = ("pyproject.toml", "README.md", "chaos_shims", "examples")


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHAOS_SHIMS_") and k != "PYTHONPATH"}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _run(command: list[str], cwd: Path, timeout: float = 60,
         **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=_environment(**env), capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("source") / "chaos-shims"
    folder.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, folder / name)
    return folder


@pytest.fixture(scope="module")
def wheel(source_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps``, with build isolation (pip fetches setuptools>=69 and wheel)."""
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
          str(source_copy)], cwd=out, timeout=80)
    [built] = out.glob("chaos_shims-*.whl")
    return built


def _source_files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*.py")
                  if "__pycache__" not in path.parts)


def test_every_package_is_listed() -> None:
    """Packages are listed in pyproject.toml (a mapped package cannot be found by
    setuptools): every folder of Python modules under chaos_shims/ must be there."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(("chaos_shims", *path.parent.relative_to(ROOT / "chaos_shims").parts))
               for path in (ROOT / "chaos_shims").rglob("*.py")
               if "__pycache__" not in path.parts}
    assert set(setuptools["packages"]) == on_disk | {EXAMPLES_PACKAGE}
    assert setuptools["package-dir"] == {EXAMPLES_PACKAGE: "examples"}


def test_the_wheel_holds_the_example_bots(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        top_level = next(archive.read(n) for n in names if n.endswith(".dist-info/top_level.txt"))
    for bot in BOTS.values():
        assert f"chaos_shims/examples/{bot}.py" in names, sorted(names)
    # everything in examples/ and chaos_shims/, and no top-level `examples` package
    assert {f"chaos_shims/examples/{f}" for f in _source_files(ROOT / "examples")} <= names
    assert {f"chaos_shims/{f}" for f in _source_files(ROOT / "chaos_shims")} <= names
    assert "chaos_shims/py.typed" in names
    assert top_level.decode().split() == ["chaos_shims"]
    assert not [n for n in names if n.startswith("examples/")]


def test_the_demo_runs_its_bots_from_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    """The wheel unpacked as an installer lays it out, used from a folder that is not the
    checkout: the demo finds the bots in the package and runs them."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    located = _run([sys.executable, "-c", "import json; from chaos_shims.demo import BOTS, "
                    "find_bot; print(json.dumps({b: str(find_bot(b)) for b in BOTS}))"],
                   cwd=elsewhere, PYTHONPATH=str(site))
    assert json.loads(located.stdout) == {
        bot: str(site / "chaos_shims" / "examples" / f"{module}.py")
        for bot, module in BOTS.items()}

    result = _run([sys.executable, "-m", "chaos_shims.cli", "demo", "--quick", "--seconds", "1",
                   "--scenario", "exch_5xx", "--out", "demo"],
                  cwd=elsewhere, timeout=75, PYTHONPATH=str(site))
    runs = sorted((elsewhere / "demo" / "runs").glob("*.json"))
    assert len(runs) == 3, result.stdout + result.stderr
    bot = str(site / "chaos_shims" / "examples" / "market_maker.py")
    for run in runs:
        assert json.loads(run.read_text())["command"][1] == bot
    assert (elsewhere / "demo" / "report.md").is_file()


def test_an_editable_install_maps_the_examples_folder(source_copy: Path, tmp_path: Path) -> None:
    """setuptools' editable finder maps chaos_shims.examples to examples/ of the checkout."""
    target = tmp_path / "editable"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
          str(target), "-e", str(source_copy)], cwd=tmp_path, timeout=80)
    # -S: this interpreter's own editable install (of ROOT) must not answer; its site-packages
    # comes after the new one, without its .pth files, for chaos_shims' dependencies.
    probe = ("import importlib.util, json, site, sys\n"
             f"site.addsitedir({str(target)!r})\n"
             f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
             "from chaos_shims.demo import BOTS, find_bot\n"
             "import chaos_shims\n"
             "print(json.dumps({'package': chaos_shims.__file__,\n"
             "  'spec': importlib.util.find_spec('chaos_shims.examples.market_maker').origin,\n"
             "  'bots': {b: str(find_bot(b)) for b in BOTS}}))\n")
    found = json.loads(_run([sys.executable, "-S", "-c", probe], cwd=tmp_path).stdout)
    assert found["package"] == str(source_copy / "chaos_shims" / "__init__.py")
    assert found["spec"] == str(source_copy / "examples" / "market_maker.py")
    assert found["bots"] == {bot: str(source_copy / "examples" / f"{module}.py")
                             for bot, module in BOTS.items()}
