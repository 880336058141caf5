"""Hilo voice channel: Twilio Voice status callbacks and contact-centre call outcomes."""
