"""Hilo email channel: inbound mail (Mailgun, SendGrid, raw MIME) in, interactions out."""
