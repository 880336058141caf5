"""Hilo WhatsApp channel: WhatsApp Cloud API webhooks in, normalised interactions out."""
