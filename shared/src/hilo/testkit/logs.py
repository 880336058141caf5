"""Reading what a module logged, whatever ran before in the same process."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from types import ModuleType
from typing import Any
from unittest import mock

import structlog
from structlog.testing import capture_logs


@contextmanager
def logs_of(*modules: ModuleType) -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog's `capture_logs`, with each module's `log` made anew for the block.

    `hilo.logs` configures structlog to cache a logger on its first use: a module logger first
    used before an earlier test (in the same pytest worker) configured logging again keeps the
    configuration it was first used under, and `capture_logs` alone sees nothing of it, so
    whether a test passes depended on which tests ran before it.
    """
    with ExitStack() as stack:
        for module in modules:
            fresh = structlog.get_logger(module.__name__)
            stack.enter_context(mock.patch.object(module, "log", fresh))
        yield stack.enter_context(capture_logs())
