"""Cross-service tests: whole journeys through the real broker and database.

Fixtures for the infrastructure come from the `hilo.testkit` pytest plugin.
"""
