"""`channel-email`: serve the inbound email webhooks."""

from __future__ import annotations

from channel_email.app import create_app
from channel_email.settings import EmailSettings
from hilo.channel import serve


def main() -> None:
    settings = EmailSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
