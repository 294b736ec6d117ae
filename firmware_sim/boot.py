"""The update state machine, explicit and small (after MCUboot's test-and-confirm):

    upload → slot verified → test (pending) → reset → trial boot + self-test → confirm
                                                          └─ no confirm before the next boot → revert
    confirmed image fails to start → fallback to the other slot if it starts (it stays unconfirmed)

``boot`` is the only place that decides what runs. It never starts an image that does not
verify (``start`` loads, checks and self-tests it) and records every decision in the
trailer before acting on it, so a power cut at any write leaves a state it can boot from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from metaedge.firmware_sim.flash import Flash


@dataclass
class BootResult:
    slot: int | None  # the running slot, None: no bootable image
    mode: str  # "confirmed" | "trial" | "fallback" (the confirmed slot failed; the other one runs unconfirmed) | "none"
    events: list[str] = field(default_factory=list)


def boot(flash: Flash, start: Callable[[int], str | None]) -> BootResult:
    """Pick and start an image. ``start(slot)`` returns None when the slot verified, loaded and passed its self-test,
    else the reason it did not."""
    state = flash.boot_state()
    events = []
    if state.trial is not None:
        events.append(f"revert: slot {state.trial} was on trial and never confirmed")
        state = state.next(trial=None)
        flash.write_boot_state(state)
    if state.pending is not None:
        slot = state.pending
        state = state.next(pending=None, trial=slot)  # one-shot: recorded before the attempt
        flash.write_boot_state(state)
        failure = start(slot)
        if failure is None:
            events.append(f"trial boot of slot {slot}")
            return BootResult(slot, "trial", events)
        events.append(f"slot {slot} did not start ({failure}); reverting")
        state = state.next(trial=None)
        flash.write_boot_state(state)
    if state.confirmed is not None:
        failure = start(state.confirmed)
        if failure is None:
            events.append(f"boot of confirmed slot {state.confirmed}")
            return BootResult(state.confirmed, "confirmed", events)
        events.append(f"confirmed slot {state.confirmed} did not start ({failure})")
        other = 1 - state.confirmed
        if flash.header(other) is not None:
            failure = start(other)  # held to every check of a start, the counter floor and expiry among them
            if failure is None:
                events.append(f"fallback boot of slot {other}, which verifies and is not below the counter floor")
                return BootResult(other, "fallback", events)
            events.append(f"slot {other} did not start either ({failure})")
    events.append("no bootable image: serving management requests only")
    return BootResult(None, "none", events)


def confirm(flash: Flash, running: BootResult, counter: int) -> None:
    """Make the trial image the trusted one (only a trial image can be confirmed)."""
    state = flash.boot_state()
    if running.mode != "trial" or state.trial != running.slot:
        raise ValueError("nothing to confirm: the running image is not on trial")
    flash.write_boot_state(state.next(confirmed=running.slot, trial=None, counter=counter))
    running.mode = "confirmed"


def request_test(flash: Flash, slot: int) -> None:
    """Ask for a trial boot of ``slot`` at the next reset."""
    state = flash.boot_state()
    flash.write_boot_state(state.next(pending=slot))
