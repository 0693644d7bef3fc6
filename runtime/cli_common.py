"""What every fomm-* command shares: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from .errors import FommError


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FommError (config, checkpoint, input problems) into ``click.ClickException``: no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FommError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
