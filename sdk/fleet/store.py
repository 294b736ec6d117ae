"""A fleet directory: everything ``metaedge fleet up`` provisions and the other fleet commands read.

fleet.json            the fleet: devices, broker port, the run it started from, the field, reporting
keys/release.{key,pub}   signs every bundle; each device trusts its public key
keys/operator.{key,pub}  signs management requests; each device's operator key
secrets.json          the host's secrets: broker passwords and each device's telemetry key (mode 600)
broker/               mosquitto.conf, its password file, access list and log
devices/<id>/         each device's flash and identity
releases/<counter>/   each release: the run (θ) it was exported from and its signed bundle
rollout.jsonl         every rollout decision, one JSON object per line
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from metaedge.sdk.errors import UserError
from metaedge.sdk.fleet.scenario import Field

FORMAT, VERSION = "metaedge-fleet", 1


@dataclass(frozen=True)
class FleetSpec:
    devices: list[str]
    port: int
    run: str
    field: Field
    seed: int
    reporting: float  # the fraction of frames whose pilots a device reports
    opted_out: list[str]  # devices that send no telemetry
    decided: bool = False  # reports also carry payload symbols decided with high confidence, marked as decisions

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}


class FleetDir:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def spec_file(self) -> Path:
        return self.path / "fleet.json"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def secrets_file(self) -> Path:
        return self.path / "secrets.json"

    @property
    def broker(self) -> Path:
        return self.path / "broker"

    @property
    def devices(self) -> Path:
        return self.path / "devices"

    @property
    def releases(self) -> Path:
        return self.path / "releases"

    @property
    def log_file(self) -> Path:
        return self.path / "rollout.jsonl"

    def release_key(self) -> tuple[Path, Path]:
        return self.keys / "release.key", self.keys / "release.pub"

    def operator_key(self) -> tuple[Path, Path]:
        return self.keys / "operator.key", self.keys / "operator.pub"

    def release(self, counter: int) -> Path:
        return self.releases / f"{counter:06d}"

    def latest_release(self) -> int:
        counters = [int(p.name) for p in self.releases.iterdir() if p.name.isdigit()] if self.releases.is_dir() else []
        if not counters:
            raise UserError(f"{self.path} has no release yet; start the fleet with 'metaedge fleet up'")
        return max(counters)

    def confirmed_release(self) -> int:
        """The security counter of the last release confirmed fleet-wide (rollout.jsonl), 1 (provisioned) before any."""
        confirmed = [entry["counter"] for entry in self.log_entries() if entry.get("stage") == "confirmed"]
        return max(confirmed, default=1)

    def log_entries(self) -> list[dict]:
        if not self.log_file.is_file():
            return []
        entries = []
        for line in self.log_file.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise UserError(f"{self.log_file} is corrupt (a line is not JSON); restore it or remove the line") from None
        return entries

    def spec(self) -> FleetSpec:
        if not self.spec_file.is_file():
            raise UserError(f"'{self.path}' is not a fleet directory (no fleet.json); create one with 'metaedge fleet up --dir {self.path}'")
        try:
            data = json.loads(self.spec_file.read_text())
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise UserError(f"{self.spec_file} is not a version-{VERSION} fleet description; recreate the fleet with 'metaedge fleet up --fresh'")
            data.pop("format"), data.pop("version")
            return FleetSpec(**{**data, "field": Field(**data["field"])})
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise UserError(f"{self.spec_file} is corrupt ({type(e).__name__}: {e}); recreate the fleet with 'metaedge fleet up --fresh'") from None

    def write_spec(self, spec: FleetSpec) -> None:
        self.spec_file.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")

    def secrets(self) -> dict:
        """{"passwords": {user: password}, "telemetry": {device: hex key}}."""
        return json.loads(self.secrets_file.read_text())

    def write_secrets(self, data: dict) -> None:
        """Readable by its owner alone from the start."""
        fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1))

    def telemetry_keys(self) -> dict[str, bytes]:
        return {device: bytes.fromhex(key) for device, key in self.secrets()["telemetry"].items()}

    def append_log(self, entry: dict) -> None:
        with self.log_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")
