"""A fake account's balances, for a fake venue that keeps them: free and locked per asset, moved as an
exchange moves them (a resting sell locks its coins until it fills or is cancelled; a fill pays one
asset for the other).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_DIGITS = 8  # amounts are kept to the venue's 8 decimals, so float sums leave no dust


@dataclass
class Wallet:
    """`free` is shared with the venue's own balances dict (what tests set and GET account reports)."""

    free: dict[str, float]
    locked: dict[str, float] = field(default_factory=dict)

    def has(self, asset: str, amount: float) -> bool:
        """Is `amount` of `asset` free?"""
        return round(self.free.get(asset, 0.0) - amount, _DIGITS) >= 0

    def lock(self, asset: str, amount: float) -> None:
        """A resting order holds `amount` (free -> locked); the caller checked `has` first."""
        self._add(self.free, asset, -amount)
        self._add(self.locked, asset, amount)

    def unlock(self, asset: str, amount: float) -> None:
        """A resting order ended without using `amount` (locked -> free)."""
        self._add(self.locked, asset, -amount)
        self._add(self.free, asset, amount)

    def trade(self, *, paid: tuple[str, float], got: tuple[str, float], from_locked: bool = False) -> None:
        """A fill: `paid` (asset, amount) leaves the account, from what is locked for a resting order, and
        `got` arrives, free."""
        self._add(self.locked if from_locked else self.free, paid[0], -paid[1])
        self._add(self.free, got[0], got[1])

    @staticmethod
    def _add(book: dict[str, float], asset: str, amount: float) -> None:
        book[asset] = round(book.get(asset, 0.0) + amount, _DIGITS)
