"""``metaedge report``: every section renders, the page references every figure, each figure is a real PNG."""

import json
import re

import pytest

from metaedge.sdk.cli.main import main


def test_quick_report_renders_every_section_and_figure(tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--quick", "--quiet", "--seed", "3"]) == 0
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
