"""`channel-sms`: serve the Twilio SMS webhooks."""

from __future__ import annotations

import uvicorn

from channel_sms.app import create_app
from channel_sms.settings import SmsSettings
from hilo.logs import configure_logging


def main() -> None:
    settings = SmsSettings()
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
