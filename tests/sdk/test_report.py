"""``metaedge report``: every section renders, the page references every figure, each figure is a real PNG."""

import json
import re

import pytest

from metaedge.sdk.cli.main import main

COUNTS = ("pilots", "samples", "tasks", "devices K", "periods", "steps")  # count axes, by their labels


def check_figure(fig) -> None:
    """Legends never cover a curve (each lies outside every axes); count axes are written as plain integers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # pyplot closed the figure: draw it again on its own canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes if ax.get_visible() and ax.axison), legend
    for ax in fig.axes:
        if any(word in ax.get_xlabel() for word in COUNTS):
            assert all(t.get_text().isdigit() for t in ax.get_xticklabels()), (ax.get_xlabel(), [t.get_text() for t in ax.get_xticklabels()])
            assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True)), ax.get_xlabel()


def test_quick_report_renders_every_section_and_figure(tmp_path, capsys, monkeypatch):
    import matplotlib.figure
    import matplotlib.image

    saved, save = [], matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))[1])
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--quick", "--quiet", "--seed", "3"]) == 0
    assert len(saved) >= 6
    for fig in saved:
        check_figure(fig)
    page = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 6
    assert sorted(set(re.findall(r"<img src='([^']+)'", page))) == pngs  # every figure referenced, none missing
    for name in pngs:
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
    report = json.loads((out / "report.json").read_text())
    assert [s["title"].split()[0] for s in report["sections"]] == ["Demodulation", "Learned", "Multi-antenna", "Power", "Device-side"]
    assert all(s["seed"] == 3 and s["command"].startswith("metaedge") for s in report["sections"])
    assert page.count("Reproduce: <code>metaedge") == 5 and "seed 3" in page
    assert "http" not in page  # self-contained: no external resources


def test_report_sections_are_checked(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path), "--sections", "link,weather"]) == 2
    assert "unknown section 'weather'" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "d"), "--sections", "device", "--quick"]) == 2
    assert "needs the demod section's MAML run" in capsys.readouterr().err


@pytest.mark.parametrize("section", ["prediction"])
def test_a_single_section_report(tmp_path, section):
    assert main(["report", "--out", str(tmp_path), "--sections", section, "--quick", "--quiet"]) == 0
    assert (tmp_path / "prediction-nmse.png").is_file() and "channel prediction" in (tmp_path / "index.html").read_text()
