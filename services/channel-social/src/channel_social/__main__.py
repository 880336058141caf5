"""`channel-social`: serve the Messenger and Instagram webhooks."""

from __future__ import annotations

from channel_social.app import create_app
from channel_social.settings import SocialSettings
from hilo.channel import serve


def main() -> None:
    settings = SocialSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
