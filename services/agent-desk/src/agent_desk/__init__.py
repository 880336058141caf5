"""Hilo's agent desk: the whole customer across every channel, live, and replies on any channel."""
