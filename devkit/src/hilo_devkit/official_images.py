"""Exit 0 when this machine's Docker engine has or can pull the official images compose runs,
else say why and exit 1: `make compose-test` builds the offline images (`deploy/offline`, root,
debootstrap and Maven) only then."""

from __future__ import annotations

import sys

from hilo_devkit.containers import docker_unusable
from hilo_devkit.local_platform import compose_images


def main() -> int:
    why = docker_unusable(compose_images())
    print(why or "the official images are usable", file=sys.stderr)  # noqa: T201
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
