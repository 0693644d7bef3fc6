"""Every declared console script is installed and answers --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = ["fomm-export", "fomm-animate", "fomm-compare", "fomm-live", "fomm-train", "fomm-bench", "fomm-serve"]


def _script(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"console script {name} is not installed; run the README set-up (make setup)")
    return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    res = subprocess.run([_script(name), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout


def test_live_runs_as_a_script():
    live = Path(__file__).resolve().parents[1] / "runtime" / "live.py"
    res = subprocess.run([sys.executable, str(live), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "webcam" in res.stdout, res.stderr


def test_live_as_a_script_without_the_packages_says_what_to_install(tmp_path):
    """A fresh Python (a new virtual environment, none of the project's packages) runs the script from the
    checkout: one Error: line naming what is missing and how to set up, no traceback."""
    import os

    bare = tmp_path / "bare venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = bare / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import click"], capture_output=True).returncode != 0
    live = Path(__file__).resolve().parents[1] / "runtime" / "live.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    res = subprocess.run([str(python), str(live), "--help"], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert res.returncode == 1 and res.stdout == "", res.stdout + res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: python runtime/live.py needs click, numpy, "
                                                   "opencv-python, pyyaml, onnxruntime, imageio-ffmpeg"), res.stderr
    assert "make setup" in lines[0] and 'pip install -e ".[cpu]"' in lines[0]


COMMANDS = {
    "fomm-export": "fomm_deploy.export.cli:main",
    "fomm-animate": "fomm_deploy.runtime.cli:animate_main",
    "fomm-compare": "fomm_deploy.runtime.cli:compare_main",
    "fomm-live": "fomm_deploy.runtime.live:main",
    "fomm-train": "fomm_deploy.training.cli:main",
    "fomm-bench": "fomm_deploy.benchmarks.cli:main",
    "fomm-serve": "fomm_deploy.runtime.serve.cli:main",
    "python -m fomm_deploy.training.inspect_checkpoint": "fomm_deploy.training.inspect_checkpoint:main",
    "python -m fomm_deploy.training.synthetic": "fomm_deploy.training.synthetic:main",
    "python -m fomm_deploy.training.photo_motion": "fomm_deploy.training.photo_motion:main",
    "python -m fomm_deploy.training.random_checkpoint": "fomm_deploy.training.random_checkpoint:main",
    "python -m fomm_deploy.training.warm_start": "fomm_deploy.training.warm_start:main",
    "python -m fomm_deploy.benchmarks.serve_load": "fomm_deploy.benchmarks.serve_load:main",
    "python -m fomm_deploy.benchmarks.profile_graph": "fomm_deploy.benchmarks.profile_graph:main",
    "python -m fomm_deploy.benchmarks.real_faces": "fomm_deploy.benchmarks.real_faces:main",
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_is_explained(name):
    import importlib

    import click

    module, attr = COMMANDS[name].split(":")
    command = getattr(importlib.import_module(module), attr)
    undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not undocumented, f"{name}: options without help text: {undocumented}"
    assert command.help and len(command.help) > 40


@pytest.mark.parametrize("name", SCRIPTS)
def test_short_help_and_version(name):
    from fomm_deploy import __version__

    res = subprocess.run([_script(name), "-h"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr
    res = subprocess.run([_script(name), "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"fomm-deploy {__version__}", res.stdout + res.stderr


# Every command that takes --device, with whatever else it needs to start (none of it is read: the device is
# refused first).
DEVICE_COMMANDS = {
    "fomm-animate": ("--source", "face.png", "--driving", "talk.mp4", "--out", "out.mp4"),
    "fomm-compare": (),
    "fomm-live": ("--source", "face.png"),
    "fomm-serve": (),
    "fomm-bench": (),
    "fomm-train": ("--config", "tiny-test"),
}


@pytest.mark.parametrize("name", list(DEVICE_COMMANDS))
def test_a_bad_device_is_the_same_one_line_everywhere(name, tmp_path):
    """One device parser (runtime/core/names.parse_device): cpu, cuda or cuda:N. cpu:0 was taken by the
    backends' check, refused by the click option in a usage message and by fomm-train in its own words."""
    for bad in ("cpu:0", "mps"):
        res = subprocess.run([_script(name), *DEVICE_COMMANDS[name], "--device", bad], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert res.returncode == 1 and res.stdout == "", res.stdout + res.stderr
        assert res.stderr == f"Error: unknown device '{bad}'; use cpu, cuda or cuda:N\n", res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_shared_option_is_declared_the_same_way_in_every_command():
    """One factory per shared option (runtime/core/options.py): the same parameter name, metavar, type and
    check in every command that takes it, and help that starts with the same words (each command says what
    the option is for there)."""
    import importlib

    import click

    from fomm_deploy.runtime.core import options

    starts = {"--ckpt": options.CKPT_HELP, "--config": options.CONFIG_HELP, "--onnx": options.ONNX_HELP,
              "--device": "Device (cpu, cuda or cuda:N) ", "--backends": options.BACKENDS_HELP}
    seen: dict[str, dict[str, tuple]] = {option: {} for option in starts}
    for name, target in COMMANDS.items():
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        ctx = click.Context(command)
        for p in command.params:
            option = next((o for o in p.opts if o in starts), None)
            if option is None:
                continue
            assert p.help.startswith(starts[option]), f"{name} {option}: {p.help}"
            seen[option][name] = (p.name, p.make_metavar(ctx), repr(p.type.to_info_dict()),
                                  getattr(p.callback, "__name__", None))
    for option, where in seen.items():
        assert len(where) >= 2, (option, where)
        assert len(set(where.values())) == 1, f"{option} is declared differently: {where}"
    assert set(seen["--ckpt"]) == {"fomm-export", "fomm-animate", "fomm-compare", "fomm-train", "fomm-bench",
                                   "python -m fomm_deploy.training.inspect_checkpoint",
                                   "python -m fomm_deploy.training.warm_start"}
    assert set(seen["--backends"]) == {"fomm-compare", "fomm-bench"}
    assert set(seen["--config"]) == {"fomm-export", "fomm-compare", "fomm-train", "fomm-bench",
                                     "python -m fomm_deploy.training.inspect_checkpoint",
                                     "python -m fomm_deploy.training.random_checkpoint",
                                     "python -m fomm_deploy.training.warm_start"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_no_float_option_takes_nan_or_infinity(name):
    """Python's float() reads 'nan' and 'inf', and a range check lets nan through (it compares false with every
    bound): fomm-animate --start nan ended in a traceback and --end nan skipped the clip's end. Every float
    option refuses both in a usage message (options.FiniteFloat)."""
    import importlib

    import click

    module, attr = COMMANDS[name].split(":")
    command = getattr(importlib.import_module(module), attr)
    floats = [p for p in command.params if isinstance(p, click.Option) and isinstance(p.type, click.types.FloatParamType)]
    assert floats or name not in ("fomm-animate", "fomm-live", "fomm-serve"), "the float options were not found"
    for param in floats:
        for bad in ("nan", "inf", "-inf", "NaN"):
            with pytest.raises(click.BadParameter):
                param.type.convert(bad, param, None)


def test_animate_refuses_nan_start_and_end_in_one_usage_line(tmp_path):
    for option in ("--start", "--end"):
        for bad in ("nan", "inf"):
            res = subprocess.run([_script("fomm-animate"), "--source", "face.png", "--driving", "talk.mp4", "--out",
                                  "out.mp4", option, bad], capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
            assert f"Invalid value for '{option}': '{bad}' is not a finite number" in res.stderr
    assert list(tmp_path.iterdir()) == []
