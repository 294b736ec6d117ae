"""``metaedge bench mcu``: the mcu target measured on the emulated Cortex-M4F (docs/results/mcu.md).

The run is exported for the onnx and the mcu targets; ONNX Runtime is the reference the firmware must match. The
frames are the evaluation's own (``metaedge eval``'s devices and draws), so the firmware's SER compares with the
host's evaluation of the same run exactly. Instructions come from QEMU's ``-icount`` through the firmware's SysTick.
"""

from __future__ import annotations

import re
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from metaedge.backends.mcu import image as mcu_image
from metaedge.backends.mcu import link as serial
from metaedge.backends.mcu.backend import McuBackend
from metaedge.backends.mcu.qemu import firmware_path, instructions_per_tick
from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import read_bundle
from metaedge.sdk.bench.config import McuBench
from metaedge.sdk.bench.fuzz import mutate
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import Progress, silent
from metaedge.sdk.stats import summarise

RAM_BUDGET, FLASH_BUDGET = 32 << 10, 128 << 10  # the target class: a Cortex-M4F with 32 KiB of RAM and 128 KiB of flash
CLOCK_HZ = 100e6  # the projection's clock
# cycles per instruction on a Cortex-M4F at zero wait states, from the Cortex-M4 TRM's timings: 1 for ALU, VADD and VMUL
# (the bound); 2 for the multiply-accumulate loops that dominate a frame (VLDR 2 cycles, VFMA 3, per 1 + 4 + 4 + 3)
CPI = (1.0, 2.0)
LOG_PROB_FRAMES = 20  # frames whose log-probabilities also travel (they take 9× the serial bytes of decisions)
HANG_S = 3.0  # every input is answered by the firmware's own timeouts well within this


def run(options: McuBench, progress: Progress = silent) -> dict:
    if not (options.run / "config.json").is_file():
        raise UserError(f"'{options.run}' is not a trained run; 'make demo' writes runs/demo/metasgd, or pass --run RUN_DIR")
    from metaedge.sdk.targets import export

    with tempfile.TemporaryDirectory() as tmp:
        onnx_bundle = read_bundle(export("onnx", options.run, Path(tmp) / "onnx").path)
        mcu_bundle = read_bundle(export("mcu", options.run, Path(tmp) / "mcu").path)
    onnx, mcu = OnnxBackend(), McuBackend()
    onnx.load(onnx_bundle)
    mcu.load(mcu_bundle)
    try:
        report = {
            "run": str(options.run),
            "algorithm": mcu_bundle.manifest.algorithm.name,
            "selftest": selftest_parity(onnx, mcu, onnx_bundle),
            "frames": frame_parity(options, onnx, mcu, progress),
        }
        report["memory"] = memory(mcu, len(mcu_bundle.artifacts[m.IMAGE]))
        report["fuzz"] = fuzz_serial(mcu, options.fuzz, np.random.default_rng(options.seed), progress) if options.fuzz else None
    finally:
        mcu.close()
    return report


def selftest_parity(onnx: OnnxBackend, mcu: McuBackend, bundle) -> dict:
    """The largest |Δ log-probability| between the firmware and ONNX Runtime on the bundle's self-test vectors, at θ
    and after the adaptation on its pilots; and the firmware's own self-test against torch's vectors."""
    vectors = bundle.tensors(m.SELFTEST)
    samples, pilots, labels = vectors["forward.samples"], vectors["adapt.pilot_samples"], vectors["adapt.pilot_onehot"].argmax(-1)
    onnx.reset()
    mcu.reset()
    reference = onnx.log_probs(samples)
    got = mcu.log_probs(samples)
    at_theta, relative = float(np.abs(got - reference).max()), relative_error(got, reference)
    exact = exact_log_probs(mcu_image.decode(mcu.image), samples)
    from_exact = {"firmware": float(np.abs(got - exact).max()), "onnx": float(np.abs(reference - exact).max())}
    floor = float(np.abs(reference - vectors["forward.log_probs"]).max())
    onnx.adapt(pilots, labels)
    mcu.adapt(pilots, labels)
    reference = onnx.log_probs(samples)
    got = mcu.log_probs(samples)
    adapted, relative = float(np.abs(got - reference).max()), max(relative, relative_error(got, reference))
    floor = max(floor, float(np.abs(reference - vectors["adapt.log_probs"]).max()))
    own = mcu.selftest()
    return {
        "max_abs_error_theta": at_theta,
        "max_abs_error_adapted": adapted,
        "max_relative_error": relative,
        "onnx_vs_torch_max_abs_error": floor,  # two float32 runtimes disagree this much on the same vectors
        "max_abs_error_from_float64_theta": from_exact,  # each runtime against the network computed in float64, at θ
        "firmware_selftest_error": own.max_error,
        "passed": own.passed,
    }


def exact_log_probs(image: mcu_image.Image, samples: np.ndarray) -> np.ndarray:
    """The image's network at θ on ``samples``, in float64: the exact value both float32 runtimes round."""
    h = np.asarray(samples, np.float64)
    if image.context:
        h = np.concatenate([h, np.broadcast_to(image.theta["context"], (len(h), image.context))], axis=1)
    for i in range(len(image.widths)):
        h = h @ image.theta[f"l{i}.weight"].astype(np.float64) + image.theta[f"l{i}.bias"]
        h = np.maximum(h, 0.0) if i + 1 < len(image.widths) else h
    z = h - h.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    """The largest |Δ| / max(1, |reference|): float32's rounding grows with a log-probability's magnitude (an unlikely
    class's −40 carries an ulp of 4e-6), so absolute differences alone overstate a disagreement."""
    return float((np.abs(got - reference) / np.maximum(1.0, np.abs(reference))).max())


def evaluation_frames(run: Path, devices: int, pilots: int, symbols: int):
    """The frames ``metaedge eval`` draws for this run at ``pilots`` pilots, and the host's SER on them."""
    from metaedge.sdk.families.demod.runs import evaluate_runs, runs_of_one_task
    from metaedge.sdk.families.demod.task import DemodTasks

    _, configs = runs_of_one_task([run])
    tasks = DemodTasks(configs[0][0], seed=configs[0][1].seed)
    frames = tasks.frames(tasks.devices("test", devices), pilots, symbols, tasks.rng("test", 1))
    host = evaluate_runs([run], [pilots], devices, symbols, None, 0.0, False, None, True)["methods"][0]["ser"][str(pilots)]
    return frames, host


def frame_parity(options: McuBench, onnx: OnnxBackend, mcu: McuBackend, progress: Progress) -> dict:
    """Every evaluation frame through the firmware and ONNX Runtime: identical decisions, SER, instructions; and the
    firmware's q15 forward on the same adapted receiver."""
    frames, host = evaluation_frames(options.run, options.devices, options.pilots, options.symbols)
    per_tick = instructions_per_tick(mcu.info.sysclk_hz)
    rows = []
    progress(0, total=options.devices, label="mcu frames")
    for i in range(options.devices):
        rows.append(one_frame(onnx, mcu, frames.x_tr[i], frames.y_tr[i], frames.x_va[i], frames.y_va[i], log_probs=i < LOG_PROB_FRAMES))
        progress(1)
    adapt_i, decide_i = (per_tick * float(np.median([r[key] for r in rows])) for key in ("adapt_ticks", "decide_ticks"))
    q15_i = per_tick * float(np.median([r["q15_ticks"] for r in rows]))
    return {
        "devices": options.devices,
        "pilots": options.pilots,
        "symbols": options.symbols,
        "differing_decisions": sum(r["differing"] for r in rows),
        "max_abs_error_log_probs": max(r["abs_error"] for r in rows),
        "max_relative_error_log_probs": max(r["relative_error"] for r in rows),
        "log_prob_frames": min(LOG_PROB_FRAMES, options.devices),
        "ser_firmware": float(np.mean([r["ser"] for r in rows])),
        "ser_host": host["ser"],
        "ser_host_ci95": host["ci95"],
        "instructions": {"adapt": adapt_i, "decide": decide_i, "frame": adapt_i + decide_i, "per_symbol": decide_i / options.symbols},
        "projection": {
            "clock_hz": CLOCK_HZ,
            "cycles_per_instruction": list(CPI),
            "adapt_ms": [1e3 * adapt_i * cpi / CLOCK_HZ for cpi in CPI],
            "frame_ms": [1e3 * (adapt_i + decide_i) * cpi / CLOCK_HZ for cpi in CPI],
        },
        "q15": {
            "ser": float(np.mean([r["q15_ser"] for r in rows])),
            "ser_minus_float": paired([r["q15_ser"] - r["ser"] for r in rows]),
            "agreement": float(np.mean([r["q15_agreement"] for r in rows])),
            "decide_instructions": q15_i,
            "per_symbol": q15_i / options.symbols,
        },
        "emulated_frame_s_median": float(np.median([r["seconds"] for r in rows])),
    }


def paired(differences: list[float]) -> dict:
    """The mean of per-device differences and its 95 % interval."""
    summary = summarise(np.asarray(differences))
    return {"diff": summary["ser"], "ci95": summary["ci95"]}


def one_frame(onnx: OnnxBackend, mcu: McuBackend, pilots, labels, payload, truth, log_probs: bool) -> dict:
    """One frame adapted by ONNX Runtime and by the firmware, decided by both and by the firmware's q15 forward."""
    pilots, payload = np.ascontiguousarray(pilots, np.float32), np.ascontiguousarray(payload, np.float32)
    onnx.reset()
    onnx.adapt(pilots, labels)
    reference = onnx.log_probs(payload)
    start = time.perf_counter()
    mcu.reset()
    mcu.adapt(pilots, labels)
    got = mcu.decisions(payload, log_probs=log_probs, q15=False)
    seconds = time.perf_counter() - start
    fixed = mcu.decisions(payload, q15=True)
    return {
        "abs_error": float(np.abs(got.log_probs - reference).max()) if log_probs else 0.0,
        "relative_error": relative_error(got.log_probs, reference) if log_probs else 0.0,
        "differing": int((got.decisions != reference.argmax(-1)).sum()),
        "ser": float((got.decisions != truth).mean()),
        "q15_ser": float((fixed.decisions != truth).mean()),
        "q15_agreement": float((fixed.decisions == got.decisions).mean()),
        "adapt_ticks": mcu.last_adapt.ticks,
        "decide_ticks": got.ticks,
        "q15_ticks": fixed.ticks,
        "seconds": seconds,
    }


def map_sections(map_file: Path) -> dict[str, int]:
    """Output-section sizes from the linker map (bytes): .text, .data, .bss, .ARM.exidx."""
    sizes = {}
    for name, size in re.findall(r"^(\.text|\.data|\.bss|\.ARM\.exidx)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)", map_file.read_text(), re.M):
        sizes[name] = int(size, 16)
    return sizes


def memory(mcu: McuBackend, image_bytes: int) -> dict:
    """Peak RAM (.data + .bss, the receiver's work area, the stack's high-water mark) and flash (the firmware and
    the image), from the firmware after the frames and from the linker map."""
    info = mcu.link.info()
    sections = map_sections(firmware_path().with_suffix(".map"))
    ram = info.static_ram + info.work_used + info.stack_high_water
    flash = sections.get(".text", 0) + sections.get(".ARM.exidx", 0) + sections.get(".data", 0) + image_bytes
    return {
        "ram_bytes": ram,
        "ram_static": info.static_ram,
        "ram_work": info.work_used,
        "stack_high_water": info.stack_high_water,
        "flash_bytes": flash,
        "flash_firmware": flash - image_bytes,
        "flash_image": image_bytes,
        "map_sections": sections,
        "ram_budget": RAM_BUDGET,
        "flash_budget": FLASH_BUDGET,
        "within_budget": ram <= RAM_BUDGET and flash <= FLASH_BUDGET,
    }


def seed_requests(mcu: McuBackend) -> list[bytes]:
    """Valid request payloads of every operation, the fuzz's seeds (a load continues an image: one that starts a new
    image would legitimately replace the running one)."""
    rng = np.random.default_rng(0)
    pilots, samples = rng.normal(size=(8, 2)).astype("<f4"), rng.normal(size=(16, 2)).astype("<f4")
    labels = np.arange(8, dtype="<u2").tobytes()

    return [
        serial.request_payload(serial.OP_INFO, 7),
        serial.request_payload(serial.OP_SELFTEST, 7),
        serial.request_payload(serial.OP_ADAPT, 7, struct.pack("<HH", 8, 0) + pilots.tobytes() + labels),
        serial.request_payload(serial.OP_DECIDE, 7, struct.pack("<HH", 16, 0) + samples.tobytes(), serial.DECIDE_LOG_PROBS),
        serial.request_payload(serial.OP_DECIDE, 7, struct.pack("<HH", 16, 0) + samples.tobytes(), serial.DECIDE_AT_THETA),
        serial.request_payload(serial.OP_LOAD, 7, struct.pack("<II", 64, 4096) + bytes(64)),
    ]


def answered(link: serial.Link) -> bool:
    """Whether the firmware answers an input (a response within ``HANG_S``) and then resynchronises (``Link.resync``)."""
    timeout = link.connection.gettimeout()
    link.connection.settimeout(HANG_S)
    try:
        link.read_reply()
        link.resync()
    except serial.LinkError:
        return False
    finally:
        link.connection.settimeout(timeout)
    return True


def fuzz_serial(mcu: McuBackend, count: int, rng: np.random.Generator, progress: Progress = silent) -> dict:
    """``count`` mutated messages over the serial line: three in four framed with a correct CRC (their content is
    malformed), the rest mutated after framing (lengths, CRCs, truncations). Every one must be answered; afterwards
    the image must be the same and pass its self-test."""
    before = mcu.link.info().image_sha256
    corpus = seed_requests(mcu)
    counts = {"messages": 0, "hangs": 0, "skipped_new_image": 0}
    start = time.perf_counter()
    progress(0, total=count, label="mcu fuzz")
    while counts["messages"] < count:
        payload = mutate(corpus[int(rng.integers(0, len(corpus)))], rng, corpus)
        if len(payload) >= 12 and payload[0] == serial.OP_LOAD and payload[8:12] == bytes(4):
            counts["skipped_new_image"] += 1  # a well-formed start of a new image: a legitimate replacement
            continue
        data = serial.frame(payload) if rng.random() < 0.75 else mutate(serial.frame(payload), rng, corpus)
        if not data:
            continue
        counts["messages"] += 1
        mcu.link.send_raw(data)
        if not answered(mcu.link):
            counts["hangs"] += 1
            mcu._boot()
        progress(1)
    after = mcu.link.info()
    own = mcu.selftest()
    return {
        **counts,
        "seconds": time.perf_counter() - start,
        "image_unchanged": after.image_sha256 == before and after.state == "ready",
        "selftest_passed": own.passed,
    }


def text(report: dict) -> str:
    f, mem, st, fz = report["frames"], report["memory"], report["selftest"], report["fuzz"]
    ins, proj = f["instructions"], f["projection"]
    lines = [
        f"mcu target: {report['algorithm']} receiver of {report['run']} on an emulated Cortex-M4F (QEMU mps2-an386, -icount)",
        f"self-test vectors  max |Δ log p| vs ONNX Runtime: {st['max_abs_error_theta']:.2e} at θ, {st['max_abs_error_adapted']:.2e} adapted"
        f" (relative {st['max_relative_error']:.1e});"
        f" (ONNX Runtime vs torch: {st['onnx_vs_torch_max_abs_error']:.2e}; from float64 at θ: firmware"
        f" {st['max_abs_error_from_float64_theta']['firmware']:.2e}, ONNX Runtime {st['max_abs_error_from_float64_theta']['onnx']:.2e});"
        f" firmware self-test {'passed' if st['passed'] else 'FAILED'}"
        f" ({st['firmware_selftest_error']:.2e})",
        f"{f['devices']} evaluation frames ({f['pilots']} pilots, {f['symbols']} symbols): {f['differing_decisions']} decisions differ from ONNX;"
        f" max |Δ log p| {f['max_abs_error_log_probs']:.2e} (relative {f['max_relative_error_log_probs']:.1e}) over {f['log_prob_frames']} frames",
        f"SER firmware {f['ser_firmware']:.4f}, host evaluation {f['ser_host']:.4f} [{f['ser_host_ci95'][0]:.4f}, {f['ser_host_ci95'][1]:.4f}]",
        f"instructions per frame {ins['frame']:,.0f}: adaptation {ins['adapt']:,.0f}, decisions {ins['decide']:,.0f}"
        f" ({ins['per_symbol']:,.0f} per symbol)",
        f"at {proj['clock_hz'] / 1e6:.0f} MHz and {proj['cycles_per_instruction'][0]:g}–{proj['cycles_per_instruction'][1]:g} cycles per instruction:"
        f" adaptation {proj['adapt_ms'][0]:.1f}–{proj['adapt_ms'][1]:.1f} ms, frame {proj['frame_ms'][0]:.0f}–{proj['frame_ms'][1]:.0f} ms",
        f"RAM {mem['ram_bytes']:,} B (static {mem['ram_static']:,}, work {mem['ram_work']:,}, stack {mem['stack_high_water']:,})"
        f" of {mem['ram_budget']:,};"
        f" flash {mem['flash_bytes']:,} B (firmware {mem['flash_firmware']:,}, image {mem['flash_image']:,}) of {mem['flash_budget']:,}",
    ]
    q = f["q15"]
    lines.append(
        f"q15 forward (adaptation in float): SER {q['ser']:.5f}, {q['ser_minus_float']['diff']:+.5f} [{q['ser_minus_float']['ci95'][0]:+.5f},"
        f" {q['ser_minus_float']['ci95'][1]:+.5f}] against float; {100 * q['agreement']:.3f} % of decisions agree;"
        f" {q['per_symbol']:,.0f} instructions per symbol"
    )
    if fz:
        lines.append(
            f"fuzz: {fz['messages']:,} malformed messages in {fz['seconds']:.0f} s, {fz['hangs']} hangs; image unchanged: {fz['image_unchanged']},"
            f" self-test after: {'passed' if fz['selftest_passed'] else 'FAILED'}"
        )
    return "\n".join(lines)


def exit_code(report: dict) -> int:
    """1 when a claim of the target fails: parity, SER, the memory budget, or the fuzz."""
    f, fz = report["frames"], report["fuzz"]
    ok = report["selftest"]["passed"] and f["differing_decisions"] == 0 and report["memory"]["within_budget"]
    return 0 if ok and (fz is None or (fz["hangs"] == 0 and fz["image_unchanged"] and fz["selftest_passed"])) else 1
