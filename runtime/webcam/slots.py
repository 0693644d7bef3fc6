"""``LatestSlot``: the newest-wins mailbox between two pipeline stages."""

from __future__ import annotations

import threading


class LatestSlot:
    """A one-item mailbox: ``put`` replaces an unread item (counting it as dropped), ``get`` waits for a new one.

    A slower consumer therefore always gets the newest item and never a backlog. ``close`` tells the consumer
    that nothing more will come; an item put before closing can still be read.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._fresh = False
        self._closed = False
        self.dropped = 0  # items replaced before anyone read them

    def put(self, item) -> None:
        """Store ``item``, replacing (and counting as dropped) an unread one."""
        with self._cond:
            if self._fresh:
                self.dropped += 1
            self._item, self._fresh = item, True
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        """The newest unread item, or None on timeout / when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._fresh or self._closed, timeout):
                return None
            if not self._fresh:
                return None
            self._fresh = False
            return self._item

    def close(self) -> None:
        """No more items will come; wakes a waiting ``get``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
