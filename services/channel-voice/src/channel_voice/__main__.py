"""`channel-voice`: serve the Twilio Voice callbacks and the call-outcome API."""

from __future__ import annotations

from channel_voice.app import create_app
from channel_voice.settings import VoiceSettings
from hilo.channel import serve


def main() -> None:
    settings = VoiceSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
