"""Offers: list prices and promotions, one owner, one pricing function for every channel."""
