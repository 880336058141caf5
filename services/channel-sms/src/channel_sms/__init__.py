"""Hilo SMS channel: Twilio Messaging webhooks in, normalised interactions out."""
