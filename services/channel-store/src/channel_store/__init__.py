"""Hilo store channel: POS receipts (real time and end-of-day CSV) and store visits."""
