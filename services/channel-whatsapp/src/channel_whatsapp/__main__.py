"""`channel-whatsapp`: serve the WhatsApp webhook."""

from __future__ import annotations

from channel_whatsapp.app import create_app
from channel_whatsapp.settings import WhatsAppSettings
from hilo.channel import serve


def main() -> None:
    settings = WhatsAppSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
