"""Local stand-ins of the providers' APIs, speaking their real formats, for tests and local runs."""
