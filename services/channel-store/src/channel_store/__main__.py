"""`channel-store`: serve the store receipts and visits API."""

from __future__ import annotations

from channel_store.app import create_app
from channel_store.settings import StoreSettings
from hilo.channel import serve


def main() -> None:
    settings = StoreSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
