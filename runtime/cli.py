"""The console scripts' entry points ``fomm-animate`` and ``fomm-compare`` (pyproject's ``[project.scripts]``).

The commands live in ``animate_cli.py`` and ``compare_cli.py``; what fomm-animate does, as a function that
other front-ends call, is ``animate.animate``.
"""

from __future__ import annotations

from .animate_cli import animate_main
from .compare_cli import compare_main

__all__ = ["animate_main", "compare_main"]
