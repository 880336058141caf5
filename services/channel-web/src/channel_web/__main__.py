"""`channel-web`: serve the Segment-compatible tracking API."""

from __future__ import annotations

from channel_web.app import create_app
from channel_web.settings import WebSettings
from hilo.channel import serve


def main() -> None:
    settings = WebSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
