"""The keys of the live preview window: what each one does, the help text that lists them, and scripted
key presses (``--keys``) for sessions without a window.

Every key is a plain character (or Esc), which ``cv2.waitKey`` reports as the same code on every platform
(arrow keys are not: their codes differ between window toolkits, so they are not used).
"""

from __future__ import annotations

from ..core.errors import InputError

# (keys, what they do), as the help overlay, the log, --help and docs/live.md list them.
KEYS_HELP = [
    ("q / Esc", "quit"),
    ("r", "reset the reference pose (look straight ahead)"),
    ("1 - 9", "pick portrait 1 - 9 (when --source is a folder)"),
    ("n / p", "next / previous portrait"),
    ("f", "find the portrait whose pose best matches your face now, and pick it"),
    ("g", "show / hide the ghost: the portrait over the camera crop, to line your face up"),
    ("w / s", "zoom the crop in / out (also + or =, and -)"),
    ("i j k l", "move the crop up / left / down / right"),
    ("c", "undo the zoom and moves: back to the automatic crop"),
    ("a", "toggle relative / absolute motion"),
    ("b", "show / hide the crop box"),
    ("o", "show / hide the overlay"),
    ("m", "mirror the camera view"),
    ("h", "show / hide this help"),
]

# Key code (as cv2.waitKey returns it, masked to 8 bits) -> action name.
_ACTIONS = {
    ord("q"): "quit", 27: "quit",
    ord("r"): "reset", ord("n"): "next", ord("p"): "prev", ord("f"): "best", ord("a"): "relative",
    ord("g"): "ghost", ord("b"): "box", ord("o"): "overlay", ord("m"): "mirror", ord("h"): "help",
    ord("w"): "zoom-in", ord("+"): "zoom-in", ord("="): "zoom-in", ord("s"): "zoom-out", ord("-"): "zoom-out",
    ord("i"): "move-up", ord("j"): "move-left", ord("k"): "move-down", ord("l"): "move-right",
    ord("c"): "crop-reset",
    **{ord(str(n)): "pick" for n in range(1, 10)},
}

# Actions that change the animator: the inference thread carries them out (it owns the animator).
ANIMATOR_ACTIONS = ("reset", "next", "prev", "pick", "best", "relative")

# Move actions -> (right, down) steps of the crop box.
MOVES = {"move-up": (0, -1), "move-left": (-1, 0), "move-down": (0, 1), "move-right": (1, 0)}

# Key names a --keys script may use besides single characters.
_NAMED = {"esc": 27}


def key_action(key: int) -> str | None:
    """The action a key stands for (one of the values of the key table: ``quit``, ``reset``, ``pick``,
    ``zoom-in``, ...), or None for a key without one."""
    return _ACTIONS.get(key)


def portrait_number(key: int) -> int | None:
    """The portrait a number key picks, counted from 0 (``1`` -> 0, ..., ``9`` -> 8); None for other keys."""
    return key - ord("1") if ord("1") <= key <= ord("9") else None


def parse_key_script(text: str) -> tuple[tuple[int, int], ...]:
    """``--keys``: ``FRAME:KEYS[,FRAME:KEYS...]`` -> ((frame, key code), ...) in order of frames.

    FRAME counts the frames shown, from 1; KEYS are pressed in order when that frame is shown: one or more
    key characters (``30:ww`` zooms in twice at frame 30), or ``esc``. Example: ``20:g,40:2,60:f``.

    Raises:
        InputError: a malformed script (the one-line message says which part and why).
    """
    presses: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        frame, sep, keys = part.partition(":")
        if not sep or not frame.strip().isdigit() or int(frame) < 1 or not keys:
            raise InputError(f"--keys: '{part}' is not FRAME:KEYS (e.g. 20:g,40:2; FRAME counts shown frames "
                             "from 1)")
        codes = [_NAMED[keys.lower()]] if keys.lower() in _NAMED else [ord(k) for k in keys]
        unknown = [chr(c) for c in codes if c not in _ACTIONS]
        if unknown:
            raise InputError(f"--keys: {', '.join(repr(u) for u in unknown)} in '{part}' is no key of fomm-live "
                             "(see the keys in --help)")
        presses += [(int(frame), c) for c in codes]
    return tuple(sorted(presses, key=lambda p: p[0]))  # stable: keys of one frame keep their order


def keys_help_text(indent: str = "  ") -> str:
    """The key table as aligned lines (the log, and --help: click keeps them as they are after a \\b line)."""
    return "\n".join(f"{indent}{k:<8} {v}" for k, v in KEYS_HELP)
