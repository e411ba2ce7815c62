"""studies/quality_cost/report.py on run folders laid out as studies/quality_cost/run.sh writes them: the lr chosen
on validation loss (not on the reported eval loss), paired differences to the base, costs summed over clients, and
the cost to reach half of FedIT's improvement."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from studies.quality_cost import report


def write_run(run, losses: list[float], val: list[float] | None, up: float, down: float, fe: float,
              base: bool = True) -> None:
    """A 2-client-a-round run whose eval loss after round r is losses[r] (round 0: the base model, left out of
    metrics.jsonl unless `base`); no validation loss when `val` is None (every run outside the sweep)."""
    run.mkdir(parents=True)
    rows = [{"round": 0, "eval_loss": losses[0], "rouge_l": 0.2}]
    for r in range(1, len(losses)):
        rows.append({"round": r, "clients": [0, 1], "eval_loss": losses[r],
                     "bytes_up_per_client": up, "bytes_down_per_client": down, "forward_equivalents_per_client": fe,
                     "client_seconds": 3.0, "peak_memory_bytes": 2**30})
    if val is not None:
        for row, loss in zip(rows, val, strict=True):
            row["val_loss"] = loss
    rows[-1]["rouge_l"] = 0.25
    (run / "config.json").write_text(json.dumps({"flags": {}, "git_revision": "abc"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[0 if base else 1:]))
    (run / "summary.json").write_text(json.dumps({"base": rows[0] if base else None, "final": rows[-1]}))


def run_study(out: Path, env: dict) -> subprocess.CompletedProcess:
    """studies/quality_cost/run.sh OUT under env, its output captured."""
    return subprocess.run(["bash", str(ROOT / "studies" / "quality_cost" / "run.sh"), str(out)],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def study(tmp_path):
    dolly = tmp_path / "dolly"
    # FedIT's sweep: 1e-4 has the lower validation loss although 3e-4 has the lower eval loss
    write_run(dolly / "fedit-lr1e-4-s0", [2.0, 1.8, 1.6], [2.1, 1.9, 1.7], 1000, 1000, 30)
    write_run(dolly / "fedit-lr3e-4-s0", [2.0, 1.5, 1.4], [2.1, 1.9, 1.8], 1000, 1000, 30)
    write_run(dolly / "fedit-lr1e-4-s1", [2.2, 2.0, 1.8], [2.3, 2.1, 1.9], 1000, 1000, 30)
    # FedKSeed reaches FedIT's half-way loss (2.1 - 0.2 = 1.9 mean) only at round 2; Pro never does
    write_run(dolly / "fedkseed-lr1e-6-s0", [2.0, 1.95, 1.85], [2.1, 2.0, 1.9], 400, 100, 20)
    write_run(dolly / "fedkseed-lr1e-6-s1", [2.2, 2.1, 1.95], [2.3, 2.2, 2.1], 400, 100, 20)
    write_run(dolly / "fedkseed_pro-lr1e-6-s0", [9.9, 2.0, 1.99], [2.1, 2.1, 2.1], 400, 4100, 20, base=False)
    return tmp_path


def test_the_lr_is_chosen_on_validation_loss(study):
    assert report.choose(study, "fedit") == "1e-4"
    assert report.main(["choose", str(study), "--method", "fedavg"]) == 2


def test_the_table_has_paired_differences_and_costs_summed_over_clients(study):
    numbers = report.dataset_numbers(study, "dolly")
    assert [n["seed"] for n in numbers["fedit"]] == [0, 1]  # the chosen lr's seeds only
    fedkseed = numbers["fedkseed"][1]
    assert fedkseed["loss"] - fedkseed["base_loss"] == pytest.approx(-0.25)
    assert fedkseed["total_bytes"] == 2 * 2 * 500 and fedkseed["forward_equivalents"] == 2 * 2 * 20
    row = next(line for line in report.table(numbers) if line.startswith("| FedKSeed |"))
    assert "-0.2000 ± 0.0707" in row  # paired: (-0.15, -0.25)
    one_seed = next(line for line in report.table(numbers) if line.startswith("| FedKSeed-Pro |"))
    assert "| 1.9900 | -0.0100 |" in one_seed and "±" not in one_seed  # no spread claimed from one seed


def test_methods_are_paired_with_fedkseed_seed_by_seed_with_a_paired_t_test(study):
    lines, doc = report.paired_to(report.dataset_numbers(study, "dolly"))
    fedit = doc["fedit"]
    assert fedit["seeds"] == [0, 1]
    assert fedit["loss"]["differences"] == pytest.approx([1.6 - 1.85, 1.8 - 1.95])
    # t = -0.2 / (0.0707 / sqrt 2) = -4 on 1 degree of freedom (Cauchy): p = 1 - 2 atan(4) / pi
    assert fedit["loss"]["p"] == pytest.approx(1 - 2 * math.atan(4) / math.pi)
    assert fedit["rouge_l"]["p"] is None  # equal Rouge-L in both seeds: no spread, no test
    row = next(line for line in lines if line.startswith("| FedIT"))
    assert "| -0.2000 ± 0.0707 | 0.156 |" in row and row.endswith("| 2 |")
    pro = next(line for line in lines if line.startswith("| FedKSeed-Pro"))
    assert "| 0.1400 | – |" in pro and "±" not in pro  # one shared seed: a difference, no spread, no p


def test_cost_to_target_is_the_first_round_at_half_of_fedits_improvement(study):
    lines, doc = report.cost_to_target(study, "dolly", report.dataset_numbers(study, "dolly"))
    assert doc["target_loss"] == pytest.approx(1.9)  # base 2.1, FedIT's final 1.7 on average
    assert doc["methods"]["fedit"]["round"] == 1
    assert doc["methods"]["fedkseed"] == {"round": 2, "bytes": 2000.0, "forward_equivalents": 80.0,
                                          "final_loss": pytest.approx(1.9), "ended_above_target": False}
    assert doc["methods"]["fedkseed_pro"] is None
    assert any("FedKSeed-Pro" in line and "not reached" in line for line in lines)


def test_a_run_that_passes_the_target_and_diverges_is_named_as_having_left_it(study):
    write_run(study / "dolly" / "fedkseed_lora-lr3e-4-s0", [2.0, 1.8, 5.0], [2.1, 2.0, 2.0], 400, 100, 20)
    lines, doc = report.cost_to_target(study, "dolly", report.dataset_numbers(study, "dolly"))
    assert doc["methods"]["fedkseed_lora"]["round"] == 1 and doc["methods"]["fedkseed_lora"]["ended_above_target"]
    line = next(line for line in lines if "FedKSeed + LoRA" in line)
    assert line.endswith("round 1, 1 KB, 40 forward-equivalents; left it afterwards, final mean loss 5.0000")
    assert not any("left it" in line for line in lines if "FedKSeed:" in line)


def test_a_run_without_round_0_takes_the_base_of_its_seed_from_another_run(study):
    pro = report.dataset_numbers(study, "dolly")["fedkseed_pro"][0]
    assert pro["base_loss"] == 2.0  # seed 0's base (the 9.9 was never written)
    assert report.trajectory(study / "dolly" / "fedkseed_pro-lr1e-6-s0")["loss"].tolist() == [2.0, 2.0, 1.99]


def test_runs_outside_the_sweep_measure_no_validation_loss_and_still_make_their_table(study):
    """Natural Instructions and Dolly's later seeds run with --val_examples 0: their rows carry no val_loss."""
    write_run(study / "instruct" / "fedkseed-lr1e-6-s0", [6.6, 4.0, 2.4], None, 400, 100, 20)
    text = report.report(study, None, None)
    assert "## Natural Instructions" in text
    numbers = report.dataset_numbers(study, "instruct")["fedkseed"][0]
    assert numbers["loss"] - numbers["base_loss"] == pytest.approx(-4.2) and numbers["val_loss"] is None


def test_the_rerun_record_takes_round_0_from_the_run_that_evaluated_the_base(tmp_path):
    """The chosen FedKSeed run (1e-5) did not evaluate the base model (the sweep's 3e-6 did): the recorded losses
    the slow rerun test compares with still hold round 0, from the 3e-6 run."""
    dolly = tmp_path / "dolly"
    write_run(dolly / "fedkseed-lr3e-6-s0", [2.0, 1.95, 1.9], [2.1, 2.05, 2.0], 400, 100, 20)
    write_run(dolly / "fedkseed-lr1e-5-s0", [2.0, 1.9, 1.8], [2.1, 2.0, 1.9], 400, 100, 20, base=False)
    write_run(tmp_path / "rerun-1thread", [2.0, 1.9, 1.8], [2.1, 2.0, 1.9], 400, 100, 20)
    record = report.rerun_record(tmp_path)
    assert record["lr"] == "1e-5"
    assert record["recorded"] == {"0": 2.0, "1": 1.9, "2": 1.8} == record["rerun_1thread"]


def test_the_report_draws_three_curves_per_dataset_into_a_folder_it_makes(study, tmp_path):
    plots = tmp_path / "docs" / "plots"
    text = report.report(study, tmp_path / "results.json", plots)
    drawn = sorted(p.name for p in plots.glob("*.png"))
    assert drawn == [f"quality_cost_dolly_{x}.png" for x in ("bytes", "fe", "round")]
    assert all(f"![{Path(name).stem}]({name})" in text for name in drawn)
    assert json.loads((tmp_path / "results.json").read_text())["dolly"]["cost_to_target"]["target_loss"] == \
        pytest.approx(1.9)


def test_a_diverged_run_leaves_the_plot_named_instead_of_flattening_the_others(study, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    write_run(study / "dolly" / "fedkseed_lora-lr3e-4-s0", [2.0, 1.9, 21.0], [2.1, 2.0, 2.5], 400, 100, 20)
    plt.close("all")  # figures other tests left open
    monkeypatch.setattr(plt, "close", lambda fig: None)  # keep the figures to look at their axes
    report.plot(study, "dolly", report.dataset_numbers(study, "dolly"), tmp_path / "plots")
    assert len(plt.get_fignums()) == 3
    for number in plt.get_fignums():
        ax = plt.figure(number).axes[0]
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert 2.2 <= ax.get_ylim()[1] < 21.0
        diverged = [label for label in labels if "diverged" in label]
        assert diverged == ["FedKSeed + LoRA (lr 3e-4) – diverged, leaves the plot"]
    monkeypatch.undo()
    plt.close("all")


def test_a_dry_run_lists_the_rest_of_the_study_and_trains_nothing(tmp_path):
    """DRY=1 after the sweep's middle lrs: its highest lrs, one lr further up for FedKSeed (its highest lr won),
    the rerun, then seed by seed Natural Instructions and Dolly (seeds 1-2) at the chosen lrs, the sweep's lowest
    lrs last;
    nothing runs (a real run would fail: QC_DATA points nowhere)."""
    grids = {"fedkseed": ["3e-6", "1e-5"], "fedkseed_pro": ["3e-6"], "fedkseed_lora": ["3e-4"], "fedit": ["1e-4"],
             "fedavg": ["3e-6"], "ferret": ["1e-4"]}
    for method, lrs in grids.items():
        for i, lr in enumerate(lrs):  # FedKSeed's 1e-5 has the lower validation loss
            run = tmp_path / "study" / "dolly" / f"{method}-lr{lr}-s0"
            write_run(run, [2.0, 1.9], [2.1, 2.0 - 0.1 * i], 400, 100, 20)
    env = {**os.environ, "DRY": "1", "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{tmp_path / 'study'}/rerun-1thread fedkseed 1e-5 0" in out
    assert "dolly/fedkseed-lr1e-5-s2 fedkseed 1e-5 2 --eval_base --val_examples 0" in out  # the seed's base
    assert "instruct/fedavg-lr3e-6-s1 fedavg 3e-6 1 --no_eval_base --val_examples 0" in out
    lines = [line.split()[0].removeprefix(f"{tmp_path / 'study'}/") for line in out.splitlines() if line.strip()]
    assert lines.index("dolly/fedkseed-lr3e-5-s0") < lines.index("dolly/fedkseed_pro-lr1e-5-s0")  # climbs at once
    assert lines.index("dolly/fedavg-lr1e-5-s0") < lines.index("rerun-1thread")
    seeds = [line for line in lines if "/fedit-lr1e-4-" in line]  # the chosen lr, seed by seed, NI first
    assert seeds == ["instruct/fedit-lr1e-4-s0", "instruct/fedit-lr1e-4-s1", "dolly/fedit-lr1e-4-s1",
                     "instruct/fedit-lr1e-4-s2", "dolly/fedit-lr1e-4-s2",
                     "long/dolly/fedit-lr1e-4-s0", "long/instruct/fedit-lr1e-4-s0"]  # the longer horizon after them
    assert "long/dolly/fedkseed-lr1e-5-s0 fedkseed 1e-5 0 --eval_base --val_examples 0" in out  # stands alone
    assert not any(line.startswith("long/") and "fedkseed_" in line for line in lines)  # FedKSeed, FedIT, Ferret
    long_runs = [line.split("/")[1] + " " + line.split("/")[2].split("-lr")[0] for line in lines
                 if line.startswith("long/")]  # the question first: FedKSeed on both, then Ferret, FedIT
    assert long_runs == ["dolly fedkseed", "instruct fedkseed", "dolly ferret", "instruct ferret",
                         "dolly fedit", "instruct fedit"]
    assert not {"dolly/fedkseed_pro-lr3e-5-s0", "dolly/fedkseed_lora-lr3e-3-s0", "dolly/fedit-lr1e-3-s0",
                "dolly/fedavg-lr3e-5-s0"} & set(lines)  # their highest lrs did not win
    assert lines.index("dolly/fedkseed-lr1e-6-s0") > max(
        i for i, line in enumerate(lines) if line.startswith("instruct/"))  # the lowest lrs ended behind: they run last
    assert not (tmp_path / "study" / "rerun-1thread").exists()


def test_the_lowest_lrs_run_only_where_the_sweep_has_fewer_than_3_lrs_or_the_lowest_won(tmp_path):
    """PART=sweep_low: FedKSeed climbed (3e-6, 1e-5, 3e-5; 1e-5 won), so its 1e-6 is left out; Pro has 3 lrs and the
    lowest won, so its 1e-6 runs; FedKSeed + LoRA has 2 lrs, so its 1e-4 runs."""
    sweeps = {"fedkseed": ["3e-6", "1e-5", "3e-5"], "fedkseed_pro": ["3e-6", "1e-5", "3e-5"],
              "fedkseed_lora": ["3e-4", "1e-3"], "fedit": ["1e-4"], "fedavg": ["3e-6"], "ferret": ["1e-4"]}
    for method, lrs in sweeps.items():
        for lr in lrs:
            val = {"1e-5": 1.8}.get(lr, 2.0) if method == "fedkseed" else {"3e-6": 1.8}.get(lr, 2.0)
            write_run(tmp_path / "study" / "dolly" / f"{method}-lr{lr}-s0", [2.0, 1.9], [2.1, val], 400, 100, 20)
    env = {**os.environ, "DRY": "1", "PART": "sweep_low", "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 0, done.stderr
    listed = {Path(line.split()[0]).name for line in done.stdout.splitlines() if line.strip()}
    assert listed == {"fedkseed_pro-lr1e-6-s0", "fedkseed_lora-lr1e-4-s0", "fedit-lr3e-5-s0", "fedavg-lr1e-6-s0",
                      "ferret-lr3e-5-s0"}


def settled_sweep(study: Path, top_wins: tuple[str, ...] = ()) -> None:
    """Each method's seed-0 Dolly runs at its grid's middle and highest lrs; the middle one has the lower validation
    loss (the sweep is settled) except for the methods in top_wins, whose climb is still to run."""
    grids = {"fedkseed": ("3e-6", "1e-5"), "fedkseed_pro": ("3e-6", "1e-5"), "fedkseed_lora": ("3e-4", "1e-3"),
             "fedit": ("1e-4", "3e-4"), "fedavg": ("3e-6", "1e-5"), "ferret": ("1e-4", "3e-4")}
    for method, (middle, top) in grids.items():
        val = 1.9 if method in top_wins else 2.1
        write_run(study / "dolly" / f"{method}-lr{middle}-s0", [2.0, 1.9], [2.1, 2.0], 400, 100, 20)
        write_run(study / "dolly" / f"{method}-lr{top}-s0", [2.0, 1.9], [2.1, val], 400, 100, 20)


def test_a_method_whose_sweep_has_an_lr_to_run_waits_for_it(tmp_path):
    """PART=instruct beside a sweep still to finish: FedAvg's highest lr won, so its climb (3e-5) is pending and its
    Natural Instructions runs wait (they would run at an lr the climb may replace); the others are listed, FedKSeed
    at the second step of its climb, where the climb stops; Pro, whose first climb step won, waits for its second."""
    settled_sweep(tmp_path / "study", top_wins=("fedavg", "fedkseed", "fedkseed_pro"))
    for lr, val in (("3e-5", 1.8), ("1e-4", 1.7)):  # FedKSeed climbed twice, winning each time: the climb's end
        write_run(tmp_path / "study" / "dolly" / f"fedkseed-lr{lr}-s0", [2.0, 1.9], [2.1, val], 400, 100, 20)
    # Pro climbed once and won: its second step (1e-4) is still to run
    write_run(tmp_path / "study" / "dolly" / "fedkseed_pro-lr3e-5-s0", [2.0, 1.9], [2.1, 1.8], 400, 100, 20)
    env = {**os.environ, "DRY": "1", "PART": "instruct", "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 0, done.stderr
    listed = {Path(line.split()[0]).name for line in done.stdout.splitlines() if line.startswith(str(tmp_path))}
    assert {"fedkseed-lr1e-4-s0", "fedit-lr1e-4-s2", "fedkseed_lora-lr3e-4-s1"} <= listed
    assert not any(name.startswith(("fedavg", "fedkseed_pro")) for name in listed)
    for method in ("fedavg", "fedkseed_pro"):
        assert f"waits for its lr sweep: {tmp_path / 'study'}/instruct/{method}-s0" in done.stdout
    sweep = run_study(tmp_path / "study", {**env, "PART": "sweep"})
    assert {Path(line.split()[0]).name for line in sweep.stdout.splitlines() if line.strip()} == {
        "fedavg-lr3e-5-s0", "fedkseed_pro-lr1e-4-s0"}  # what they wait for


def test_a_method_without_a_finished_sweep_run_waits_and_the_others_go_on(tmp_path):
    """A method added to a study whose other methods have run (Ferret): it has no lr to choose yet, so its seeds
    and its long runs wait, the other methods' runs are listed, and PART=sweep lists its sweep."""
    settled_sweep(tmp_path / "study")
    for run in (tmp_path / "study" / "dolly").glob("ferret-*"):
        shutil.rmtree(run)
    env = {**os.environ, "DRY": "1", "PART": "long", "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 0, done.stderr
    assert f"waits for its lr sweep: {tmp_path / 'study'}/long/instruct/ferret-s0" in done.stdout
    listed = {line.split()[0].removeprefix(f"{tmp_path / 'study'}/") for line in done.stdout.splitlines()
              if line.startswith(str(tmp_path))}
    assert listed == {"long/dolly/fedkseed-lr3e-6-s0", "long/dolly/fedit-lr1e-4-s0",
                      "long/instruct/fedkseed-lr3e-6-s0", "long/instruct/fedit-lr1e-4-s0"}
    sweep = run_study(tmp_path / "study", {**env, "PART": "sweep"})
    assert {Path(line.split()[0]).name for line in sweep.stdout.splitlines() if line.strip()} == {
        "ferret-lr1e-4-s0", "ferret-lr3e-4-s0"}


def test_a_long_run_continues_its_10_round_run_while_that_runs_checkpoint_is_on_disk(tmp_path):
    """A long run not started yet continues the 10-round run of its method, lr and seed when that run finished and
    kept its checkpoint (10 rounds fewer); without the checkpoint, or once the long run has begun, it stands alone."""
    study = tmp_path / "study"
    settled_sweep(study)
    (study / "dolly" / "ferret-lr1e-4-s0" / "checkpoint.json").write_text("")
    (study / "dolly" / "fedit-lr1e-4-s0" / "checkpoint.json").write_text("")
    (study / "long" / "dolly" / "fedit-lr1e-4-s0").mkdir(parents=True)  # begun: its own checkpoint resumes it
    env = {**os.environ, "DRY": "1", "PART": "long", "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(study, env)
    assert done.returncode == 0, done.stderr
    continued = {line.split()[0].removeprefix(f"{study}/"): line.split(" continues ")[1]
                 for line in done.stdout.splitlines() if " continues " in line}
    assert continued == {"long/dolly/ferret-lr1e-4-s0": f"{study}/dolly/ferret-lr1e-4-s0"}


@pytest.mark.parametrize("deadline, fedavg_runs", [("now + 1 hour", False), ("now + 2 hours", True)])
def test_fedavg_is_deferred_when_its_longest_run_would_end_after_the_deadline(tmp_path, deadline, fedavg_runs):
    """DEADLINE: FedAvg's longest recorded run took 5000 s; its seeds 1-2 are listed only when that fits before
    the deadline, and the zeroth-order runs are listed either way (their checkpoints are committed)."""
    settled_sweep(tmp_path / "study")
    (tmp_path / "study" / "wall_time.txt").write_text(
        f"{tmp_path / 'study'}/dolly/fedkseed-lr3e-6-s0: 9000 s\n{tmp_path / 'study'}/dolly/fedavg-lr3e-6-s0: 5000 s\n")
    env = {**os.environ, "DRY": "1", "PART": "dolly", "DEADLINE": deadline, "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 0, done.stderr
    listed = [Path(line.split()[0]).name for line in done.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert ("fedavg-lr3e-6-s1" in listed) == fedavg_runs
    assert ("deferred past DEADLINE: " in done.stdout) != fedavg_runs
    assert {"fedkseed-lr3e-6-s1", "fedkseed_lora-lr3e-4-s2", "fedit-lr1e-4-s2"} <= set(listed)


def test_a_deadline_that_is_not_a_time_stops_the_study_with_one_line(tmp_path):
    env = {**os.environ, "DRY": "1", "DEADLINE": "teatime tomorrow-ish", "QC_DATA": str(tmp_path / "nowhere")}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: DEADLINE=teatime tomorrow-ish is not a time"]


def test_jobs_2_keeps_two_runs_going_at_once_each_in_one_torch_thread(tmp_path):
    """JOBS=2 over Dolly seeds 1-2: every run is made, at most 2 are on at a time, 2 overlap, and each runs with
    OMP_NUM_THREADS=1. main.py is stood in for by a `python` first on PATH that logs and sleeps."""
    settled_sweep(tmp_path / "study")
    shim, log = tmp_path / "bin", tmp_path / "calls.log"
    shim.mkdir()
    (shim / "python").write_text(f"""#!/usr/bin/env bash
if [ "$1" != main.py ]; then exec {sys.executable} "$@"; fi
out=${{@: -1}}
echo "start $out ${{OMP_NUM_THREADS:-unset}}" >> {log}
sleep 0.5; mkdir -p "$out"; echo '{{}}' > "$out/summary.json"
echo "end $out" >> {log}
""")
    (shim / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "PART": "dolly", "JOBS": "2"}
    done = run_study(tmp_path / "study", env)
    assert done.returncode == 0, done.stderr
    events = log.read_text().split("\n")[:-1]
    on, most = 0, 0
    for event in events:
        on += 1 if event.startswith("start") else -1
        most = max(most, on)
    assert most == 2
    assert sorted(e.split()[2] for e in events if e.startswith("start")) == ["1"] * 12  # 6 methods x seeds 1-2
    assert len(list((tmp_path / "study" / "dolly").glob("*-s[12]/summary.json"))) == 12


def test_the_committed_runs_give_the_committed_numbers(tmp_path):
    """docs/quality_cost_results.json, which docs/results.md quotes, is the report on the committed runs to the byte,
    and every row of a docs/results.md table the report also draws (same header) is one of the report's rows."""
    text = report.report(report.RESULTS, tmp_path / "results.json", None)
    assert (tmp_path / "results.json").read_bytes() == (ROOT / "docs" / "quality_cost_results.json").read_bytes()
    drawn = markdown_tables(text)
    quoted = markdown_tables((ROOT / "docs" / "results.md").read_text())
    assert any(header in drawn for header in quoted)
    for header, rows in quoted.items():
        assert header not in drawn or set(rows) <= set(drawn[header]), header


def test_the_template_runs_are_the_studys_runs_but_for_the_template_and_their_rounds():
    """studies/quality_cost/template.sh's runs against the study's runs they are read against (same method, lr and
    seed): every flag the study's run recorded is the same except --prompt_format, --rounds and --eval_base (each
    template run evaluates its own base model; flags added to main.py since are at their defaults)."""
    configs = sorted((report.RESULTS / "template" / "instruct").glob("*/config.json"))
    if not configs:
        pytest.skip(f"no run of {report.RESULTS / 'template' / 'instruct'} is committed")
    for config in configs:
        ours = json.loads(config.read_text())["flags"]
        study = json.loads((report.RESULTS / "instruct" / config.parent.name / "config.json").read_text())["flags"]
        differ = {k for k, v in study.items() if ours[k] != v} - {"output_dir", "resume", "eval_base"}
        assert differ == {"prompt_format", "rounds"} and ours["prompt_format"] == "chat", config.parent.name
        assert ours["eval_base"], config.parent.name


def markdown_tables(text: str) -> dict[str, list[str]]:
    """Each markdown table's rows (separator left out), under its header line; tables sharing a header pool."""
    tables: dict[str, list[str]] = {}
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = line
            tables.setdefault(header, [])
        elif not line.startswith("| ---"):
            tables[header].append(line)
    return tables


def test_the_long_horizon_reports_when_each_run_reaches_seed_0s_target_and_its_answers(study):
    from studies.quality_cost.long import long_report

    long = study / "long" / "dolly"
    # seed 0's target: FedIT (chosen lr 1e-4) from 2.0 to 1.6 in the 10-round study, half-way is 1.8
    write_run(long / "fedkseed-lr1e-6-s0", [2.0, 1.95, 1.85, 1.8, 1.7], None, 400, 100, 20)
    write_run(long / "fedit-lr1e-4-s0", [2.0, 1.7, 1.5], None, 1000, 1000, 30)
    (long / "fedit-lr1e-4-s0" / "summary.json").unlink()  # still running
    # continued from its 10-round run, whose base model another run evaluated: round 0 is that evaluation
    write_run(long / "ferret-lr1e-4-s0", [9.9, 1.9, 1.75], None, 10, 10, 5, base=False)
    rows = [json.loads(line) for line in (long / "fedkseed-lr1e-6-s0" / "metrics.jsonl").read_text().splitlines()]
    rows[2].update(rouge_l=0.1, empty_answers=0.4, first_eos_prob=0.35)
    (long / "fedkseed-lr1e-6-s0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines, doc = long_report(study, "dolly")
    assert doc["target_loss"] == pytest.approx(1.8)
    fedkseed, fedit = doc["runs"]["fedkseed"], doc["runs"]["fedit"]
    assert fedkseed["target_round"] == 3 and fedit["target_round"] == 1
    assert doc["runs"]["ferret"]["loss"] == {0: 2.0, 1: 1.9, 2: 1.75} and doc["runs"]["ferret"]["target_round"] == 2
    assert fedkseed["finished"] and not fedit["finished"] and fedit["rounds"] == 2
    assert fedkseed["answers"][2] == {"rouge_l": 0.1, "empty_answers": 0.4, "first_eos_prob": 0.35}
    row = next(line for line in lines if line.startswith("| FedKSeed | 4 |"))
    assert row.endswith("| 3 | 3 KB |")  # 3 rounds x 2 clients x (400 + 100) B
    assert any(line.startswith("| FedIT (LoRA, AdamW) | 2 (running) |") for line in lines)
    assert report.main(["report", str(study)]) == 0


def test_fedit_and_ferret_stand_beside_fedkseeds_long_run_by_their_10_round_runs_until_their_own_begin(study):
    """Only FedKSeed's long run exists: FedIT's chosen-lr seed-0 run of the 10-round study stands in its row
    (marked so) and in the curves; Ferret, without a sweep, has no row."""
    from studies.quality_cost.long import long_report

    write_run(study / "long" / "dolly" / "fedkseed-lr1e-6-s0", [2.0, 1.95, 1.85, 1.8, 1.7], None, 400, 100, 20)
    write_run(study / "dolly" / "fedit-lr1e-3-s0", [2.0, 1.9, 1.9], None, 1000, 1000, 30)  # not the chosen lr
    lines, doc = long_report(study, "dolly", study / "plots")
    assert set(doc["runs"]) == {"fedkseed", "fedit"}
    fedit = doc["runs"]["fedit"]
    assert not fedit["long"] and doc["runs"]["fedkseed"]["long"]
    assert fedit["loss"] == {0: 2.0, 1: 1.8, 2: 1.6} and fedit["target_round"] == 1  # fedit-lr1e-4-s0, not 3e-4
    assert any(line.startswith("| FedIT (LoRA, AdamW) | 2 (its 10-round run) |") for line in lines)
    assert (study / "plots" / "quality_cost_long_dolly_round.png").exists()
