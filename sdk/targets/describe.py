"""A bundle in a few lines, as ``metaedge export`` and ``metaedge inspect`` print it: target, task, model, adaptation,
release and artefacts."""

from __future__ import annotations

from metaedge.deploy.bundle import Bundle


def summary(bundle: Bundle) -> str:
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
    hidden = snn.get("hidden", snn["grid"] ** 2)
    learned = ", ".join(algo.get("meta_learned", ["theta"]))
    return "Lava, Loihi 2", [
        f"model       spiking: {2 * snn['grid']} input → {hidden} LIF hidden → {snn['classes']} plastic LIF "
        f"outputs; {snn['steps']}+{snn['gap']} timesteps per symbol",
        f"algorithm   {algo['name']}: three-factor rule '{algo['rule']['dw']}' on the pilots; θ = {snn['classes']}×{hidden} "
        f"plastic weights; learned offline: {learned}",
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


def _mcu_lines(m: dict, params: int) -> tuple[str, list[str]]:
    model, algo = m["model"], m["algorithm"]
    adapted = ", ".join(algo["adapts"])
    steps = "per-entry learned step sizes" if any(p["name"].startswith("lr.") for p in m["parameters"]) else f"lr {algo['inner_lr']:g}"
    shape = "→".join(map(str, model["sizes"])) + (f" + {model['context']} context inputs" if model["context"] else "")
    return f"MetaEdge firmware, Cortex-M4F, image layout {m['mcu']['layout']}", [
        f"model       mlp {shape}, {params:,} parameters; {m['mcu']['work_bytes']:,} B of RAM to adapt",
        f"algorithm   {algo['name']}: {algo['inner_steps']} SGD step(s) in float32, {steps}, adapts {adapted}",
    ]


_TARGET_LINES = {"linear": _linear_lines, "loihi": _loihi_lines, "qiskit": _qiskit_lines, "onnx": _onnx_lines, "mcu": _mcu_lines}
