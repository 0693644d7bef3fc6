"""Every error type of fomm-deploy, in one place.

The CLIs turn any :class:`FommError` into a one-line message and exit status 1 (``cli_common.user_errors``);
anything else is a bug and keeps its traceback. Tests assert on these types, not on message text.

The families (each a subclass of ``FommError``):

* :class:`InputError`: something the user gave us cannot be used: an image, a video, a camera, a config,
  a dataset, an option that contradicts another, a path to write to.
* :class:`CheckpointError`: a checkpoint is unreadable, unsafe or does not fit its config.
* :class:`ExportFolderError`: a folder is not (or not a usable) fomm-export output.
* :class:`BackendUnavailableError`: a backend, its packages or its device are missing here.
* :class:`BackendError`: a backend that is there failed (TensorRT could not build or run, a CUDA error).
* :class:`ContractError` / :class:`ParityError`: an exported graph breaks the graph contract, or two
  backends (or precisions) disagree beyond the budget recorded for them.
"""

from __future__ import annotations


class FommError(Exception):
    """Base class: a problem the user can fix; the message says how."""


# ---- bad input -----------------------------------------------------------------------------------------


class InputError(FommError, ValueError):
    """An input, option or output path the user gave cannot be used."""


class ImageError(InputError):
    """An input image cannot be read or used."""


class VideoError(InputError):
    """A video cannot be read or written."""


class CameraError(InputError):
    """The camera (or the video standing in for it) cannot be opened."""


class ConfigError(InputError):
    """A config file is missing, unreadable, or does not follow the schema."""


class DatasetError(InputError):
    """A dataset folder cannot be used."""


class KeypointError(InputError):
    """Keypoints that cannot be used (wrong shape, degenerate layout)."""


class InputMismatchError(InputError):
    """A graph was fed inputs that break its contract (name, dtype or shape)."""


# ---- checkpoints, exports, backends -------------------------------------------------------------------


class CheckpointError(FommError, ValueError):
    """A checkpoint cannot be used; the message says what is wrong and how to fix it."""


class ExportFolderError(FommError):
    """A folder is not a usable fomm-export output (missing, foreign, damaged, or the wrong format)."""


class ExportError(FommError):
    """The export cannot proceed (output folder, prerequisites)."""


class BackendUnavailableError(FommError):
    """A backend cannot run here: its package, its CUDA layer or its device is missing."""


class BackendError(FommError):
    """A backend that is there failed at its work: TensorRT could not parse, build, load or run an engine, or
    CUDA reported an error. The message passes on what the backend said."""


class Interrupted(FommError):
    """A long run was stopped by a signal after saving its work; ``checkpoint`` is what it saved (or None)."""

    def __init__(self, signal_name: str, checkpoint=None, message: str = "") -> None:
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        super().__init__(message or f"stopped by {signal_name}")


# ---- graph checks -------------------------------------------------------------------------------------


class ContractError(FommError, ValueError):
    """An exported graph breaks the graph contract (opset, op types, GridSample mode, I/O)."""


class ParityError(FommError, AssertionError):
    """Outputs of two backends differ by more than the tolerance table allows; lists every failing output."""

    def __init__(self, graph: str, failures: list[str]) -> None:
        self.graph = graph
        self.failures = list(failures)
        super().__init__(f"{graph}: outputs differ beyond tolerance: " + "; ".join(self.failures))
