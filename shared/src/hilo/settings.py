"""Settings from the environment, one prefix (`HILO_`) for every service.

Each service subclasses `HiloSettings` with its own fields; `.env.example` lists them all. The two
connection strings also answer to the unprefixed names `KAFKA_BOOTSTRAP_SERVERS` and `MONGODB_URL`
that ops tooling and the test infrastructure use.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    FilePath,
    MongoDsn,
    SecretStr,
    UrlConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Item = TypeVar("Item")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaSeparated = Annotated[list[Item], NoDecode, BeforeValidator(_split_commas)]
"""A list given as one comma-separated variable (`HILO_API_KEYS=key1,key2`)."""

SecretList = CommaSeparated[SecretStr]
"""Several secrets at once, so a key can be rotated without downtime."""


DEVELOPMENT_PEPPER = "hilo-development-pepper-not-secret"


class MongoUrl(MongoDsn):
    """A MongoDB connection string as given. Pydantic's `MongoDsn` adds port 27017 to a host
    without one, which turns Atlas's `mongodb+srv://` string into one PyMongo refuses (an SRV
    name takes no port); PyMongo itself defaults a plain host's port."""

    _constraints = UrlConstraints(allowed_schemes=["mongodb", "mongodb+srv"])


MIN_SECRET_CHARS = 16
"""The shortest secret a production run takes (`_no_guessable_secret_in_production`)."""
SECRETS_OF_OTHERS = {
    "kafka_sasl_password",
    "web_write_keys",
    "whatsapp_verify_token",
    "meta_verify_token",
}
"""Secrets whose length is not ours to require: the Kafka password is the broker's; the web
write keys are public (they ship in web pages and in apps already released); a verify token only
answers Meta's subscription handshake, nobody signs with it."""


class HiloSettings(BaseSettings):
    """What every Hilo service needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix="HILO_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    service_name: str = Field(default="hilo", description="Name in logs, metrics and client ids.")
    instance: str = Field(
        default="default", description="Instance name; part of each event's CloudEvents source."
    )
    environment: Literal["development", "test", "production"] = "development"
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("HILO_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every client of every service reaches the brokers: SASL_SSL for "
        "Confluent Cloud and MSK with SASL/SCRAM, SSL for TLS alone or client certificates "
        "(Aiven, MSK with mutual TLS).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="With SASL_*: PLAIN (Confluent Cloud's API keys) or SCRAM."
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="With SASL_*: the user (Confluent Cloud: the API key)."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="With SASL_*: its password (Confluent Cloud: the API secret)."
    )
    kafka_ssl_cafile: FilePath | None = Field(
        default=None,
        description="With SSL or SASL_SSL: the CA bundle the brokers' certificates are checked "
        "against (PEM); unset, the system's trusted CAs.",
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None,
        description="With SSL or SASL_SSL: this client's certificate (PEM), for brokers that "
        "authenticate clients by certificate; with HILO_KAFKA_SSL_KEYFILE.",
    )
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None, description="The private key of HILO_KAFKA_SSL_CERTFILE (PEM, unencrypted)."
    )
    mongodb_url: MongoUrl = Field(
        default=MongoUrl("mongodb://127.0.0.1:27017/"),
        validation_alias=AliasChoices("HILO_MONGODB_URL", "MONGODB_URL"),
        description="A MongoDB connection string: `mongodb://` (hosts, options) or "
        "`mongodb+srv://` (Atlas's).",
    )
    mongodb_database: str = Field(default="hilo", pattern=r"^[A-Za-z0-9_-]{1,60}$")
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every topic name, for shared clusters and isolated tests.",
    )
    topic_partitions: int = Field(
        default=6, ge=1, le=1000, description="Partitions of the keyed topics at creation."
    )
    topic_replication_factor: int = Field(default=1, ge=1, le=7)
    kafka_publish_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=20,
        description="How long a publish may wait for the broker's ack. At most 20 s: the "
        "30-second leases of the offers publisher and the Twilio channels' spool must outlast "
        "a publish, or a second instance could publish the same records around it (offers: an "
        "older version after a newer one, which compaction would keep).",
    )
    kafka_compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = Field(
        default="lz4",
        description="Codec of the record batches producers send (consumers read any). lz4 "
        "costs the least CPU to write and to read; gzip and zstd make batches about a fifth "
        "smaller for two to four times that CPU (docs/benchmarks.md).",
    )
    kafka_max_record_bytes: int = Field(
        default=1_048_576,
        ge=4_096,
        le=100_000_000,
        description="Largest record a producer sends (its max_request_size); channels answer 413 "
        "for an event that, with 2 KiB left for a dead letter's headers, would be larger. Keep "
        "it within the broker's and topics' max.message.bytes.",
    )
    max_future_skew_seconds: float = Field(
        default=300.0,
        ge=0,
        le=31_536_000,
        description="Event times later than this past the receipt time are replaced by the "
        "receipt time and marked `in_the_future`.",
    )
    default_phone_region: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{2}$",
        description="ISO 3166 region for phone numbers written without a country code.",
    )
    subject_pepper: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_PEPPER),
        min_length=16,
        description="Secret that turns identifiers into subjects (pseudonyms; the key of "
        "`interactions` and of the personal-data keys). The same for every service of a "
        "deployment; set a long random value in production and never change it (records sealed "
        "under the old subjects could no longer be opened).",
    )
    mongodb_keys_database: str = Field(
        default="hilo_keys",
        pattern=r"^[A-Za-z0-9_-]{1,60}$",
        description="Database of the personal-data keys (crypto-shredding). Kept apart from the "
        "profiles: `rebuild` empties those, never this; back it up on its own.",
    )
    key_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3_600,
        description="How long a process keeps a personal-data key in memory. An event a channel "
        "receives within this time after its person's erasure may be sealed with the erased "
        "key, and is then unreadable.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _own_pepper_unless_development(self) -> HiloSettings:
        """The development pepper is public: subjects under it are guessable (a hash of every
        number of a country names them), erased identifiers included. Only a run that says it
        is a development or test one (`explicitly_development`) may use it: a deployment
        outside compose that sets no environment is refused, not quietly given it (one that ran
        so names it explicitly to keep it; production never takes it)."""
        public = self.subject_pepper.get_secret_value() == DEVELOPMENT_PEPPER
        defaulted = "subject_pepper" not in self.model_fields_set
        if public and (
            self.environment == "production" or (defaulted and not self.explicitly_development)
        ):
            raise ValueError(
                "set HILO_SUBJECT_PEPPER to a long random secret (or HILO_ENVIRONMENT="
                "development for a development run: its default pepper is public)"
            )
        return self

    @model_validator(mode="after")
    def _no_guessable_secret_in_production(self) -> HiloSettings:
        """A provider's signing secret or an API key of a few characters can be guessed, and a
        webhook signed with it is taken as the provider's (verified: it may join profiles).
        Operators fill the secrets of channels they do not use to get compose to start: a
        production run refuses any shorter than `MIN_SECRET_CHARS` (providers' are 32; make
        one with `openssl rand -hex 32`). A Kafka password is the broker's choice, not ours."""
        if self.environment != "production":
            return self
        for name, value in self:
            if name in SECRETS_OF_OTHERS:
                continue
            for secret in value if isinstance(value, list) else [value]:
                if isinstance(secret, SecretStr) and 0 < len(secret) < MIN_SECRET_CHARS:
                    raise ValueError(
                        f"HILO_{name.upper()} holds a secret of {len(secret)} characters: at "
                        f"least {MIN_SECRET_CHARS} in production, random (openssl rand -hex 32), "
                        "even for a channel you do not use"
                    )
        return self

    @model_validator(mode="after")
    def _kafka_credentials_complete(self) -> HiloSettings:
        """Refuse at start what would only fail at the first connection, far from its cause."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"HILO_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "HILO_KAFKA_SASL_USERNAME and HILO_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(
                "HILO_KAFKA_SASL_USERNAME and _PASSWORD need HILO_KAFKA_SECURITY_PROTOCOL "
                "SASL_PLAINTEXT or SASL_SSL (they would be left unused)"
            )
        tls = self.kafka_security_protocol.endswith("SSL")
        files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not tls and any(files):
            raise ValueError(
                "HILO_KAFKA_SSL_* files need HILO_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("HILO_KAFKA_SSL_CERTFILE and HILO_KAFKA_SSL_KEYFILE go together")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def pepper(self) -> bytes:
        """`subject_pepper` as the key of the HMACs that pseudonymise (subjects, conversations)."""
        return self.subject_pepper.get_secret_value().encode()

    @property
    def client_id(self) -> str:
        return f"{self.service_name}-{self.instance}"

    @property
    def explicitly_development(self) -> bool:
        """The run says it is a development or test one (`make run` does); an unset
        environment is not enough: an API without keys is served only then."""
        return "environment" in self.model_fields_set and self.environment in (
            "development",
            "test",
        )
