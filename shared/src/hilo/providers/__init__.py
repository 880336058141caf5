"""Provider webhook conventions that more than one channel service speaks (Meta, Twilio).

A channel service translates one provider's payloads; how that provider signs and handshakes is
the same for every channel that uses it, so it lives here once.
"""
