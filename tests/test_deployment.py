"""The docker-compose deployment, checked without Docker: what ops rely on must hold.

There is no Docker engine on the machines that build Hilo, so the compose file, the Dockerfile,
the monitoring configuration and `.env.example` are checked against the code they deploy.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import AliasChoices, ValidationError

import agent_desk.queue  # noqa: F401 - registers the queue's gauges
import customer_profile.bootstrap  # noqa: F401 - registers the profile metrics (all its modules)
import hilo.channel  # noqa: F401 - registers the channel metrics
import journey_analytics.app  # noqa: F401 - registers the journey measures
from agent_desk.auth import Agents, hash_password
from agent_desk.settings import DeskSettings
from channel_store.settings import StoreSettings
from customer_profile.settings import ProfileSettings
from hilo import topics
from hilo.entrypoint import GRACEFUL_SECONDS
from hilo.settings import HiloSettings
from hilo.shutdown import STEP_SECONDS
from hilo_devkit.catalogue import SERVICES, SignIn, settings_class, variable
from hilo_devkit.env_example import development_env, render
from hilo_devkit.local_infra import kafka_version
from hilo_devkit.local_platform import secret_variables
from traffic_simulator.settings import SimulatorSettings

ROOT = Path(__file__).resolve().parents[1]
INFRASTRUCTURE = {"kafka", "mongo"}
OBSERVABILITY = {"prometheus", "grafana", "kafka-exporter"}
ONE_SHOT = {"init", "offers-demo", "traffic-simulator"}
SERVER = {"FORWARDED_ALLOW_IPS"}
"""Read by uvicorn itself, not a settings class: the desk's, whose sign-in counts addresses."""
DERIVED_SECRETS = {"HILO_PROFILE_API_KEY"}
"""Secrets that default to another service's (checked on their own below)."""


class _ComposeLoader(yaml.SafeLoader):
    """Compose's `!reset` and `!override` tags, read as plain values."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    raise TypeError(f"unexpected node {node!r}")


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _plain)


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(ROOT / "docker-compose.yml")


def settings_for(service: str) -> type[HiloSettings] | type[SimulatorSettings]:
    if service == "init":
        return ProfileSettings
    if service == "traffic-simulator":
        return SimulatorSettings
    if service == "offers-demo":
        return settings_for("offers")
    return settings_class(next(spec for spec in SERVICES if spec.name == service))


def accepted_variables(cls: type[HiloSettings] | type[SimulatorSettings]) -> set[str]:
    names = set()
    prefix = cls.model_config.get("env_prefix", "")
    for name, field in cls.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        if isinstance(field.validation_alias, AliasChoices):
            names |= {str(choice) for choice in field.validation_alias.choices}
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
    return names


def test_compose_runs_every_service_of_the_platform(compose: dict[str, Any]) -> None:
    services = set(compose["services"])

    assert services == (
        INFRASTRUCTURE | ONE_SHOT | OBSERVABILITY | {spec.name for spec in SERVICES}
    )
    for spec in SERVICES:
        command = compose["services"][spec.name]["command"]
        assert command[0] in {
            ep.name for ep in importlib.metadata.entry_points(group="console_scripts")
        }
        assert command[0] == spec.name or command == ["customer-profile", "serve"]


def test_every_service_is_health_checked_and_waits_for_what_it_needs(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        assert "container_name" not in service, f"{name}: a fixed name prevents scaling"
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no health check"
            assert service.get("restart") == "unless-stopped", f"{name} is not restarted"
            assert service.get("mem_limit"), f"{name} has no memory limit"
        if name in INFRASTRUCTURE:
            continue
        conditions = {dep.get("condition") for dep in service["depends_on"].values()}
        assert conditions <= {"service_healthy", "service_completed_successfully"}, name
    profile = compose["services"]["init"]["depends_on"]
    assert profile == {
        "kafka": {"condition": "service_healthy"},
        "mongo": {"condition": "service_healthy"},
    }
    for spec in SERVICES:
        depends = compose["services"][spec.name]["depends_on"]
        expected = {"init": {"condition": "service_completed_successfully"}}
        if spec.name == "agent-desk":
            expected["customer-profile"] = {"condition": "service_healthy"}
        assert depends == expected, spec.name


def test_every_common_setting_set_in_env_reaches_every_service(compose: dict[str, Any]) -> None:
    """`.env.example` says the common settings go to every service: each is in `x-hilo-env`,
    taken from `.env` (service_name is each service's own)."""
    common = compose["x-hilo-env"]
    fields = set(HiloSettings.model_fields) - {"service_name"}

    missing = sorted(
        f"HILO_{name.upper()}" for name in fields if f"HILO_{name.upper()}" not in common
    )
    assert missing == []
    for name in fields:
        assert f"${{HILO_{name.upper()}:" in str(common[f"HILO_{name.upper()}"]), name


def test_every_setting_of_the_readmes_common_table_reaches_every_service_that_reads_it(
    compose: dict[str, Any],
) -> None:
    """The README's table of common settings (some of them the channels' only) is what an
    operator sets once in `.env`: compose must pass each one on to every service reading it."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1]
    table = re.search(r"^\|.*?(?=\n\n)", section, re.M | re.S)
    assert table
    named = set(re.findall(r"`(HILO_[A-Z0-9_]+)`", table.group()))
    assert {"HILO_KAFKA_LINGER_MS", "HILO_SPOOL_DRAIN_SECONDS"} <= named

    missing = {
        name: sorted(named & accepted_variables(settings_for(name)) - set(service["environment"]))
        for name, service in compose["services"].items()
        if name not in INFRASTRUCTURE | OBSERVABILITY and "profiles" not in service  # not demos
    }
    assert {name: unset for name, unset in missing.items() if unset} == {}


def test_the_profile_service_scales(compose: dict[str, Any]) -> None:
    """Its host port range holds one port per partition, none another service publishes."""
    [mapping] = compose["services"]["customer-profile"]["ports"]

    matched = re.fullmatch(
        r"\$\{API_HOST_ADDRESS:-127.0.0.1\}:\$\{PROFILE_HOST_PORTS:-(\d+)-(\d+)\}:8080", mapping
    )
    assert matched
    first, last = int(matched[1]), int(matched[2])
    fixed = {
        int(port)
        for name, service in compose["services"].items()
        if name != "customer-profile"
        for published in service.get("ports", [])
        for port in re.findall(r":-(\d+)\}:", published)
    }
    assert last - first + 1 >= 6, "fewer host ports than the default partitions"
    assert not fixed & set(range(first, last + 1)), "the range takes other services' ports"
    environment = compose["services"]["customer-profile"]["environment"]
    assert "HILO_CONSUMER_GROUP" in environment


def test_infrastructure_ports_are_published_on_loopback_only_by_default(
    compose: dict[str, Any],
) -> None:
    for name in ("kafka", "mongo", "prometheus", "grafana"):
        for mapping in compose["services"][name]["ports"]:
            assert str(mapping).startswith("${INFRA_HOST_ADDRESS:-127.0.0.1}:"), (name, mapping)


def test_the_apis_holding_personal_data_are_published_on_loopback_only_by_default(
    compose: dict[str, Any],
) -> None:
    """The profile API (erasure and export included), offers' admin API, the measures and the
    desk answer plain HTTP: reached through the proxy on this host, or the compose network.
    A port Docker publishes on every interface is not held back by the host's firewall."""
    for name in ("customer-profile", "offers", "journey-analytics", "agent-desk"):
        for mapping in compose["services"][name]["ports"]:
            assert str(mapping).startswith("${API_HOST_ADDRESS:-127.0.0.1}:"), (name, mapping)


def test_every_variable_compose_sets_is_a_setting_of_that_service(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in INFRASTRUCTURE | OBSERVABILITY:
            continue
        unknown = set(service["environment"]) - accepted_variables(settings_for(name)) - SERVER
        assert not SERVER & set(service["environment"]) or name == "agent-desk", name
        assert not unknown, f"{name} is given variables it does not read: {sorted(unknown)}"


OUTBOUND = {
    "channel-whatsapp": {"HILO_WHATSAPP_ACCESS_TOKEN", "HILO_WHATSAPP_PHONE_NUMBER_ID"},
    "channel-sms": {
        "HILO_TWILIO_ACCOUNT_SID",
        "HILO_TWILIO_FROM_NUMBER",
        "HILO_TWILIO_MESSAGING_SERVICE_SID",
    },
    "channel-email": {"HILO_MAILGUN_API_KEY", "HILO_MAILGUN_DOMAIN", "HILO_EMAIL_FROM"},
    "channel-social": {
        "HILO_MESSENGER_PAGE_ACCESS_TOKEN",
        "HILO_INSTAGRAM_ACCESS_TOKEN",
        "HILO_INSTAGRAM_ACCOUNT_ID",
    },
}
"""What an agent's replies on each channel need (docs/channels.md, 'Outbound ...')."""


@pytest.mark.parametrize(("service", "variables"), OUTBOUND.items())
def test_the_settings_replies_need_reach_each_channel_from_env(
    compose: dict[str, Any], service: str, variables: set[str]
) -> None:
    """Set in `.env`, they must reach the container, or every reply fails 'not configured'."""
    environment = compose["services"][service]["environment"]
    channels_doc = (ROOT / "docs" / "channels.md").read_text()

    assert {name for name in variables if environment.get(name) == f"${{{name}:-}}"} == variables
    assert {name for name in variables if f"`{name}`" in channels_doc} == variables


def test_every_setting_the_desk_docs_give_for_compose_reaches_the_desk(
    compose: dict[str, Any],
) -> None:
    table = (ROOT / "docs" / "agent-desk.md").read_text().split("It needs these settings")[1]
    first_cells = re.findall(r"^\| ([^|]+) \|", table.split("\n\n")[1], re.M)
    documented = set(re.findall(r"`(HILO_[A-Z_]+)`", " ".join(first_cells)))
    environment = compose["services"]["agent-desk"]["environment"]

    assert len(documented) >= 8
    assert documented - set(environment) == set()


def test_every_service_gets_its_secrets_from_env_and_none_is_baked_in(
    compose: dict[str, Any],
) -> None:
    for spec in SERVICES:
        environment = compose["services"][spec.name]["environment"]
        fields = settings_class(spec).model_fields
        required = {variable(n, f) for n, f in fields.items() if f.is_required()}
        for secret in secret_variables(spec):
            if secret in DERIVED_SECRETS:
                continue
            # Required secrets stop compose with a message; optional ones may default to empty.
            # A renamed one comes from its own variable of `.env` (offers' keys).
            source = spec.deployment_variable(secret)
            stop = rf"\$\{{{source}:\?.+\}}"
            pattern = stop if secret in required else rf"{stop}|\$\{{{source}:-\}}"
            assert re.fullmatch(pattern, str(environment[secret])), secret
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "HILO_" not in dockerfile.replace("hilo", "")


def test_image_versions_match_the_local_infrastructure(compose: dict[str, Any]) -> None:
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    cluster = load(ROOT / "deploy" / "compose.cluster.yml")
    images = {s["image"] for s in cluster["services"].values() if "image" in s}
    assert images == {f"apache/kafka:{kafka_version()}", compose["services"]["mongo"]["image"]}


def test_the_image_installs_from_the_same_pins_as_make_test() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    uv_in_make = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    uv_in_image = re.search(r"^ARG UV_VERSION=(\S+)$", dockerfile, re.M)

    assert uv_in_make
    assert uv_in_image
    assert uv_in_image.group(1) == uv_in_make.group(1)
    assert "COPY pyproject.toml uv.lock ./" in dockerfile
    assert "uv sync --frozen --only-group services --no-editable" in dockerfile
    assert "$(UV) sync --frozen --all-packages" in makefile
    assert re.search(r"^USER hilo$", dockerfile, re.M), "the service must not run as root"
    assert dockerfile.count("FROM ") == 2, "multi-stage: build tools stay out of the image"


def test_the_image_carries_every_service_and_no_development_tooling() -> None:
    """What `uv sync --only-group services` installs, read from the lock as the image build reads
    it: every service, and none of hilo-devkit, the test runners or testcontainers."""
    uv = ROOT / ".tools" / "bin" / "uv"
    exported = subprocess.run(
        [str(uv), "export", "--frozen", "--only-group", "services", "--no-hashes", "--no-editable"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requirements = {line.split("==")[0].strip() for line in exported.splitlines()}
    services = {f"./services/{spec.name}" for spec in SERVICES} | {"./services/traffic-simulator"}
    assert services <= requirements
    development = {"-e ./devkit", "./devkit", "testcontainers", "pytest", "docker", "playwright"}
    assert not development & requirements, development & requirements


def test_every_compose_run_in_the_docs_names_a_program_of_the_image() -> None:
    """`docker compose run SERVICE ARGS` replaces the image's command: ARGS must start with one
    of the programs the image installs (the workspace's console scripts)."""
    scripts = {entry.name for entry in importlib.metadata.entry_points(group="console_scripts")}
    text = " ".join(
        path.read_text() for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    )
    runs = re.findall(r"docker compose run (?:--rm )?([\w-]+) ([\w-]+)", text)

    assert runs
    assert [program for _, program in runs if program not in scripts] == []


def test_the_readmes_topic_table_is_the_registry() -> None:
    """Operators who create topics by hand (a managed Kafka) do it from this table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Topics", 1)[1].split("\n\n", 2)[1]

    documented = dict(
        re.findall(r"^\| `([\w.-]+)` \| [^|]+ \| (compact|delete, \d+ d)\b", table, re.M)
    )

    assert documented == {
        spec.topic.value: spec.cleanup_policy
        if spec.cleanup_policy == "compact"
        else f"delete, {spec.retention_ms // topics.DAY_MS} d"
        for spec in topics.REGISTRY
    }


def test_every_service_names_itself_as_the_catalogue_does() -> None:
    """`service_name` is the `service` of every log line and the prefix of the Kafka client id:
    a settings class that keeps the default logs as `hilo`, indistinguishable from the rest."""
    names = {
        spec.name: settings_class(spec).model_fields["service_name"].default for spec in SERVICES
    }

    assert names == {spec.name: spec.name for spec in SERVICES}


def test_env_example_is_current_and_names_every_compose_variable() -> None:
    committed = (ROOT / ".env.example").read_text()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    cluster_text = (ROOT / "deploy" / "compose.cluster.yml").read_text()

    assert committed == render(), "run `make env-example` and commit .env.example"
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", committed, re.M))
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", compose_text + cluster_text))
    assert used - documented == set()
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):\?", compose_text))
    to_fill = set(re.findall(r"^([A-Z][A-Z0-9_]+)=$", committed, re.M))
    assert required <= to_fill


def test_prometheus_scrapes_every_service_and_the_dashboard_reads_real_metrics() -> None:
    prometheus = load(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for spec in SERVICES:
        [target] = jobs[spec.name]["dns_sd_configs"]
        assert target == {"names": [spec.name], "type": "A", "port": 8080 + spec.port_offset}
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    exported = {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in suffixes.get(metric.type, [""])
    }
    dashboards = {
        path.stem: json.loads(path.read_text())
        for path in (ROOT / "deploy/grafana/dashboards").glob("*.json")
    }
    assert set(dashboards) == {"hilo-overview", "omnichannel-health"}
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for metric in re.findall(r"\b(hilo_[a-z_]+)", target["expr"]):
                    assert metric in exported, f"{panel['title']}: {metric} is not exported"
    overview = dashboards["hilo-overview"]["panels"]
    assert any("kafka_consumergroup_lag" in p["targets"][0]["expr"] for p in overview)


def test_every_http_service_listens_where_compose_and_make_run_expect_it(
    compose: dict[str, Any],
) -> None:
    for spec in SERVICES:
        port = 8080 + spec.port_offset
        service = compose["services"][spec.name]
        assert service["environment"]["HILO_HTTP_PORT"] == port
        assert f"127.0.0.1:{port}/health/ready" in " ".join(service["healthcheck"]["test"])
        assert settings_class(spec).model_fields["http_port"].default == port


def test_the_development_env_fills_every_required_variable() -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    values = dict(
        line.split("=", 1)
        for line in development_env().splitlines()
        if line and not line.startswith("#")
    )

    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):\?", compose_text))
    assert required <= {name for name, value in values.items() if value}
    assert values["HILO_API_KEYS"] != development_env().split("HILO_API_KEYS=")[1].split()[0]


def test_the_desk_calls_the_profile_api_with_one_of_its_keys_and_its_agents_are_required(
    compose: dict[str, Any],
) -> None:
    environment = compose["services"]["agent-desk"]["environment"]

    assert environment["HILO_PROFILE_API_URL"] == "http://customer-profile:8080"
    # An empty HILO_PROFILE_API_KEY means HILO_API_KEYS, what the profile service accepts.
    assert environment["HILO_PROFILE_API_KEY"] == "${HILO_PROFILE_API_KEY:-${HILO_API_KEYS}}"
    assert compose["services"]["customer-profile"]["environment"]["HILO_API_KEYS"].startswith(
        "${HILO_API_KEYS:?"
    )
    # Optional in the settings (development makes them up), never in a deployment.
    for secret in ("HILO_DESK_AGENTS", "HILO_DESK_SESSION_SECRET"):
        assert re.fullmatch(rf"\$\{{{secret}:\?.+\}}", environment[secret]), secret


def test_the_development_env_lets_the_desk_start_in_production_and_the_dev_agent_sign_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = f"dev:{hash_password('open sesame')}"
    text = development_env((entry, SignIn("dev", "open sesame")))
    values = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )

    # Compose would expand the `$` of an unquoted argon2 hash (to nothing).
    assert values["HILO_DESK_AGENTS"] == f"'{entry}'"
    assert values["HILO_PROFILE_API_KEY"] == values["HILO_API_KEYS"]
    assert "agent dev, password open sesame" in text.splitlines()[-1]
    # What the desk's container gets once compose has read .env (quotes removed).
    monkeypatch.setenv("HILO_ENVIRONMENT", "production")
    monkeypatch.setenv("HILO_DESK_AGENTS", values["HILO_DESK_AGENTS"].strip("'"))
    for name in ("HILO_DESK_SESSION_SECRET", "HILO_PROFILE_API_KEY", "HILO_SUBJECT_PEPPER"):
        monkeypatch.setenv(name, values[name])
    settings = DeskSettings()
    assert Agents(settings.desk_agents).verify("dev", "open sesame")


def test_offers_has_keys_of_its_own_and_the_demo_seeds_it_before_the_simulator_plays(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    offers = services["offers"]["environment"]
    own_keys = "${HILO_OFFERS_API_KEYS:?set HILO_OFFERS_API_KEYS in .env}"
    admin_keys = "${HILO_OFFERS_ADMIN_API_KEYS:?set HILO_OFFERS_ADMIN_API_KEYS in .env}"

    # Keys of its own, not the profile API's; and admin keys apart from the channels' quote keys.
    assert offers["HILO_API_KEYS"] == own_keys
    assert offers["HILO_ADMIN_API_KEYS"] == admin_keys
    assert offers["HILO_PROFILE_API_URL"] == "http://customer-profile:8080"
    assert offers["HILO_PROFILE_API_KEY"] == "${HILO_PROFILE_API_KEY:-${HILO_API_KEYS}}"
    [mapping] = services["offers"]["ports"]
    assert mapping == "${API_HOST_ADDRESS:-127.0.0.1}:${OFFERS_HOST_PORT:-8095}:8095"
    demo = services["offers-demo"]
    assert demo["profiles"] == services["traffic-simulator"]["profiles"] == ["demo"]
    assert demo["command"] == ["offers", "demo", "--url", "http://offers:8095"]
    assert demo["environment"]["HILO_ADMIN_API_KEYS"] == admin_keys
    assert demo["depends_on"] == {"offers": {"condition": "service_healthy"}}
    simulator = services["traffic-simulator"]
    assert simulator["environment"]["HILO_OFFERS_API_KEYS"] == own_keys
    assert simulator["environment"]["HILO_URL_OFFERS"] == "http://offers:8095"
    assert simulator["depends_on"]["offers-demo"] == {"condition": "service_completed_successfully"}
    committed = (ROOT / ".env.example").read_text()
    assert "\nHILO_OFFERS_API_KEYS=\n" in committed
    assert "\nHILO_OFFERS_ADMIN_API_KEYS=\n" in committed
    assert "reads it as HILO_API_KEYS" in committed


def test_the_offline_override_replaces_every_image_it_can_build(compose: dict[str, Any]) -> None:
    """deploy/compose.offline.yml: every registry image swapped for one deploy/offline/build.sh
    tags, every Hilo build on the offline Python base, and what cannot be built left out."""
    offline = load(ROOT / "deploy" / "compose.offline.yml")["services"]
    build_script = (ROOT / "deploy" / "offline" / "build.sh").read_text()
    for name, service in compose["services"].items():
        override = offline.get(name, {})
        if "build" in service:
            assert override["build"]["args"]["PYTHON_IMAGE"] == "hilo-offline/python:3.11-bookworm"
            assert override["build"]["dockerfile"] == service["build"]["dockerfile"]
        elif override.get("profiles") == ["registry-only"]:
            assert name in {"grafana", "kafka-exporter"}, f"{name} is left out offline"
        else:
            repository = override["image"].split(":")[0]
            assert repository.startswith("hilo-offline/"), name
            assert repository.removeprefix("hilo-offline/") in build_script, name
    assert offline["kafka"]["image"] == f"hilo-offline/kafka:{kafka_version()}"
    secantus = (ROOT / "deploy" / "local" / "secantusdb" / "requirements.txt").read_text()
    assert f"SecantusDB=={offline['mongo']['image'].split(':')[1]}" in secantus


def test_the_cluster_override_points_every_service_at_the_whole_cluster(
    compose: dict[str, Any],
) -> None:
    cluster = load(ROOT / "deploy" / "compose.cluster.yml")["services"]
    for name, service in compose["services"].items():
        if "MONGODB_URL" in service.get("environment", {}):
            url = cluster[name]["environment"]["MONGODB_URL"]
            assert "mongo-2:27017,mongo-3:27017/?replicaSet=rs0&authSource=admin" in url, name
            assert "kafka-2:9092" in cluster[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]


def _mebibytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mMgG])", size).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit.lower() == "g" else 1)


def test_every_kafka_broker_keeps_its_heap_and_its_health_check_within_its_memory(
    compose: dict[str, Any],
) -> None:
    """The image's default heap (-Xmx1G) is the whole 1g limit before the JVM's other memory,
    and the health check starts a JVM every 10 s in the same limit, which takes
    `KAFKA_HEAP_OPTS` from the environment unless told otherwise."""
    cluster = load(ROOT / "deploy" / "compose.cluster.yml")["services"]
    brokers = {
        name: {**compose["services"].get(name, {}), **service}
        for name, service in {**compose["services"], **cluster}.items()
        if name.startswith("kafka") and name != "kafka-exporter"
    }
    assert set(brokers) == {"kafka", "kafka-2", "kafka-3"}
    for name, broker in brokers.items():
        base = compose["services"]["kafka"] if name == "kafka" else broker
        heap = str(base["environment"]["KAFKA_HEAP_OPTS"])
        maximum = re.search(r"-Xmx(\d+[mMgG])", heap)
        assert maximum, (name, heap)
        assert _mebibytes(maximum[1]) <= 0.8 * _mebibytes(base["mem_limit"]), (name, heap)
        check = " ".join(base["healthcheck"]["test"])
        assert "KAFKA_HEAP_OPTS=-Xmx128m " in check, (name, check)


def test_mongodb_requires_authentication_and_hilo_has_a_user_of_its_own(
    compose: dict[str, Any],
) -> None:
    mongo = compose["services"]["mongo"]
    assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD"].startswith("${MONGO_ROOT_PASSWORD:?")
    assert any("create-hilo-user.js:/docker-entrypoint-initdb.d/" in v for v in mongo["volumes"])
    url = compose["services"]["customer-profile"]["environment"]["MONGODB_URL"]
    assert url.startswith("mongodb://${HILO_MONGO_USERNAME:-hilo}:${HILO_MONGO_PASSWORD:?")
    assert url.endswith("@mongo:27017/?authSource=admin")
    script = (ROOT / "deploy" / "mongo" / "create-hilo-user.js").read_text()
    assert '{ role: "readWrite", db: env.HILO_MONGODB_DATABASE }' in script
    assert '{ role: "readWrite", db: env.HILO_MONGODB_KEYS_DATABASE }' in script
    assert "root" not in script.split("roles:")[1]


PER_SERVICE = {"HILO_HTTP_PORT", "HILO_CONSUMER_GROUP", "HILO_SERVICE_NAME"}
"""Names each service is given a value of its own for, not one from `.env` for all."""


def test_a_setting_compose_passes_from_env_reaches_every_service_reading_it(
    compose: dict[str, Any],
) -> None:
    """`.env` is one namespace: a setting set there (`HILO_CONVERSATION_WINDOW_HOURS`, which
    the profile and journey-analytics must agree on) reaches all its readers or none, and
    `.env.example` marks the ones it reaches none of (38 did nothing, silently, when set)."""
    services = {
        name: service
        for name, service in compose["services"].items()
        if name not in INFRASTRUCTURE | OBSERVABILITY | ONE_SHOT
    }
    given = {name: set(service["environment"]) for name, service in services.items()}
    from_env = set().union(*given.values()) - PER_SERVICE - SERVER
    missing = {
        name: sorted((from_env & accepted_variables(settings_for(name))) - given[name])
        for name in services
    }
    assert {name: unset for name, unset in missing.items() if unset} == {}

    example = (ROOT / ".env.example").read_text()
    marked = set(re.findall(r"Override file only.*\n# (HILO_[A-Z0-9_]+)=", example))
    assert marked == {"HILO_HTTP_HOST", "HILO_MAX_BODY_BYTES", "HILO_CONSUMER_GROUP"}


def test_compose_lets_a_service_finish_its_stop_before_it_kills_it(
    compose: dict[str, Any],
) -> None:
    """Open requests (5 s), the in-flight batch (`HILO_SHUTDOWN_GRACE_SECONDS`) and one closing
    step (10 s): compose's default of 10 s killed a stop half-way, before its log said why."""
    grace_default = ProfileSettings.model_fields["shutdown_grace_seconds"].default
    needed = GRACEFUL_SECONDS + grace_default + STEP_SECONDS
    for name, service in compose["services"].items():
        if name in INFRASTRUCTURE | OBSERVABILITY | ONE_SHOT:
            continue
        grace = re.fullmatch(r"(\d+)s", str(service.get("stop_grace_period", "10s")))
        assert grace, name
        assert int(grace[1]) >= needed, name


def test_the_channels_webhooks_are_published_on_both_address_families(
    compose: dict[str, Any],
) -> None:
    """An address in a port line binds that family alone: `0.0.0.0:8081:8081` left a provider
    reaching the host over IPv6 unanswered. Loopback binding is the override file's."""
    for spec in SERVICES:
        if spec.name.startswith("channel-"):
            for mapping in compose["services"][spec.name]["ports"]:
                assert re.fullmatch(r"\$\{[A-Z]+_HOST_PORT:-\d+\}:\d+", str(mapping)), mapping


def test_channel_store_has_the_memory_its_largest_end_of_day_file_takes(
    compose: dict[str, Any],
) -> None:
    """A file takes at most about 7 times its size while read (150 MB for 20 MB of rows all
    rejected, or with one emoji, measured); one is read at a time, beside the service's own."""
    limit = _mebibytes(str(compose["services"]["channel-store"]["mem_limit"]))
    largest = StoreSettings.model_fields["max_body_bytes"].default
    assert limit * 1024**2 >= 8 * largest + 256 * 1024**2


def test_every_hilo_container_starts_with_what_compose_gives_it(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's settings validate from its compose environment alone, `.env` filled as
    the development env fills it: `offers demo` once refused to start for want of a pepper
    compose did not pass it, and the demo profile with it."""
    env = dict(
        line.split("=", 1)
        for line in development_env().splitlines()
        if line and not line.startswith("#")
    )
    env = {name: value.strip("'") for name, value in env.items()}
    refused = {}
    for name, service in compose["services"].items():
        if name in INFRASTRUCTURE | OBSERVABILITY:
            continue
        for variable_name in [v for v in os.environ if v.startswith("HILO_")]:
            monkeypatch.delenv(variable_name)
        for variable_name, value in service["environment"].items():
            monkeypatch.setenv(variable_name, _substituted(str(value), env))
        try:
            settings_for(name)()
        except ValidationError as exc:
            refused[name] = str(exc)
    assert refused == {}


def _substituted(value: str, env: dict[str, str]) -> str:
    """`value` as compose gives it to a container when `.env` holds `env`: `${X}`, `${X:-d}`
    (`d` substituted in turn), `${X:?message}` and `$$`."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            end = _closing_brace(value, i + 2)
            found = re.fullmatch(r"(\w+)(?:(:[-?])(.*))?", value[i + 2 : end], re.DOTALL)
            assert found, value
            name, operator, operand = found.groups()
            given = env.get(name, "")
            out.append(given if given or operator != ":-" else _substituted(operand, env))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _closing_brace(value: str, start: int) -> int:
    depth = 1
    for j in range(start, len(value)):
        if value.startswith("${", j):
            depth += 1
        elif value[j] == "}":
            depth -= 1
            if not depth:
                return j
    raise ValueError(f"no closing brace in {value!r}")


def test_a_setting_compose_gives_under_another_name_is_set_in_env_by_that_name(
    compose: dict[str, Any],
) -> None:
    """`.env.example` names what to set in `.env`: a service's own name for a setting compose
    fills from another variable (HILO_TWILIO_CATCH_UP_NUMBERS from HILO_TWILIO_SMS_NUMBERS) would
    be set there and do nothing."""
    example = (ROOT / ".env.example").read_text()
    renamed = {}
    for name, service in compose["services"].items():
        for setting, value in (service.get("environment") or {}).items():
            given = re.match(r"\$\{(\w+)", str(value))
            if given and given[1] != setting and setting.startswith("HILO_"):
                renamed[(name, setting)] = given[1]
    for (name, setting), source in renamed.items():
        if name in ONE_SHOT | INFRASTRUCTURE | OBSERVABILITY or setting in DERIVED_SECRETS:
            continue
        spec = next(spec for spec in SERVICES if spec.name == name)
        assert spec.deployment_variable(setting) == source, (name, setting)
    assert "\n# HILO_TWILIO_CATCH_UP_NUMBERS=" not in example
