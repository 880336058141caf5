"""What Mailgun's answer to a send says (no infrastructure)."""

from __future__ import annotations

import httpx
import pytest

from channel_email.sending import answered_id
from hilo.outbound import SendUncertain


def test_mailguns_id_is_kept_without_its_brackets() -> None:
    answer = httpx.Response(200, json={"id": "<20261207.1@mg.example.com>", "message": "Queued"})

    assert answered_id(answer) == "20261207.1@mg.example.com"


@pytest.mark.parametrize("body", [b"{}", b'{"id": ""}', b'{"id": 7}', b"Queued. Thank you."])
def test_an_accepted_send_without_an_id_is_reported_as_maybe_sent(body: bytes) -> None:
    """Recorded as sent under an id of Hilo's, its delivered and failed events matched nothing;
    reported failed, an agent sending it again could reach the customer twice."""
    with pytest.raises(SendUncertain, match="may have been sent"):
        answered_id(httpx.Response(200, content=body))
