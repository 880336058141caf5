"""Hilo social channel: Messenger and Instagram messaging webhooks in, interactions out."""
