"""runtime/core/signals.py, the one owner of SIGINT / SIGTERM handling: real signals to this process (pytest
runs tests in the main thread), and the handlers that were there are back afterwards."""

from __future__ import annotations

import signal
import threading

import pytest

from fomm_deploy.runtime.core import signals


def _handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS}


@pytest.fixture(autouse=True)
def before():
    """The handlers before the test, which each test that restores them checks; set again after it."""
    handlers = _handlers()
    yield handlers
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_exit_status_is_128_plus_the_signal():
    assert signals.exit_status("SIGINT") == 130 and signals.exit_status("SIGTERM") == 143
    assert signals.exit_status("peer") == 130  # a stopped peer of a distributed run: as Ctrl-C


def test_unwinding_raises_stopped_and_the_first_signal_wins_over_what_follows(before):
    with signals.Unwinding() as unwinding:
        with pytest.raises(signals.Stopped, match="SIGTERM") as info:
            signal.raise_signal(signal.SIGTERM)
        assert isinstance(info.value, KeyboardInterrupt)
        # whatever the unwinding turned into, and a later SIGINT, still count as the first SIGTERM
        assert unwinding.stopped_by(TypeError("Cannot compare structured arrays")) == "SIGTERM"
        with pytest.raises(signals.Stopped):
            signal.raise_signal(signal.SIGINT)
        assert unwinding.stopped_by(KeyboardInterrupt()) == "SIGTERM"
    assert _handlers() == before


def test_without_a_signal_only_an_interrupt_counts_as_stopped(before):
    with signals.Unwinding() as unwinding:
        assert unwinding.stopped_by(ValueError("a bug")) is None
        assert unwinding.stopped_by(KeyboardInterrupt()) == "SIGINT"  # Python's own Ctrl-C
        assert unwinding.stopped_by(signals.Stopped("SIGTERM")) == "SIGTERM"
    assert _handlers() == before


def test_unwinding_leaves_a_handler_set_inside_it():
    """A command that chose to ignore late signals (a finished live session) keeps that after the command."""
    with signals.Unwinding():
        signals.ignore()
    assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in signals.STOP_SIGNALS)


@pytest.mark.parametrize("again_stops_at_once", [False, True])
def test_a_stop_request_asks_once(again_stops_at_once, before):
    asked = []
    with signals.StopRequest(asked.append, again_stops_at_once=again_stops_at_once) as stop:
        signal.raise_signal(signal.SIGTERM)  # asks, raises nothing
        assert stop.requested == "SIGTERM" and asked == ["SIGTERM"]
        if again_stops_at_once:
            with pytest.raises(signals.Stopped, match="SIGINT"):
                signal.raise_signal(signal.SIGINT)
        else:
            signal.raise_signal(signal.SIGINT)
        assert stop.requested == "SIGTERM" and asked == ["SIGTERM"]
    assert _handlers() == before


def test_a_held_stop_request_ignores_signals_once_one_came(before):
    stop = signals.StopRequest(lambda name: None)
    stop.install()
    stop.release(hold=True)  # no signal came: the handlers are put back
    assert _handlers() == before
    stop.install()
    signal.raise_signal(signal.SIGINT)
    stop.release(hold=True)
    assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in signals.STOP_SIGNALS)


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def run():
        seen.append(signals.install(signals.raise_stopped))
        with signals.Unwinding(), signals.StopRequest(lambda name: None):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [None, signal.getsignal(signal.SIGTERM)]
