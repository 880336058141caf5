"""Hilo offers service: prices and promotions, one version at a time, and quotes."""
