"""Hilo's test kit: samples of the contract, probes to read it back, provider stand-ins and
servers for tests. In-process helpers only; the infrastructure, `make run` and the pytest plugin
are in the `hilo-devkit` workspace package.

Installed with `hilo-shared[testkit]`.
"""
