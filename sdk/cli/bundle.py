"""``metaedge export`` and ``metaedge inspect``: write a bundle from a run, and look inside one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaedge.sdk.cli.parsing import add_command
from metaedge.sdk.errors import UserError
from metaedge.sdk.options import output_dir
from metaedge.sdk.targets import OPTIONS, TARGETS, flag

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
    e = add_command(
        sub,
        "export",
        help="export a trained run to a portable bundle",
        description="Write the portable bundle of a trained run (docs/bundle-format.md): θ, the forward "
        "and adaptation-step graphs, and self-test vectors, each listed with size and SHA-256.",
        examples=EXPORT_EXAMPLES,
    )
    e.add_argument("run", type=Path, metavar="RUN_DIR")
    e.add_argument(
        "--target", default="onnx", choices=tuple(TARGETS), help="device target: " + "; ".join(f"{name} ({t.runs})" for name, t in TARGETS.items())
    )
    e.add_argument("--out", type=output_dir, required=True, help="bundle directory to create")
    e.add_argument("--security-counter", type=int, default=1, help="monotonic counter a device uses against rollback (default 1)")
    e.add_argument(
        "--release",
        type=int,
        default=0,
        help="release number within the security counter: a device never selects an image older than its confirmed one "
        "by (counter, release) (default 0)",
    )
    for name, text in OPTIONS.items():
        e.add_argument(flag(name), type=int, default=None, help=text)
    e.add_argument("--key", type=Path, help="Ed25519 private key to sign with (metaedge keys generate)")
    e.add_argument("--expires", help="UTC time after which devices refuse to install it, e.g. 2027-01-31T00:00:00Z")
    e.add_argument("--json", action="store_true", help="print the manifest as JSON")
    e.set_defaults(handler=run_export)
    i = add_command(sub, "inspect", help="summarise a bundle (verifies sizes and hashes)", examples=INSPECT_EXAMPLES)
    i.add_argument("bundle", type=Path, metavar="BUNDLE")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(handler=run_inspect)
    g = add_command(
        sub,
        "sign",
        help="sign a bundle's manifest with an Ed25519 key (writes manifest.sig)",
        examples="examples:\n  metaedge keys generate --out keys\n  metaedge sign bundles/cavia --key keys/metaedge.key",
    )
    g.add_argument("bundle", type=Path, metavar="BUNDLE")
    g.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    g.set_defaults(handler=run_sign)
    k = add_command(sub, "keys", help="signing keys", examples="examples:\n  metaedge keys generate --out keys --name release-2027")
    actions = k.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(k))
    kg = add_command(actions, "generate", help="a new Ed25519 key pair: NAME.key (private, mode 600) and NAME.pub")
    kg.add_argument("--out", type=output_dir, required=True, help="directory for the key files")
    kg.add_argument("--name", default="metaedge", help="file name stem (default metaedge)")
    kg.set_defaults(handler=run_keys_generate)


def run_export(args: argparse.Namespace) -> int:
    from metaedge.sdk.targets import Release, export

    release = Release(args.security_counter, args.expires, args.release)
    key = _load_key(args.key) if args.key else None
    bundle = export(args.target, args.run, args.out, release, key, **{name: getattr(args, name) for name in OPTIONS})
    print(json.dumps(bundle.manifest.raw, indent=2) if args.json else summary(bundle))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from metaedge.sdk.errors import bundle_at

    bundle = bundle_at(args.bundle)
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
    """What ``metaedge inspect`` prints: the bundle, its target, task, model, adaptation, release and artefacts."""
    from metaedge.sdk import families

    m = bundle.manifest.raw
    runtime, model_lines = _TARGET_LINES[m["target"]](m, sum(p.count for p in bundle.manifest.parameters))
    expiry = f"expires {m['expires']}, " if "expires" in m else ""
    return "\n".join(
        [
            f"bundle      {bundle.path}  ({m['format']} v{m['version']}, {bundle.size():,} bytes, verified)",
            f"target      {m['target']}  ({runtime})",
            f"task        {m['task']['name']}: " + families.get(m["task"]["name"]).describe(m["task"]),
            *model_lines,
            f"security    counter {m['security_counter']}, release {m.get('release', 0)}, {expiry}"
            + (f"signed (manifest.sig) by key {(m.get('signer') or 'unnamed')[:16]}" if bundle.signature else "UNSIGNED"),
            "artifacts",
            *(f"  {role:<11} {e['path']:<22} {e['size']:>8,} B  sha256 {e['sha256'][:16]}…" for role, e in m["artifacts"].items()),
        ]
    )


def _linear_lines(m: dict, params: int) -> tuple[str, list[str]]:
    p, algo = m["predictor"], m["algorithm"]
    return "numpy, closed form", [
        f"model       {p['form']} linear predictor: window {p['window']}, lag {p['lag']}, rank {p['rank']}, {params:,} bias entries",
        f"algorithm   {algo['name']}: ridge toward the bias (λ {p['lam']:g}) on each frame's pilot channels, solved exactly",
    ]


def _loihi_lines(m: dict, params: int) -> tuple[str, list[str]]:
    snn, algo = m["snn"], m["algorithm"]
    return "Lava, Loihi 2", [
        f"model       spiking: {2 * snn['grid']} input → {snn['grid'] ** 2} LIF hidden → {snn['classes']} plastic LIF "
        f"outputs; {snn['steps']}+{snn['gap']} timesteps per symbol",
        f"algorithm   {algo['name']}: three-factor rule '{algo['rule']['dw']}', η {snn['learning_rate']:g}, "
        f"on the pilots; θ = {snn['classes']}×{snn['grid'] ** 2} plastic weights",
    ]


def _qiskit_lines(m: dict, params: int) -> tuple[str, list[str]]:
    born, algo = m["born"], m["algorithm"]
    return f"QPY version {m['circuit']['qpy_version']}", [
        f"model       Born machine: {born['qubits']} qubits = binary weights, {born['layers']} entangling layers, {born['parameters']} angles",
        f"algorithm   {algo['name']}: {algo['inner_steps']} parameter-shift step(s) × {2 * born['parameters'] + 1} "
        f"circuits × {algo['shots']} shots; ensemble of {algo['predict_shots']} weight samples",
    ]


def _onnx_lines(m: dict, params: int) -> tuple[str, list[str]]:
    model, algo = m["model"], m["algorithm"]
    adapted = ", ".join(algo["adapts"]) if len(algo["adapts"]) < len(m["parameters"]) else "all parameters"
    if model["kind"] == "regnn":
        shape = f"features {'→'.join(map(str, model['features']))}, graph filters of order {model['taps']}"
    else:
        rtn = f" after a radio-transformer network {'→'.join(map(str, model['rtn']))} ({model['rtn_activation']})" if "rtn" in model else ""
        shape = "→".join(map(str, model["sizes"])) + (f" + {model['context']} context inputs" if model["context"] else "") + rtn
    noise = algo.get("noise")
    searches = {"exhaustive": "exhaustive assignment-search", "relaxed": "assignment-logit"}
    step = "free-energy" if noise else "SVGD" if "particles" in model else searches.get(algo.get("assignment"), "SGD")
    if noise:
        posterior = f"; Gaussian posterior, {noise['adapt']['draws']} weight draws per step, predictive over {noise['predict']['draws']}"
    else:
        posterior = f"; ensemble of {model['particles']} particles" if "particles" in model else ""
    return f"ONNX opset {m['graphs']['opset']}", [
        f"model       {model['kind']} {shape}, {params:,} parameters",
        f"algorithm   {algo['name']}: {algo['inner_steps']} {step} step(s), lr {algo['inner_lr']:g}, adapts {adapted}{posterior}",
    ]


_TARGET_LINES = {"linear": _linear_lines, "loihi": _loihi_lines, "qiskit": _qiskit_lines, "onnx": _onnx_lines}


def run_sign(args: argparse.Namespace) -> int:
    from metaedge.deploy.bundle import sign_bundle
    from metaedge.deploy.signing import key_id, short

    key = _load_key(args.key)
    _bundle_errors(lambda: sign_bundle(args.bundle, key))
    print(f"signed {args.bundle} with key {short(key_id(key.public_key()))} (named as the manifest's signer) → {args.bundle / 'manifest.sig'}")
    return 0


def run_keys_generate(args: argparse.Namespace) -> int:
    from metaedge.deploy.signing import SignatureError, generate, key_id, load_public, short

    try:
        private, public = generate(args.out, args.name)
    except SignatureError as e:
        raise UserError(str(e)) from None
    print(f"key {short(key_id(load_public(public)))}: private {private} (keep it secret), public {public} (provision devices with it)")
    return 0
