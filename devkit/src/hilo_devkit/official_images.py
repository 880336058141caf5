"""Exit 0 when this machine's Docker engine has or can pull the official images compose runs,
else say why and exit 1: `make compose-test` builds the offline images (`deploy/offline`, root,
debootstrap and Maven) only then, or when `HILO_COMPOSE_OFFLINE=1` asks the test to use them
(`tests/test_compose.py` reads the same choice)."""

from __future__ import annotations

import os
import sys

from hilo_devkit.containers import docker_unusable
from hilo_devkit.local_platform import compose_images


def main() -> int:
    if os.environ.get("HILO_COMPOSE_OFFLINE") == "1":
        print("HILO_COMPOSE_OFFLINE=1: the offline images are used", file=sys.stderr)  # noqa: T201
        return 1
    why = docker_unusable(compose_images())
    print(why or "the official images are usable", file=sys.stderr)  # noqa: T201
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
