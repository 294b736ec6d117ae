"""``metaedge run`` for a learned link's receiver: each frame a new channel, the transmitter sending the codebook
from the device's task section; scored by the block error rate."""

from __future__ import annotations

from metaedge.sdk.device_frames import error_rate_report
from metaedge.sdk.families.demod.device import report_text  # noqa: F401 — the same error-rate report as a demodulator's
from metaedge.sdk.families.link.export import link_frames


def stream(client, url: str, task: dict, frames: int, pilots: int, symbols: int, seed: int) -> dict:
    return error_rate_report(client, url, "BLER", seed, *link_frames(task, frames, pilots, symbols, seed))


def describe(task: dict) -> str:
    return (
        f"{task['classes']} messages ({task['bits']} bits over {task['uses']} channel uses, {task['taps']} taps, "
        f"Eb/N0 {task['ebn0_db']:g} dB), transmitter codebook in the manifest, features {'/'.join(task['features'])}, "
        f"pilots {'known sequence' if task['pilot_sequence'] else 'random'}"
    )
