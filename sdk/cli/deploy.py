"""``metaedge deploy`` (upload, test, trial boot, confirm) and ``metaedge run`` (frames from new devices)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from metaedge.sdk.cli.device import call, connect
from metaedge.sdk.cli.parsing import positive_int, read_bundle_arg
from metaedge.sdk.errors import UserError
from metaedge.sdk.stats import percentiles, summarise

EXAMPLES = """
examples:
  metaedge deploy bundles/cavia --device tcp://127.0.0.1:7410 --confirm
  metaedge run --device tcp://127.0.0.1:7410 --frames 200 --pilots 8 --json
"""


def register(sub) -> None:
    d = sub.add_parser("deploy", help="upload a bundle to a device, trial-boot it, optionally confirm",
                       description="Upload the packed bundle in chunks into the device's inactive slot, mark it for test, "
                                   "reset the device (trial boot with self-test) and, with --confirm, make it permanent.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("bundle", type=Path, metavar="BUNDLE")
    d.add_argument("--device", required=True, help="tcp://HOST:PORT")
    d.add_argument("--confirm", action="store_true", help="confirm after a successful trial boot")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(handler=run_deploy)
    r = sub.add_parser("run", help="stream frames from new simulated devices to a device; SER and latency",
                       description="Frames from new simulated devices (meta-test split: fresh impairments and channels) "
                                   "for the running receiver's task (constellation and SNR from the device), one per "
                                   "device; reports SER, mean confidence, expected calibration error and latency percentiles. "
                                   "For a learned-link receiver each frame is a new channel, the transmitter sends the "
                                   "codebook from the device's task section, and the error rate is the BLER. For a "
                                   "channel predictor, --pilots is the training windows per frame, --symbols the "
                                   "predictions, and the score the NMSE; for a power allocator, --pilots slots to adapt "
                                   "on, --symbols slots to allocate, and the score the sum-rate.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--device", required=True, help="tcp://HOST:PORT")
    r.add_argument("--frames", type=positive_int, default=100, help="frames, one per new simulated device (default 100)")
    r.add_argument("--pilots", type=positive_int, default=8, help="pilots per frame (default 8)")
    r.add_argument("--symbols", type=positive_int, default=1000, help="payload symbols per frame (default 1000)")
    r.add_argument("--seed", type=int, default=0, help="seed of the simulated devices (default 0)")
    r.add_argument("--reliability", type=Path, metavar="PNG", help="write the device's reliability diagram (10 bins)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=run_frames)


def run_deploy(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.deploy.bundle import pack

    image = pack(read_bundle_arg(args.bundle))
    with connect(args.device) as client:
        with tqdm(total=len(image), unit="B", unit_scale=True, desc="upload", disable=args.quiet or None, file=sys.stderr) as bar:
            from metaedge.deploy.client import DeviceRequestError

            try:
                result = client.upload(image, progress=bar.update)
            except DeviceRequestError as e:
                raise UserError(f"the device refused the upload: {e}") from None
        call(client, "image.test", sha256=result["sha256"])
        booted, _ = call(client, "reset")
        if booted["mode"] != "trial":
            raise UserError(f"the trial boot failed and the device reverted ({'; '.join(booted['events'])})")
        if args.confirm:
            call(client, "image.confirm")
    state = "confirmed" if args.confirm else "on trial (confirm with 'metaedge device confirm', or reset to revert)"
    print(f"deployed {args.bundle} ({len(image):,} B, sha256 {result['sha256'][:16]}…) to slot {booted['slot']}: {state}")
    return 0


def run_frames(args: argparse.Namespace) -> int:
    report = stream_frames(args.device, args.frames, args.pilots, args.symbols, args.seed)
    if args.reliability and "reliability" in report:
        from metaedge.sdk.plots import plot_reliability

        plot_reliability({"device": report["reliability"]}, args.reliability, f"on the device, {args.pilots} pilots")
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["metric"] == "sum-rate":
        lat = report["device_us"]
        print(f"{report['frames']} topologies, {args.pilots} adaptation slots, {args.symbols} slots each: sum-rate "
              f"{report['sum_rate']:.2f} bit/s/Hz per slot (every link at full power: {report['full_power_sum_rate']:.2f})\n"
              f"device time per frame: median {lat['p50']:.0f} µs, p90 {lat['p90']:.0f} µs; "
              f"round trip median {report['round_trip_us']['p50']:.0f} µs")
    elif report["metric"] == "NMSE":
        lat = report["device_us"]
        print(f"{report['frames']} frames, {args.pilots} training windows, {args.symbols} predictions each: NMSE "
              f"{report['nmse_db']:.2f} dB\ndevice time per frame: median {lat['p50']:.0f} µs, p90 {lat['p90']:.0f} µs; "
              f"round trip median {report['round_trip_us']['p50']:.0f} µs")
    else:
        lat = report["device_us"]
        print(f"{report['frames']} frames × {args.symbols} symbols, {args.pilots} pilots: {report['metric']} {report['ser']:.4f} "
              f"(±{(report['ser_ci95'][1] - report['ser_ci95'][0]) / 2:.4f}), mean confidence {report['mean_confidence']:.3f}, "
              f"ECE {report['ece']:.4f}\n"
              f"device time per frame: median {lat['p50']:.0f} µs, p90 {lat['p90']:.0f} µs, p99 {lat['p99']:.0f} µs; "
              f"round trip median {report['round_trip_us']['p50']:.0f} µs")
    return 0


def stream_frames(url: str, frames: int, pilots: int, symbols: int, seed: int) -> dict:
    """Frames from new simulated devices (meta-test split) through the protocol; SER and latency."""
    from metaedge.sdk.tasks.demod import DemodConfig, DemodTasks

    with connect(url) as client:
        info, _ = call(client, "info")
        if info["task"] is None:
            raise UserError(f"no image is running on {url}: deploy a bundle first")
        if info["task"]["name"] == "power":
            return allocate_frames(client, info["task"], frames, pilots, symbols, seed)
        if info["task"]["name"] == "prediction":
            return predict_frames(client, url, info["task"], frames, pilots, symbols, seed)
        if info["task"]["name"] == "link":
            from metaedge.sdk.link_export import link_frames

            batch = link_frames(info["task"], frames, pilots, symbols, seed)
            result = send_frames(client, url, *batch[:3])
            errors = score_frames(result, batch[3])
            return {"metric": "BLER", **frame_report(errors, frames, pilots, symbols, seed, result)}
        # frames for the task the running receiver was trained for (channel from its manifest; I/Q imbalance as published)
        task = DemodConfig(order=info["task"]["classes"], snr_db=info["task"]["snr_db"], pilots=pilots, val_pilots=1,
                          payload=symbols, frame=pilots + symbols, channel=info["task"].get("channel", "rayleigh"),
                          phase_max_deg=info["task"].get("phase_max_deg", 180.0))
        tasks = DemodTasks(task, seed=seed)
        batch = tasks.frames(tasks.devices("test", frames), pilots, symbols, tasks.rng("test", 1))
        result = send_frames(client, url, batch.x_tr, batch.y_tr, batch.x_va)
    errors = score_frames(result, batch.y_va)
    return {"metric": "SER", **frame_report(errors, frames, pilots, symbols, seed, result)}


def predict_frames(client, url: str, task: dict, frames: int, samples: int, predictions: int, seed: int) -> dict:
    """Frames of new channels for a channel predictor: ``samples`` training windows' worth of pilot channels and a
    history to predict ``predictions`` channels from; NMSE of the device's predictions against the true channels."""
    import numpy as np

    from metaedge.backends.linear.backend import to_complex
    from metaedge.backends.linear.predictor import nmse
    from metaedge.sdk.prediction_run import prediction_frames

    pilots, history, truth = prediction_frames(task, frames, samples, predictions, seed)
    per_frame, device_us, round_trip = [], [], []
    for p, h, t in zip(pilots, history, truth):
        start = time.perf_counter()
        telemetry, out = call(client, "frame", {"pilots": p, "payload": h})
        round_trip.append((time.perf_counter() - start) * 1e6)
        device_us.append(telemetry["adapt_us"] + telemetry["infer_us"])
        per_frame.append(nmse(to_complex(out["outputs"]), t).mean())
    per_frame = np.asarray(per_frame)
    return {"metric": "NMSE", "frames": frames, "pilots": samples, "symbols": predictions, "seed": seed,
            "nmse": float(per_frame.mean()), "nmse_db": float(10 * np.log10(per_frame.mean())), "per_frame_nmse": per_frame.tolist(),
            "device_us": percentiles(device_us), "round_trip_us": percentiles(round_trip)}


def allocate_frames(client, task: dict, frames: int, pilots: int, slots: int, seed: int) -> dict:
    """Frames of new topologies for a power allocator: ``pilots`` slots of channel measurements to adapt on and
    ``slots`` slots to allocate; the sum-rate of the powers the device returns, and of every link at full power."""
    import numpy as np

    from metaedge.sdk.power_run import power_frames, sum_rates

    adaptation, scored = power_frames(task, frames, pilots, slots, seed)
    rates, full, device_us, round_trip = [], [], [], []
    for p, x in zip(adaptation, scored):
        start = time.perf_counter()
        telemetry, out = call(client, "frame", {"pilots": p, "payload": x})
        round_trip.append((time.perf_counter() - start) * 1e6)
        device_us.append(telemetry["adapt_us"] + telemetry["infer_us"])
        rates.append(sum_rates(x, out["outputs"]).mean())
        full.append(sum_rates(x, np.ones_like(out["outputs"])).mean())
    return {"metric": "sum-rate", "frames": frames, "pilots": pilots, "symbols": slots, "seed": seed,
            "sum_rate": float(np.mean(rates)), "full_power_sum_rate": float(np.mean(full)), "per_frame_sum_rate": rates,
            "device_us": percentiles(device_us), "round_trip_us": percentiles(round_trip)}


def frame_report(errors, frames: int, pilots: int, symbols: int, seed: int, result: dict) -> dict:
    """Error rate over frames (each a new device or channel) with its 95 % interval, and the device's timings."""
    ser = summarise(errors)
    return {"frames": frames, "pilots": pilots, "symbols": symbols, "seed": seed, "ser": ser["ser"], "ser_ci95": ser["ci95"],
            **result, "per_device_ser": errors.tolist()}


def score_frames(result: dict, labels):
    """Per-frame SER of ``send_frames``'s decisions against the true ``labels``; replaces the per-symbol
    decisions and confidences in ``result`` by the mean confidence, the ECE and the reliability diagram."""
    from metaedge.sdk.calibration import reliability

    correct = result.pop("decisions") == labels
    confidence = result.pop("confidence")
    diagram = reliability(confidence, correct)
    result.update(mean_confidence=float(confidence.mean()), ece=diagram["ece"], reliability=diagram)
    return 1.0 - correct.mean(1)


def send_frames(client, url: str, x_pilots, y_pilots, x_payload) -> dict:
    """One frame per row through the protocol: decisions and confidences [frames, N], device time and round trip."""
    import numpy as np

    info, _ = call(client, "info")
    if info["running"] is None:
        raise UserError(f"no image is running on {url}: deploy a bundle first")
    decisions, confidence, device_us, round_trip = [], [], [], []
    for x_p, y_p, x in zip(x_pilots, y_pilots, x_payload):
        start = time.perf_counter()
        telemetry, out = call(client, "frame", {"pilots": x_p, "labels": y_p.astype(np.int32), "payload": x})
        round_trip.append((time.perf_counter() - start) * 1e6)
        device_us.append(telemetry["adapt_us"] + telemetry["infer_us"])
        decisions.append(out["decisions"])
        confidence.append(out["confidence"])
    return {"decisions": np.stack(decisions), "confidence": np.stack(confidence),
            "device_us": percentiles(device_us), "round_trip_us": percentiles(round_trip)}
