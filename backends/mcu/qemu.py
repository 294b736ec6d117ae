"""The emulated microcontroller: QEMU's MPS2 AN386 board (Cortex-M4F) running MetaEdge's firmware, its UART0
bridged to a TCP socket on loopback.

QEMU runs with ``-icount shift=0``: one guest instruction advances the virtual clock by one nanosecond, so the
firmware's SysTick (25 MHz) counts instructions (one tick = 40) whatever the host is doing.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
from pathlib import Path

FIRMWARE_ENV = "METAEDGE_MCU_FIRMWARE"  # a firmware ELF to run instead of the repository's build
QEMU = "qemu-system-arm"
BOARD = "mps2-an386"
ICOUNT_SHIFT = 0  # 2^0 ns of virtual time per instruction
BUILD_HINT = "build it with 'make firmware' (needs gcc-arm-none-eabi: 'make env' installs it)"
START_TIMEOUT_S = 20.0


class EmulatorError(RuntimeError):
    """QEMU or the firmware image is missing, or the emulator did not start."""


def _prepare_child() -> None:
    """In the QEMU child before exec: the kernel kills it when the process that started it ends (PR_SET_PDEATHSIG),
    so a receiver process killed by the device's containment leaves no emulator behind; and the address-space cap
    that containment puts on the receiver's process is lifted: QEMU's own memory (translation buffers, the board's
    8 MiB) does not grow with what a bundle holds, which stays bounded by the emulated board."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_AS, (resource.getrlimit(resource.RLIMIT_AS)[1],) * 2)


def firmware_path() -> Path:
    """The firmware ELF: ``$METAEDGE_MCU_FIRMWARE`` or the repository's ``build/mcu/firmware.elf``."""
    path = Path(os.environ.get(FIRMWARE_ENV) or Path(__file__).resolve().parents[2] / "build" / "mcu" / "firmware.elf")
    if not path.is_file():
        raise EmulatorError(f"the mcu firmware {path} does not exist; {BUILD_HINT}")
    return path


def instructions_per_tick(sysclk_hz: int) -> float:
    """Guest instructions per SysTick tick under ``-icount shift=ICOUNT_SHIFT``."""
    return 1e9 / sysclk_hz / 2**ICOUNT_SHIFT


class Emulator:
    """One QEMU process running the firmware; ``connection`` is the socket to its UART0."""

    def __init__(self, firmware: Path | None = None) -> None:
        if shutil.which(QEMU) is None:
            raise EmulatorError(f"{QEMU} is not installed; 'make env' installs it (Debian: apt-get install qemu-system-arm)")
        self.firmware = firmware or firmware_path()
        with socket.create_server(("127.0.0.1", 0)) as server:
            server.settimeout(START_TIMEOUT_S)
            port = server.getsockname()[1]
            command = [
                QEMU, "-M", BOARD, "-nographic", "-monitor", "none", "-serial", f"tcp:127.0.0.1:{port},nodelay=on",
                "-semihosting-config", "enable=on,target=native", "-icount", f"shift={ICOUNT_SHIFT}", "-kernel", str(self.firmware),
            ]  # fmt: skip
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_prepare_child
            )
            try:
                self.connection, _ = server.accept()
            except OSError:
                self.close()
                raise EmulatorError(f"QEMU did not connect its UART within {START_TIMEOUT_S:.0f} s: {self.stderr()}") from None
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def stderr(self) -> str:
        """What QEMU said before it ended (empty while it runs)."""
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace").strip()[-400:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Stop QEMU; idempotent."""
        if getattr(self, "connection", None) is not None:
            self.connection.close()
            self.connection = None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
