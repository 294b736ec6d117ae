"""Safe adaptation on the host: ``metaedge bench shift`` and ``metaedge eval --select`` (bundle-format.md §6.2)."""

import json

import pytest

from metaedge.sdk.cli.main import main


def test_bench_shift_reports_every_receiver_shift_and_claim(tmp_path, trained_bundle, capsys):
    run_dir, _ = trained_bundle
    plot = tmp_path / "shift.png"
    assert main(["bench", "shift", str(run_dir), "--shifts", "trained,iq-milder", "--quick", "--json", "--plot", str(plot), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in report["shifts"]] == ["trained", "iq-milder"] and plot.stat().st_size > 0
    for shift in report["shifts"]:
        for p in map(str, report["pilots"]):
            sers = {r: shift["ser"][r][p]["ser"] for r in ("learned", "classical", "selecting")}
            share, vs = shift["classical_share"][p], shift["selecting_vs"][p]
            if share == 0:  # the selecting receiver decides each device with one of the two
                assert sers["selecting"] == sers["learned"]
            if share == 1:
                assert sers["selecting"] == sers["classical"]
            for other in ("learned", "classical"):
                assert vs[other]["diff"] == pytest.approx(sers["selecting"] - sers[other])
            assert vs["better"]["receiver"] == min(("learned", "classical"), key=sers.get)
    assert len(report["checks"]) == 3 and all(isinstance(c["holds"], bool) and isinstance(c["failures"], list) for c in report["checks"])


def test_bench_shift_refuses_an_unknown_shift(trained_bundle, capsys):
    assert main(["bench", "shift", str(trained_bundle[0]), "--shifts", "trained,fog", "--quick"]) == 2
    assert "--shifts: unknown shift 'fog'; choose from trained," in capsys.readouterr().err


def test_eval_select_adds_each_runs_selecting_receiver(trained_bundle, capsys):
    run_dir, _ = trained_bundle
    argv = ["eval", str(run_dir), "--pilots", "4,8", "--devices", "10", "--payload", "200", "--json", "--quiet"]
    assert main([*argv, "--select"]) == 0
    methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)["methods"]}
    selecting = next(m for name, m in methods.items() if name.endswith("+ selection"))
    assert selecting["budget"]["select"] == {"margin": 0.05, "samples": 256} and selecting["algo"] == "cavia + selection"
    assert "vs_reference" in selecting["ser"]["8"]
    assert main([*argv, "--select", "1.5"]) == 2
    assert "'1.5' is not a margin" in capsys.readouterr().err
