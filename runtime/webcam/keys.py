"""The keys of the live preview window: what each one does, and the help text that lists them."""

from __future__ import annotations

# (keys, what they do), as the help overlay and the log list them.
KEYS_HELP = [
    ("q / Esc", "quit"),
    ("r", "reset the reference pose (look straight ahead)"),
    ("n / p", "next / previous portrait (when --source is a folder)"),
    ("a", "toggle relative / absolute motion"),
    ("b", "show / hide the crop box"),
    ("o", "show / hide the overlay"),
    ("m", "mirror the camera view"),
    ("h", "show / hide this help"),
]

# Key code (as cv2.waitKey returns it, masked to 8 bits) -> action name.
_ACTIONS = {
    ord("q"): "quit", 27: "quit",
    ord("r"): "reset", ord("n"): "next", ord("p"): "prev", ord("a"): "relative",
    ord("b"): "box", ord("o"): "overlay", ord("m"): "mirror", ord("h"): "help",
}

# Actions that change the animator: the inference thread carries them out (it owns the animator).
ANIMATOR_ACTIONS = ("reset", "next", "prev", "relative")


def key_action(key: int) -> str | None:
    """The action a key stands for (``quit``, ``reset``, ``next``, ``prev``, ``relative``, ``box``, ``overlay``,
    ``mirror``, ``help``), or None for a key without one."""
    return _ACTIONS.get(key)
