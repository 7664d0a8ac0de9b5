"""Tests that need something this machine may lack skip loudly here, and fail under CI."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import pytest

Test = TypeVar("Test", bound=Callable[..., Any])


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason``; with ``CI`` set, fail instead (CI must run every test)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def needs(missing: object, reason: str) -> Callable[[Test], Test]:
    """Decorator: the test runs only where ``missing`` is falsy, else ``skip_or_fail``.

    .. code:: python

        @needs(shutil.which("zstd") is None, reason="zstd CLI missing")
        def test_archive(): ...
    """

    def decorate(test: Test) -> Test:
        if not missing:
            return test

        @functools.wraps(test)
        def unavailable(*args: Any, **kwargs: Any) -> None:
            skip_or_fail(reason)

        return unavailable  # type: ignore[return-value]

    return decorate
