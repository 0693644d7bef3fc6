"""The wheel installs one import package, ``fomm_deploy``, and it works from a checkout as well."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("runtime", "export", "training", "benchmarks", "configs")


def _copy_sources(dest: Path) -> Path:
    """What a wheel is built from, copied, so that the build leaves nothing in the checkout."""
    for name in ("fomm_deploy", *SUBPACKAGES):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(tmp_path_factory.mktemp("src"))
    try:
        import setuptools  # noqa: F401  - the venv's own: no download needed
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(out), str(src)],
                         capture_output=True, text=True, timeout=600, cwd=out)
    assert res.returncode == 0, res.stderr
    (found,) = out.glob("fomm_deploy-*.whl")
    return found


def test_wheel_has_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert zf.read(top_level).decode().split() == ["fomm_deploy"]
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"fomm_deploy"}, tops


def test_wheel_holds_every_package_and_data_file(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = []
    for sub in SUBPACKAGES:
        for path in (REPO / sub).rglob("*"):
            if "__pycache__" in path.parts or path.is_dir():
                continue
            if path.suffix in (".py", ".yaml", ".jpg"):
                inside = "fomm_deploy/" + path.relative_to(REPO).as_posix()
                if inside not in names:
                    missing.append(inside)
    assert not missing, "not in the wheel (add the package to pyproject.toml): " + ", ".join(missing)


def test_installed_wheel_imports_and_finds_its_data(wheel, tmp_path):
    target = tmp_path / "site with space"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    probe = ("import fomm_deploy, fomm_deploy.runtime.graphs as g; "
             "from fomm_deploy.runtime.core.config import resolve_config; from fomm_deploy.runtime.media.samples import sample_face_path; "
             "print(fomm_deploy.__file__); print(g.__file__); print(resolve_config('vox-256').num_kp); "
             "print(sample_face_path().stat().st_size > 0)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    pkg_file, graphs_file, num_kp, has_face = res.stdout.split("\n")[:4]
    assert pkg_file.startswith(str(target)) and graphs_file.startswith(str(target)), res.stdout
    assert num_kp == "10" and has_face == "True"


def test_no_module_shadows_the_standard_library():
    offenders = [str(p.relative_to(REPO)) for sub in SUBPACKAGES for p in (REPO / sub).rglob("*.py")
                 if p.stem in sys.stdlib_module_names]
    assert not offenders, offenders


def test_live_runs_as_a_script_from_an_uninstalled_checkout(tmp_path):
    # A copy of the checkout that pip never saw, in a path with a space: `python runtime/live.py` must import
    # the copy's own modules, not whatever is installed.
    copy = _copy_sources(tmp_path / "fresh clone")
    res = subprocess.run([sys.executable, "-v", str(copy / "runtime" / "live.py"), "--help"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Usage: python " in res.stdout and "live.py" in res.stdout.splitlines()[0]
    assert str(copy / "runtime" / "core" / "cli_common.py") in res.stderr
    assert str(REPO / "runtime" / "cli_common.py") not in res.stderr
