"""Hilo's test kit: real infrastructure, probes to read it back, the channel contract test.

Installed with `hilo-shared[testkit]`; the pytest plugin registers itself.
"""
