"""Every service of the platform, and what its settings class says about it.

`make run`, `.env.example` and the deployment checks read the same list, so a new service is
added once, here.
"""

from __future__ import annotations

import importlib
import secrets
from dataclasses import dataclass

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from hilo.settings import HiloSettings


@dataclass(frozen=True)
class ServiceSpec:
    """One deployable service: its Python module, port offset and what it must be given."""

    name: str
    module: str
    settings: str
    """`module:Class` of its settings: what `.env.example` and the compose checks read."""
    port_offset: int
    public_url: bool = False
    """Twilio signs the public URL: the service must know the address it is called on."""
    renamed: tuple[tuple[str, str], ...] = ()
    """(the variable its settings read, the deployment's variable it is given): a setting whose
    name another service uses for something else (offers' API keys are HILO_API_KEYS to the
    service, HILO_OFFERS_API_KEYS in `.env` and `.hilo/platform.env`; its admin keys
    HILO_ADMIN_API_KEYS, HILO_OFFERS_ADMIN_API_KEYS; the numbers channel-sms and channel-voice
    read back, HILO_TWILIO_CATCH_UP_NUMBERS to each, HILO_TWILIO_SMS_NUMBERS and
    HILO_TWILIO_VOICE_NUMBERS)."""

    def deployment_variable(self, setting: str) -> str:
        """The variable of `.env` (and `make run`'s secrets) that gives this service `setting`."""
        return dict(self.renamed).get(setting, setting)


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "customer-profile",
        "customer_profile",
        "customer_profile.settings:ProfileSettings",
        0,
    ),
    ServiceSpec(
        "channel-web",
        "channel_web",
        "channel_web.settings:WebSettings",
        1,
    ),
    ServiceSpec(
        "channel-whatsapp",
        "channel_whatsapp",
        "channel_whatsapp.settings:WhatsAppSettings",
        2,
    ),
    ServiceSpec(
        "channel-sms",
        "channel_sms",
        "channel_sms.settings:SmsSettings",
        3,
        public_url=True,
        renamed=(("HILO_TWILIO_CATCH_UP_NUMBERS", "HILO_TWILIO_SMS_NUMBERS"),),
    ),
    ServiceSpec(
        "channel-email",
        "channel_email",
        "channel_email.settings:EmailSettings",
        4,
    ),
    ServiceSpec(
        "channel-store",
        "channel_store",
        "channel_store.settings:StoreSettings",
        5,
    ),
    ServiceSpec(
        "channel-voice",
        "channel_voice",
        "channel_voice.settings:VoiceSettings",
        6,
        public_url=True,
        renamed=(("HILO_TWILIO_CATCH_UP_NUMBERS", "HILO_TWILIO_VOICE_NUMBERS"),),
    ),
    ServiceSpec(
        "channel-social",
        "channel_social",
        "channel_social.settings:SocialSettings",
        7,
    ),
    ServiceSpec(
        "agent-desk",
        "agent_desk",
        "agent_desk.settings:DeskSettings",
        10,
    ),
    ServiceSpec(
        "journey-analytics",
        "journey_analytics",
        "journey_analytics.settings:AnalyticsSettings",
        16,
    ),
    ServiceSpec(
        "offers",
        "offers",
        "offers.settings:OffersSettings",
        15,
        renamed=(
            ("HILO_API_KEYS", "HILO_OFFERS_API_KEYS"),
            ("HILO_ADMIN_API_KEYS", "HILO_OFFERS_ADMIN_API_KEYS"),
        ),
    ),
)
"""Every service of the platform; docker-compose.yml runs the same list (a test checks it)."""

DEV_AGENT = "dev"
"""The agent `make run` lets sign in to the desk when HILO_DESK_AGENTS is not set."""


def settings_class(spec: ServiceSpec) -> type[HiloSettings]:
    module, name = spec.settings.split(":")
    cls: type[HiloSettings] = getattr(importlib.import_module(module), name)
    return cls


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable a settings field reads (its first alias, else `HILO_<NAME>`)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return "HILO_" + name.upper()


def is_secret(field: FieldInfo) -> bool:
    return "SecretStr" in repr(field.annotation)


@dataclass(frozen=True)
class SignIn:
    """The desk's development agent: shown in the summary, written to `.hilo/platform.env`."""

    agent: str
    password: str


def development_sign_in() -> tuple[str, SignIn]:
    """HILO_DESK_AGENTS with one agent, `dev`, whose random password is good for this run."""
    from agent_desk.auth import hash_password  # noqa: PLC0415 - a service package, needed here only

    sign_in = SignIn(DEV_AGENT, secrets.token_urlsafe(12))
    return f"{sign_in.agent}:{hash_password(sign_in.password)}", sign_in
