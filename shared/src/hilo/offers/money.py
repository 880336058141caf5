"""Money arithmetic for offers: `Decimal` only, rounded to the currency's minor unit.

The minor unit comes from the ISO 4217 table itself (the `iso4217` package ships ISO's list):
EUR and USD have 2 decimals, JPY and KRW 0, BHD, KWD and IQD 3. CLDR (what locale libraries
such as Babel use) rounds some currencies differently for display (IQD 0, for one), which would
make two services disagree by a fraction; ISO's figure is what payments and receipts carry.

Rounding is half up (0.005 EUR becomes 0.01): the retail and receipt convention customers
expect, rather than the banker's half even that `Decimal` uses by default.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import cache

import iso4217


class CurrencyError(ValueError):
    """A currency code that is not in ISO 4217, or one without a minor unit (gold, test
    codes): nothing can be priced in it."""


@cache
def minor_units(currency: str) -> int:
    """How many decimals the currency's minor unit has (ISO 4217): EUR 2, JPY 0, BHD 3."""
    try:
        exponent = iso4217.Currency(currency).exponent
    except ValueError:
        raise CurrencyError(f"{currency!r} is not an ISO 4217 currency code") from None
    if exponent is None:
        raise CurrencyError(f"{currency} has no minor unit: nothing is priced in it")
    return exponent


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of the currency: 0.01 for EUR, 1 for JPY, 0.001 for BHD."""
    return Decimal(1).scaleb(-minor_units(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the currency's minor unit, always with exactly that many
    decimals (59.9 EUR is 59.90), so equal amounts also print the same."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def zero(currency: str) -> Decimal:
    """Nothing, in the currency's minor unit (0.00 EUR, 0 JPY)."""
    return round_money(Decimal(0), currency)


def format_amount(amount: Decimal, currency: str) -> str:
    """An amount as a person reads it: with the currency's decimals when it has no more
    (99 becomes 99.00 EUR), else as given (a price set to 0.1234 EUR is not shown rounded)."""
    rounded = round_money(amount, currency)
    if rounded == amount:
        return f"{rounded:f}"
    return f"{amount.normalize():f}"
