"""Hilo web and app channel: Segment HTTP Tracking API calls in, normalised interactions out."""
