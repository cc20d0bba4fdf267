"""The HTML a preview page built, kept a little while for the frames that show it.

A preview page builds its message once and lists its headers, size and links; its two
frames (desktop and phone) then ask for the HTML part of that very message, by the
number the page put in their address, instead of building it twice more. What is kept
belongs to the session that built it and to the frame's address (newsletter, week, who);
a frame whose number is unknown here (kept too long ago, or built by another replica of
the app) builds the message itself.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from starlette.requests import Request

__all__ = ["FRAME_SECONDS", "FRAMES_KEPT", "Frames", "frames_of"]

#: How long a preview's HTML is kept for its frames.
FRAME_SECONDS = 600.0
#: How many previews are kept at most (the oldest goes first).
FRAMES_KEPT = 32

_made = threading.Lock()


@dataclass(frozen=True)
class _Kept:
    owner: str
    address: str
    html: str
    until: float


@dataclass
class Frames:
    """The previews of one app, by the number their frames ask for them with."""

    seconds: float = FRAME_SECONDS
    most: int = FRAMES_KEPT
    _kept: OrderedDict[str, _Kept] = field(default_factory=OrderedDict)
    # The pages run in a thread pool: one at a time here.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, owner: str, address: str, html: str) -> str:
        """Keep ``html`` for ``owner``'s frames at ``address``; the number to ask with."""
        number = secrets.token_urlsafe(12)
        with self._lock:
            self._drop_old(time.monotonic())
            self._kept[number] = _Kept(owner, address, html, time.monotonic() + self.seconds)
            while len(self._kept) > self.most:
                self._kept.popitem(last=False)
        return number

    def get(self, owner: str, address: str, number: str) -> str | None:
        """The HTML kept under ``number`` for ``owner`` and ``address``, or None."""
        with self._lock:
            self._drop_old(time.monotonic())
            kept = self._kept.get(number)
        if kept is None or kept.owner != owner or kept.address != address:
            return None
        return kept.html

    def _drop_old(self, now: float) -> None:
        while self._kept:
            number, oldest = next(iter(self._kept.items()))
            if oldest.until > now:
                return
            del self._kept[number]


def frames_of(request: Request) -> Frames:
    """The previews kept by the app that answers ``request``."""
    state = request.app.state
    with _made:
        frames: Frames | None = getattr(state, "admin_frames", None)
        if frames is None:
            frames = state.admin_frames = Frames()
    return frames
