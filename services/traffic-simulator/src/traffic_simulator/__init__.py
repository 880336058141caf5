"""Plays realistic cross-channel customer journeys through Hilo, in the providers' formats."""
