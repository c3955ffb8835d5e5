"""The smallest strategy: log every announcement it receives, place no orders."""

from __future__ import annotations

from bridge import Announcement, Context, Strategy


class LogOnly(Strategy):
    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        ctx.log.info(
            "log_only.seen",
            publisher=announcement.publisher,
            listing_type=announcement.listing_type,
            tickers=list(announcement.tickers),
            title=announcement.title,
        )
