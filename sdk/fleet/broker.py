"""The fleet's message broker: Eclipse Mosquitto on loopback, with a password per client and an access list that keeps
each device on its own topics (docs/fleet.md). ``make env`` installs it (Debian's ``mosquitto``)."""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from metaedge.firmware_sim.fleet import TOPICS
from metaedge.sdk.errors import UserError

MOSQUITTO = "mosquitto"
HOST = "127.0.0.1"
START_S = 10.0
MAX_PACKET = 64 << 10  # a management request carries at most one 32 KiB upload chunk; telemetry at most 8 KiB
CONNECT_S = 10.0  # for the broker's answer to a connection
LEARNER, OPERATOR = "learner", "operator"  # the host's two broker users


def _acl() -> str:
    """Devices: their own topics only (%u is the user name, the device id). Learner: reads telemetry and status.
    Operator: sends requests, reads responses, telemetry and status."""
    own = {kind: pattern.format("%u") for kind, pattern in TOPICS.items()}
    every = {kind: pattern.format("+") for kind, pattern in TOPICS.items()}
    return "\n".join(
        [
            f"user {LEARNER}",
            f"topic read {every['telemetry']}",
            f"topic read {every['status']}",
            f"user {OPERATOR}",
            f"topic write {every['req']}",
            *(f"topic read {every[k]}" for k in ("resp", "telemetry", "status")),
            "",
            *(f"pattern write {own[k]}" for k in ("telemetry", "status", "resp")),
            f"pattern read {own['req']}",
            "",
        ]
    )


@dataclass(frozen=True)
class Credentials:
    """Every broker user's password (the host's secret store; each device keeps its own in its identity)."""

    passwords: dict[str, str]

    @classmethod
    def new(cls, devices: list[str]) -> "Credentials":
        return cls({user: secrets.token_hex(16) for user in (LEARNER, OPERATOR, *devices)})


def write_config(directory: Path, credentials: Credentials, port: int) -> Path:
    """mosquitto.conf, its password file (hashed by ``mosquitto_passwd``) and access list in ``directory``."""
    if shutil.which(MOSQUITTO) is None or shutil.which("mosquitto_passwd") is None:
        raise UserError("the fleet needs the Mosquitto broker: run 'make env' (Debian/Ubuntu: apt-get install mosquitto)")
    directory.mkdir(parents=True, exist_ok=True)
    passwd, acl, conf = directory / "passwd", directory / "acl", directory / "mosquitto.conf"
    passwd.unlink(missing_ok=True)
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # plain passwords until hashed: owner only
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{user}:{password}\n" for user, password in credentials.passwords.items()))
    hashed = subprocess.run(["mosquitto_passwd", "-U", str(passwd)], capture_output=True, text=True)
    if hashed.returncode != 0:
        raise UserError(f"mosquitto_passwd could not hash {passwd}: {hashed.stderr.strip() or hashed.returncode}")
    acl.write_text(_acl())
    conf.write_text(
        "\n".join(
            [
                f"listener {port} {HOST}",
                f"user {getpass.getuser()}",  # started as root, mosquitto would switch to a user that cannot read these files
                "allow_anonymous false",
                f"password_file {passwd.resolve()}",
                f"acl_file {acl.resolve()}",
                "persistence false",
                f"max_packet_size {MAX_PACKET}",
                "max_queued_messages 10000",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "",
            ]
        )
    )
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def running(conf: Path, port: int) -> Iterator[subprocess.Popen]:
    """The broker of ``conf`` listening on ``port``; stopped on exit."""
    log = (conf.parent / "mosquitto.log").open("ab")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_S
        while not _accepting(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"the broker did not start on {HOST}:{port} (see {conf.parent / 'mosquitto.log'})")
            time.sleep(0.05)
        time.sleep(0.2)
        if proc.poll() is not None:  # another process answers on the port, and ours could not bind it
            raise UserError(f"the broker could not listen on {HOST}:{port}: something else does (see {conf.parent / 'mosquitto.log'})")
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
        log.close()


def connect(user: str, password: str, port: int, client_id: str | None = None):
    """A started paho-mqtt client of the host's ``user``."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"{user}-{secrets.token_hex(4)}", protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)
    answered, answer = threading.Event(), []
    client.on_connect = lambda _c, _u, _f, reason, _p: (answer.append(reason), answered.set())
    try:
        client.connect(HOST, port, keepalive=30)
    except OSError as e:
        raise UserError(f"cannot reach the fleet's broker at {HOST}:{port} ({e}); is 'metaedge fleet up' running?") from None
    client.loop_start()
    if not answered.wait(CONNECT_S) or answer[0].is_failure:
        client.loop_stop()
        why = f"refused {user}: {answer[0]}" if answer else f"did not answer {user} within {CONNECT_S:g} s"
        raise UserError(f"the fleet's broker at {HOST}:{port} {why}; check the fleet directory's secrets, or restart 'metaedge fleet up'")
    client.on_connect = None
    return client
