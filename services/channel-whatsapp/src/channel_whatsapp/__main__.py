"""`channel-whatsapp`: serve the WhatsApp webhook."""

from __future__ import annotations

import uvicorn

from channel_whatsapp.app import create_app
from channel_whatsapp.settings import WhatsAppSettings
from hilo.logs import configure_logging


def main() -> None:
    settings = WhatsAppSettings()
    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
