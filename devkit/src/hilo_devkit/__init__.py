"""Hilo's development tooling: real Kafka and MongoDB-wire servers for tests and `make run`
(local processes, or containers where a Docker engine can provide the images), the whole
platform as local processes, `.env.example`, the pytest plugin and the channel contract test.

A workspace package of its own, so that the runtime image carries none of it.
"""
