"""Simulated customers: who they are on each channel, generated from a seed."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

FIRST = ["Ana", "Jordi", "Marta", "Pau", "Lucía", "Joan", "Inês", "Tiago", "Carla", "Miguel"]
LAST = ["García", "Puig", "Santos", "Ferrer", "Costa", "Vidal", "Silva", "Romero", "Soler", "Lima"]
PRODUCTS = [
    ("SKU-RED-42", "Red running shoes", "59.90"),
    ("SKU-TRAIL-41", "Trail shoes", "89.00"),
    ("SKU-JACKET-M", "Rain jacket", "74.50"),
    ("SKU-SOCKS-3", "Running socks (3 pairs)", "12.95"),
]


@dataclass(frozen=True)
class Person:
    number: int
    first_name: str
    last_name: str
    email: str
    phone: str
    loyalty_id: str
    anonymous_id: str
    messenger_psid: str
    product: tuple[str, str, str]

    @property
    def wa_id(self) -> str:
        return self.phone.lstrip("+")

    @property
    def uses_messenger(self) -> bool:
        return self.number % 3 == 0

    @property
    def drops_a_call(self) -> bool:
        return self.number % 2 == 0

    @property
    def buys_the_promotion(self) -> bool:
        """Adds the promoted SKU to the web cart and buys it in store (`offers`)."""
        return self.number % 5 == 0

    @property
    def returns_the_product(self) -> bool:
        """Brings the product bought in Barcelona back to another store the next day."""
        return self.number % 4 == 2

    @property
    def is_charged_a_stale_price(self) -> bool:
        """Is charged a SKU's old price at a till (`offers`)."""
        return self.number % 5 == 1


def people(count: int, seed: int) -> list[Person]:
    """`count` distinct people; the same seed gives the same people (and event ids)."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:6]
    crowd = []
    for number in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        plain = first.lower().replace("í", "i").replace("ê", "e")
        crowd.append(
            Person(
                number=number,
                first_name=first,
                last_name=last,
                email=f"{plain}.{run}{number}@example.com",
                phone=f"+346{rng.randint(10_000_000, 99_999_999)}",
                loyalty_id=f"LOY-{run}-{number:05d}",
                anonymous_id=str(uuid.UUID(int=rng.getrandbits(128))),
                messenger_psid=str(rng.randint(10**15, 10**16 - 1)),
                product=rng.choice(PRODUCTS),
            )
        )
    return crowd
