"""Command-line jobs (`customer-profile rebuild`, `offers init`, ...) when they fail."""

from __future__ import annotations

import json

import pytest
from pymongo.errors import WriteError

from hilo.entrypoint import run_job
from hilo.logs import configure_logging
from hilo.settings import HiloSettings


def test_a_failed_job_exits_1_and_its_error_is_logged_without_the_documents_it_quotes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(
        HiloSettings(environment="test", service_name="customer-profile", log_format="json")
    )
    view = {"name": "Ana García", "address": "Calle Mayor 12, Madrid"}

    async def rebuild() -> int:
        raise WriteError(f"write failed on {view}", 2, {"op": view})

    code = run_job("rebuild", rebuild())

    out = capsys.readouterr()
    [line] = [json.loads(text) for text in out.out.splitlines()]
    assert code == 1
    assert (line["event"], line["job"]) == ("job_failed", "rebuild")
    assert "WriteError: code 2" in line["exception"]
    assert "Ana" not in out.out + out.err
    assert "Calle Mayor" not in out.out + out.err
