"""The click options every command shares: runtime/core/options.py."""

from __future__ import annotations

import click
import pytest

from fomm_deploy.runtime.core.options import local_file


def test_local_file_refuses_urls():
    assert str(local_file(None, None, "clips/a.mp4")) == "clips/a.mp4"
    assert local_file(None, None, None) is None
    with pytest.raises(click.BadParameter, match="URLs are not supported"):
        local_file(None, None, "https://example.com/a.mp4")
