"""`channel-sms`: serve the Twilio SMS webhooks."""

from __future__ import annotations

from channel_sms.app import create_app
from channel_sms.settings import SmsSettings
from hilo.channel import serve


def main() -> None:
    settings = SmsSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
