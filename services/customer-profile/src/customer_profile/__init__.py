"""Hilo customer-profile service: one synchronised journey and profile per customer."""
