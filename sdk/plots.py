"""PNG figures: training curves and SER-vs-pilots. Agg backend, no display needed."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _counts(ax, values) -> None:
    """A count axis (pilots, samples, tasks, steps, periods): ticks at the counts, written as plain integers, and no
    labels between them (a log axis would write 2×10⁰)."""
    from matplotlib.ticker import NullFormatter

    values = sorted({int(v) for v in values})
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _legend(ax, size: int = 8) -> None:
    """The axes' legend below them, where it never covers a curve."""
    ax.legend(fontsize=size, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)


def _write(plt, fig, path: Path) -> None:
    """Save with every legend inside the image, then free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(curves: list[dict], path: Path, title: str) -> None:
    """Meta-loss and validation SER against meta-iterations."""
    if not curves:
        return
    plt = _pyplot()
    it = [c["iteration"] for c in curves]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(it, [c["meta_loss"] for c in curves])
    a.set(xlabel="meta-iteration", ylabel="meta-training loss")
    b.semilogy(it, [max(c["val_ser"], 1e-5) for c in curves])
    b.set(xlabel="meta-iteration", ylabel="validation SER")
    fig.suptitle(title)
    _write(plt, fig, path)


def plot_lines(curves: dict[str, dict[str, float]], path: Path, xlabel: str, ylabel: str) -> None:
    """One line per name of {count: value} (log–log), the counts written as integers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, curve in curves.items():
        ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel)
    _counts(ax, [k for curve in curves.values() for k in curve])
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    _write(plt, fig, path)


def plot_ser(results: list[dict], pilots: list[int], path: Path, title: str) -> None:
    """SER with 95 % intervals against the number of pilots, one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ser = [r["ser"][str(p)]["ser"] for p in pilots]
        lo = [r["ser"][str(p)]["ci95"][0] for p in pilots]
        hi = [r["ser"][str(p)]["ci95"][1] for p in pilots]
        reference = r.get("algo") == "model-based"
        (line,) = ax.plot(pilots, ser, marker="o", label=r["name"], **({"color": "black", "linestyle": "--"} if reference else {}))
        ax.fill_between(pilots, lo, hi, alpha=0.15, color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="pilots at meta-test", ylabel="symbol error rate", title=title)
    _counts(ax, pilots)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    _write(plt, fig, path)


def plot_reliability(diagrams: dict[str, dict], path: Path, title: str) -> None:
    """Reliability diagrams (accuracy against confidence per bin) of several receivers, with their ECE."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfect calibration")
    for name, d in diagrams.items():
        points = [(c, a) for c, a in zip(d["confidence"], d["accuracy"]) if c is not None]
        ax.plot(*zip(*points), marker="o", label=f"{name} (ECE {d['ece']:.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title=title)
    _legend(ax)
    _write(plt, fig, path)


def plot_sinusoid(report: dict, path: Path) -> None:
    """The three panels of the sinusoid benchmark (monograph Figure 2.4)."""
    plt = _pyplot()
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    for method in report["methods"]:
        curve = report["a_loss_vs_iterations"][method]
        a.plot([p["iteration"] for p in curve], [p["test_loss"] for p in curve], label=method)
        for ax, key, panel in ((b, "b_best_loss_vs_samples", "b"), (c, "c_best_loss_vs_tasks", "c")):
            points = report[key][method]
            (line,) = ax.plot([int(x) for x in points], list(points.values()), marker="o", label=method)
            if "draws" in report:  # every draw as a dot: the spread the mean hides
                for x, values in report["draws"][panel][method].items():
                    kept = [v for v in values if v is not None]  # None: a diverged draw
                    ax.scatter([int(x)] * len(kept), kept, s=9, alpha=0.45, color=line.get_color())
    setup = report["setup"]
    a.set(xlabel="meta-training iteration", ylabel="test MSE", yscale="log", title=f"(a) N = {setup['samples']}, K = {setup['tasks']}")
    b.set(xlabel="samples per task N", ylabel="best test MSE", xscale="log", yscale="log", title=f"(b) K = {setup['tasks']}")
    c.set(xlabel="meta-training tasks K", ylabel="best test MSE", xscale="log", yscale="log", title=f"(c) N = {setup['samples']}")
    for ax in (a, b, c):
        ax.grid(True, which="both", alpha=0.3)
    for ax, grid in ((b, setup["sample_grid"]), (c, setup["task_grid"])):
        _counts(ax, grid)
    handles, labels = a.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), frameon=False)
    if setup.get("repeats", 1) > 1:
        fig.suptitle(
            f"lines: means over {setup['repeats']} task draws (seeds {setup['seed']}-{setup['seed'] + setup['repeats'] - 1}); dots: each draw",
            fontsize=9,
        )
    _write(plt, fig, path)


def _line_with_band(ax, curve: dict[str, dict], value: str, label: str, floor: float | None = None) -> None:
    """One method's curve {x: {value, "ci95"}} as a line with its 95 % band (clipped at ``floor`` for log axes)."""
    clip = (lambda v: max(v, floor)) if floor is not None else (lambda v: v)  # noqa: E731
    xs = [int(x) for x in curve]
    (line,) = ax.plot(xs, [clip(p[value]) for p in curve.values()], marker="o", label=label)
    ax.fill_between(
        xs, [clip(p["ci95"][0]) for p in curve.values()], [clip(p["ci95"][1]) for p in curve.values()], alpha=0.15, color=line.get_color()
    )


def _save(plt, fig, axes, path: Path, legend_size: int = 8) -> None:
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, legend_size)
    _write(plt, fig, path)


def plot_link(report: dict, path: Path) -> None:
    """BLER with 95 % intervals against adaptation steps on new channels (monograph Figure 5.7)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in report["methods"]:
        _line_with_band(ax, report["bler"][method], "ser", method, floor=1e-5)
    link = report["setup"]["link"]
    ax.set(
        xscale="symlog",
        yscale="log",
        xlabel="adaptation steps on the new channel",
        ylabel="block error rate",
        title=f"{link['bits']} bits, {link['uses']} channel uses, {link['taps']} taps, Eb/N0 {link['ebn0_db']:g} dB",
    )
    _counts(ax, [x for method in report["methods"] for x in report["bler"][method]])
    _save(plt, fig, [ax], path)


def plot_prediction(report: dict, path: Path) -> None:
    """NMSE (dB) against training samples, one panel per Doppler regime (monograph Figure 5.9)."""
    plt = _pyplot()
    regimes = report["regimes"]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 4), squeeze=False)
    for ax, (regime, r) in zip(axes[0], regimes.items()):
        for name, curve in r["nmse_db"].items():
            scheme, form = name.split("-")
            ax.plot(
                [int(n) for n in curve],
                list(curve.values()),
                marker="o",
                label=name,
                linestyle="-" if form == "lstd" else "--",
                color={"conventional": "C0", "joint": "C1", "meta": "C2", "selecting": "C3"}[scheme],
            )
        hz = r["setup"]["channel"]["doppler_hz"]
        ax.set(xscale="log", xlabel="training samples N_tr", ylabel="NMSE (dB)", title=f"{regime} fading ({hz[0]:g}-{hz[1]:g} Hz)")
        _counts(ax, r["setup"]["sample_grid"])
    _save(plt, fig, axes[0], path, legend_size=7)


def plot_power(report: dict, path: Path) -> None:
    """Sum-rate with 95 % intervals against meta-training periods K (monograph Figure 5.11) and, beside it, each
    method's paired difference to joint learning on the same topologies (the intervals of the means overlap
    because topologies differ far more than methods do)."""
    plt = _pyplot()
    paired = [m for m in report["methods"] if m != "joint" and "vs_joint" in next(iter(report["sum_rate"][m].values()))]
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(11 if paired else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for method in report["methods"]:
        _line_with_band(ax, report["sum_rate"][method], "sum_rate", method)
    ax.axhline(report["full_power"]["sum_rate"], color="black", linestyle=":", label="full power")
    ax.axhline(report["optimised"]["sum_rate"], color="0.4", linestyle="--", label="optimised per slot (oracle)")
    ax.set(xscale="log", xlabel="meta-training periods K", ylabel="sum-rate (bit/s/Hz per slot)", title="REGNN power control on new topologies")
    periods = [k for method in report["methods"] for k in report["sum_rate"][method]]
    _counts(ax, periods)
    if paired:
        diff = axes[0, 1]
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]  # each method keeps its colour of the left panel
        diff.set_prop_cycle(color=[colours[report["methods"].index(m) % len(colours)] for m in paired])
        for method in paired:
            _line_with_band(diff, {k: v["vs_joint"] for k, v in report["sum_rate"][method].items()}, "diff", method)
        diff.axhline(0, color=colours[report["methods"].index("joint") % len(colours)], label="joint")
        diff.set(
            xscale="log",
            xlabel="meta-training periods K",
            ylabel="minus joint learning (bit/s/Hz per slot)",
            title="paired difference to joint learning",
        )
        _counts(diff, periods)
    _save(plt, fig, list(axes[0]), path)


def plot_shift(report: dict, path: Path) -> None:
    """SER against pilots per shift (one panel each): learned, classical and selecting receivers with 95 % bands."""
    plt = _pyplot()
    shifts, pilots = report["shifts"], report["pilots"]
    cols = min(3, len(shifts))
    rows = -(-len(shifts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    styles = {"learned": {"marker": "o"}, "classical": {"color": "black", "linestyle": "--", "marker": "s"}, "selecting": {"marker": "^"}}
    for ax, shift in zip(axes.flat, shifts):
        for receiver, style in styles.items():
            ser = shift["ser"][receiver]
            (line,) = ax.plot(pilots, [ser[str(p)]["ser"] for p in pilots], label=receiver, **style)
            ax.fill_between(
                pilots, [ser[str(p)]["ci95"][0] for p in pilots], [ser[str(p)]["ci95"][1] for p in pilots], alpha=0.15, color=line.get_color()
            )
        ax.set(xscale="log", yscale="log", title=shift["description"], xlabel="pilots", ylabel="symbol error rate")
        _counts(ax, pilots)
        ax.title.set_fontsize(9)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(shifts) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), frameon=False)
    fig.suptitle(
        f"{report['algo']}: {report['devices']} fresh devices × {report['payload']} symbols per shift, margin {report['select']['margin']:g}"
    )
    _write(plt, fig, path)


def plot_fleet(report: dict, path: Path) -> None:
    """``bench fleet``'s three panels: SER against tasks used (from an untrained θ), against ρ, and over a field shift."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    styles = {"learned": {"marker": "o"}, "selecting": {"marker": "^"}, "classical": {"color": "black", "linestyle": "--", "marker": "s"}}
    panels = [
        (report["frames"], "tasks", "online meta-learning from an untrained θ", "tasks (device frames) used", "symlog"),
        (report["rho"], "rho", "the same budget from a tenth of the devices", "channel correlation ρ", "linear"),
        (report["shift"]["points"], "tasks", f"field shift '{report['shift']['scenario']}' from the offline θ", "tasks used", "symlog"),
    ]
    for ax, (points, key, title, xlabel, xscale) in zip(axes, panels):
        x = [p[key] for p in points]
        for receiver, style in styles.items():
            (line,) = ax.plot(x, [p[receiver]["ser"] for p in points], label=receiver, **style)
            ax.fill_between(x, [p[receiver]["ci95"][0] for p in points], [p[receiver]["ci95"][1] for p in points], alpha=0.15, color=line.get_color())
        ax.set(yscale="log", title=title, xlabel=xlabel, ylabel="symbol error rate")
        if xscale == "symlog":  # tasks used, from 0
            ax.set_xscale("symlog", linthresh=min(v for v in x if v > 0))
            ax.set_xlim(0, max(x) * 1.5)
        ax.title.set_fontsize(9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['algo']}: online meta-learning from fleet telemetry, {report['pilots']} pilots, {report['test_devices']} fresh devices")
    _write(plt, fig, path)
