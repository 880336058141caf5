"""The profile API holds personal data: it is never served without keys by accident."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import SecretStr

from customer_profile.bootstrap import bootstrap
from customer_profile.settings import ProfileSettings
from hilo.entrypoint import OpenApiRefused

PEPPER = SecretStr("a-production-pepper-of-sufficient-length")


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HILO_ENVIRONMENT", "HILO_API_KEYS", "HILO_ADMIN_API_KEYS", "HILO_SUBJECT_PEPPER"):
        monkeypatch.delenv(name, raising=False)


def test_without_keys_the_api_is_refused_unless_the_run_says_it_is_development() -> None:
    unset = ProfileSettings(subject_pepper=PEPPER)
    assert unset.open_api_refusal() is not None, "an unset environment is not enough"
    assert (
        ProfileSettings(environment="production", subject_pepper=PEPPER).open_api_refusal()
        is not None
    )
    assert ProfileSettings(environment="development").open_api_refusal() is None
    assert ProfileSettings(environment="test").open_api_refusal() is None
    # Reading settings never fails for it: `init`, `rebuild` and `dlq replay` need no keys.
    read_only = ProfileSettings(
        environment="production", subject_pepper=PEPPER, api_keys=[SecretStr("k" * 32)]
    )
    assert read_only.open_api_refusal() is not None, "nobody could erase: refused, not half-run"
    keyed = read_only.model_copy(update={"admin_api_keys": [SecretStr("a" * 32)]})
    assert keyed.open_api_refusal() is None
    with pytest.raises(OpenApiRefused, match="HILO_API_KEYS"):
        bootstrap(ProfileSettings(environment="production", subject_pepper=PEPPER))


def test_serve_exits_with_the_reason() -> None:
    served = subprocess.run(
        [sys.executable, "-m", "customer_profile", "serve"],
        env={"HILO_ENVIRONMENT": "production", "HILO_SUBJECT_PEPPER": PEPPER.get_secret_value()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert served.returncode == 1
    assert "HILO_API_KEYS or HILO_ADMIN_API_KEYS is empty" in served.stderr


def test_production_refuses_the_public_development_pepper() -> None:
    with pytest.raises(ValueError, match="HILO_SUBJECT_PEPPER"):
        ProfileSettings(environment="production")
