"""``metaedge export`` and ``metaedge inspect``: write a bundle from a run, and look inside one."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaedge.sdk.errors import UserError

EXPORT_EXAMPLES = """
examples:
  metaedge export runs/demo/cavia --target onnx --out bundles/cavia
  metaedge export runs/maml --out bundles/maml-v7 --security-counter 7
  metaedge export runs/vbmaml --out bundles/vbmaml --ensemble 20
  metaedge export runs/born-meta --target qiskit --out bundles/born --shots 512
  metaedge export runs/snn-fomaml --target loihi --out bundles/snn
  metaedge export runs/pred --target linear --out bundles/pred
"""
INSPECT_EXAMPLES = """
examples:
  metaedge inspect bundles/cavia
  metaedge inspect bundles/cavia --json | jq .algorithm
"""


def register(sub) -> None:
    e = sub.add_parser("export", help="export a trained run to a portable bundle",
                       description="Write the portable bundle of a trained run (docs/bundle-format.md): θ, the forward "
                                   "and adaptation-step graphs, and self-test vectors, each listed with size and SHA-256.",
                       epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", type=Path, metavar="RUN_DIR")
    e.add_argument("--target", default="onnx", choices=("onnx", "qiskit", "loihi", "linear"),
                   help="device target: onnx (MLP runs and learned links), qiskit (Born-machine runs of 'metaedge train "
                        "born'), loihi (spiking runs of 'metaedge train snn') or linear (channel predictors of 'metaedge "
                        "train prediction')")
    e.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    e.add_argument("--security-counter", type=int, default=1, help="monotonic counter a device uses against rollback (default 1)")
    e.add_argument("--steps", type=int, default=None, help="adaptation steps on the device (default: the run's inner steps)")
    e.add_argument("--shots", type=int, default=None, help="qiskit only: shots per parameter setting (default: the run's, 256)")
    e.add_argument("--ensemble", type=int, default=None,
                   help="vbmaml runs only: weight draws the device's predictive averages (default 100, as metaedge eval; "
                        "fewer cost less per frame)")
    e.add_argument("--key", type=Path, help="Ed25519 private key to sign with (metaedge keys generate)")
    e.add_argument("--expires", help="UTC time after which devices refuse to install it, e.g. 2027-01-31T00:00:00Z")
    e.add_argument("--json", action="store_true", help="print the manifest as JSON")
    e.set_defaults(handler=run_export)
    i = sub.add_parser("inspect", help="summarise a bundle (verifies sizes and hashes)",
                       epilog=INSPECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("bundle", type=Path, metavar="BUNDLE")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(handler=run_inspect)
    g = sub.add_parser("sign", help="sign a bundle's manifest with an Ed25519 key (writes manifest.sig)",
                       epilog="examples:\n  metaedge keys generate --out keys\n  metaedge sign bundles/cavia --key keys/metaedge.key",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("bundle", type=Path, metavar="BUNDLE")
    g.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    g.set_defaults(handler=run_sign)
    k = sub.add_parser("keys", help="signing keys", epilog="examples:\n  metaedge keys generate --out keys --name release-2027",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = k.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(k))
    kg = actions.add_parser("generate", help="a new Ed25519 key pair: NAME.key (private, mode 600) and NAME.pub")
    kg.add_argument("--out", type=Path, required=True, help="directory for the key files")
    kg.add_argument("--name", default="metaedge", help="file name stem (default metaedge)")
    kg.set_defaults(handler=run_keys_generate)


def run_export(args: argparse.Namespace) -> int:
    if args.shots is not None and args.target != "qiskit":
        raise UserError("--shots applies to the qiskit target only")
    if args.ensemble is not None and args.target != "onnx":
        raise UserError("--ensemble applies to the onnx target only (vbmaml runs)")

    if args.steps is not None and args.target == "loihi":
        raise UserError("--steps does not apply to the loihi target: the rule adapts while the pilots are presented "
                        "(set the presentation length with 'metaedge train snn --steps')")
    key = _load_key(args.key) if args.key else None
    if args.target == "linear":
        from metaedge.sdk.export import release_fields
        from metaedge.sdk.prediction_run import export_linear

        if args.steps is not None:
            raise UserError("--steps does not apply to the linear target: each frame's predictor is solved exactly")
        bundle = _bundle_errors(lambda: export_linear(args.run, args.out, release_fields(args.out, args.security_counter, args.expires), key))
    elif args.target == "loihi":
        from metaedge.sdk.spiking.export import export_loihi

        bundle = _bundle_errors(lambda: export_loihi(args.run, args.out, args.security_counter, key, args.expires))
    elif args.target == "qiskit":
        from metaedge.sdk.quantum.export import export_qiskit

        bundle = _bundle_errors(lambda: export_qiskit(args.run, args.out, args.security_counter, args.steps, args.shots,
                                                      key, args.expires))
    else:
        from metaedge.sdk.export import export_onnx

        bundle = _bundle_errors(lambda: export_onnx(args.run, args.out, args.security_counter, args.steps, key, args.expires,
                                                    args.ensemble))
    print(json.dumps(bundle.manifest.raw, indent=2) if args.json else summary(bundle))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from metaedge.sdk.cli.parsing import read_bundle_arg

    bundle = read_bundle_arg(args.bundle)
    print(json.dumps(bundle.manifest.raw, indent=2) if args.json else summary(bundle))
    return 0


def _load_key(path: Path):
    from metaedge.deploy.signing import SignatureError, load_private

    try:
        return load_private(path)
    except SignatureError as e:
        raise UserError(str(e)) from None


def _bundle_errors(action):
    from metaedge.deploy.bundle import BundleError

    try:
        return action()
    except BundleError as e:
        raise UserError(str(e)) from None


def summary(bundle) -> str:
    m = bundle.manifest.raw
    algo, task = m["algorithm"], m["task"]
    params = sum(int(__import__("math").prod(p["shape"])) for p in m["parameters"])
    lines = [
        f"bundle      {bundle.path}  ({m['format']} v{m['version']}, {bundle.size():,} bytes, verified)",
        f"target      {m['target']}  " + {"onnx": lambda: f"(ONNX opset {m['graphs']['opset']})",
                                          "qiskit": lambda: f"(QPY version {m['circuit']['qpy_version']})",
                                          "loihi": lambda: "(Lava, Loihi 2)",
                                          "linear": lambda: "(numpy, closed form)"}[m["target"]](),
        f"task        {task['name']}: " + _task_line(task),
    ]
    if m["target"] == "linear":
        p = m["predictor"]
        lines += [f"model       {p['form']} linear predictor: window {p['window']}, lag {p['lag']}, rank {p['rank']}, "
                  f"{params:,} bias entries",
                  f"algorithm   {algo['name']}: ridge toward the bias (λ {p['lam']:g}) on each frame's pilot channels, solved exactly"]
    elif m["target"] == "loihi":
        snn = m["snn"]
        lines += [f"model       spiking: {2 * snn['grid']} input → {snn['grid'] ** 2} LIF hidden → {snn['classes']} plastic LIF "
                  f"outputs; {snn['steps']}+{snn['gap']} timesteps per symbol",
                  f"algorithm   {algo['name']}: three-factor rule '{algo['rule']['dw']}', η {snn['learning_rate']:g}, "
                  f"on the pilots; θ = {snn['classes']}×{snn['grid'] ** 2} plastic weights"]
    elif m["target"] == "qiskit":
        born = m["born"]
        lines += [f"model       Born machine: {born['qubits']} qubits = binary weights, {born['layers']} entangling layers, "
                  f"{born['parameters']} angles",
                  f"algorithm   {algo['name']}: {algo['inner_steps']} parameter-shift step(s) × {2 * born['parameters'] + 1} "
                  f"circuits × {algo['shots']} shots; ensemble of {algo['predict_shots']} weight samples"]
    else:
        model = m["model"]
        adapted = ", ".join(algo["adapts"]) if len(algo["adapts"]) < len(m["parameters"]) else "all parameters"
        shape = (f"features {'→'.join(map(str, model['features']))}, graph filters of order {model['taps']}" if model["kind"] == "regnn"
                 else '→'.join(map(str, model['sizes'])) + (f" + {model['context']} context inputs" if model["context"] else "")
                 + (f" after a radio-transformer network {'→'.join(map(str, model['rtn']))} ({model['rtn_activation']})"
                    if "rtn" in model else ""))
        noise = algo.get("noise")
        step = "free-energy" if noise else "SVGD" if "particles" in model else \
            {"exhaustive": "exhaustive assignment-search", "relaxed": "assignment-logit"}.get(algo.get("assignment"), "SGD")
        posterior = (f"; Gaussian posterior, {noise['adapt']['draws']} weight draws per step, predictive over "
                     f"{noise['predict']['draws']}" if noise else f"; ensemble of {model['particles']} particles" if "particles" in model else "")
        lines += [f"model       {model['kind']} {shape}, {params:,} parameters",
                  f"algorithm   {algo['name']}: {algo['inner_steps']} {step} step(s), lr {algo['inner_lr']:g}, adapts {adapted}{posterior}"]
    lines += [
        f"security    counter {m['security_counter']}, " + (f"expires {m['expires']}, " if "expires" in m else "")
        + ("signed (manifest.sig)" if bundle.signature else "UNSIGNED"),
        "artifacts",
    ]
    lines += [f"  {role:<11} {e['path']:<22} {e['size']:>8,} B  sha256 {e['sha256'][:16]}…" for role, e in m["artifacts"].items()]
    return "\n".join(lines)


def run_sign(args: argparse.Namespace) -> int:
    from metaedge.deploy.bundle import sign_bundle
    from metaedge.deploy.signing import key_id

    key = _load_key(args.key)
    _bundle_errors(lambda: sign_bundle(args.bundle, key))
    print(f"signed {args.bundle} with key {key_id(key.public_key())} → {args.bundle / 'manifest.sig'}")
    return 0


def run_keys_generate(args: argparse.Namespace) -> int:
    from metaedge.deploy.signing import SignatureError, generate, key_id, load_public

    try:
        private, public = generate(args.out, args.name)
    except SignatureError as e:
        raise UserError(str(e)) from None
    print(f"key {key_id(load_public(public))}: private {private} (keep it secret), public {public} (provision devices with it)")
    return 0


def _task_line(task: dict) -> str:
    if task["name"] == "power":
        return (f"power control for up to {task['outputs']} links (features: the slot's {len(task['features']) - 1} gains and "
                f"the noise power); pilots are slots of channel measurements, no labels")
    if task["name"] == "prediction":
        return (f"{task['rx']}×{task['tx']} antennas, {task['taps']} taps ({len(task['features']) // 2} complex entries), "
                f"Doppler {task['doppler_hz'][0]:g}-{task['doppler_hz'][1]:g} Hz; pilots are the frame's past channels")
    what = (f"{task['classes']} messages ({task['bits']} bits over {task['uses']} channel uses, {task['taps']} taps, "
            f"Eb/N0 {task['ebn0_db']:g} dB), transmitter codebook in the manifest" if task["name"] == "link"
            else f"{task['classes']}-point constellation")
    return f"{what}, features {'/'.join(task['features'])}, pilots {'known sequence' if task['pilot_sequence'] else 'random'}"
