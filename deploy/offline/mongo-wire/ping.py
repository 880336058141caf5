"""The health check: exit 0 once the server answers `ping` (what mongosh's check asks)."""

import os
import sys

from pymongo import MongoClient

host = os.environ.get("MONGO_WIRE_HOST", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")  # noqa: S104
url = f"mongodb://{host}:27017/?directConnection=true"
with MongoClient(url, serverSelectionTimeoutMS=3000) as client:
    sys.exit(0 if client.admin.command("ping").get("ok") == 1 else 1)
