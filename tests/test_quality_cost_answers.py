"""studies/quality_cost/answers.py: empty answers counted apart (whitespace counts as empty), the rest scored apart,
rounds in numeric order, and a clear error where there is nothing to read."""
from __future__ import annotations

import json

from studies.quality_cost import answers


def write_generations(run, round_idx: int, rows: list[tuple[str, str, float]]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / f"generations-{round_idx}.jsonl").write_text("".join(
        json.dumps({"record": i, "reference": ref, "prediction": pred, "rouge_l": score}) + "\n"
        for i, (ref, pred, score) in enumerate(rows)))


def test_empty_answers_are_counted_and_the_rest_scored_apart():
    s = answers.answer_stats([{"reference": "yes", "prediction": "", "rouge_l": 0.0},
                              {"reference": "no", "prediction": " \n", "rouge_l": 0.0},
                              {"reference": "entails", "prediction": "entails", "rouge_l": 1.0},
                              {"reference": "abcd", "prediction": "a b", "rouge_l": 0.5}])
    assert (s["records"], s["empty"]) == (4, 2)
    assert s["rouge_l"] == 0.375 and s["rouge_l_non_empty"] == 0.75
    assert s["answer_chars"] == (0 + 2 + 7 + 3) / 4 and s["reference_chars"] == (3 + 2 + 7 + 4) / 4


def test_all_empty_has_no_non_empty_score():
    assert answers.answer_stats([{"reference": "x", "prediction": "", "rouge_l": 0.0}])["rouge_l_non_empty"] is None


def test_table_rows_by_dataset_run_and_numeric_round(tmp_path):
    run = tmp_path / "instruct" / "fedkseed-lr1e-5-s2"
    write_generations(run, 10, [("a", "a", 1.0)])
    write_generations(run, 2, [("a", "", 0.0), ("b", "b", 1.0)])
    write_generations(tmp_path / "dolly" / "fedit-lr1e-3-s1", 5, [("a", "", 0.0)])
    rows = answers.table(tmp_path, ["dolly", "instruct"])[len(answers.HEADER):]
    assert [r.split(" | ")[:5] for r in rows] == [["| dolly", "fedit-lr1e-3-s1", "5", "1", "1"],
                                                 ["| instruct", "fedkseed-lr1e-5-s2", "2", "2", "1"],
                                                 ["| instruct", "fedkseed-lr1e-5-s2", "10", "1", "0"]]
    assert rows[0].split(" | ")[7] == "–" and rows[1].split(" | ")[7] == "1.0000"
    assert {r.split(" | ")[5] for r in rows} == {"–"}  # these runs did not record P(EOS first)


def test_the_probability_of_eos_first_is_averaged_where_every_record_has_it():
    rows = [{"reference": "yes", "prediction": "", "rouge_l": 0.0, "first_eos_prob": 0.9},
            {"reference": "no", "prediction": "no", "rouge_l": 1.0, "first_eos_prob": 0.1}]
    assert answers.answer_stats(rows)["first_eos_prob"] == 0.5
    unrecorded = {"reference": "x", "prediction": "x", "rouge_l": 1.0}
    assert answers.answer_stats([*rows, unrecorded])["first_eos_prob"] is None


def test_no_generations_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "dolly" / "fedkseed-lr1e-5-s0").mkdir(parents=True)
    assert answers.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert answers.main([str(tmp_path / "missing")]) == 2


def test_a_malformed_record_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    run = tmp_path / "dolly" / "fedkseed-lr1e-5-s0"
    write_generations(run, 5, [("a", "a", 1.0)])
    with (run / "generations-5.jsonl").open("a") as f:
        f.write(json.dumps({"record": 1, "reference": "b"}) + "\n")
    assert answers.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "generations-5.jsonl" in err


def test_packed_generations_read_as_the_loose_files_did(tmp_path):
    write_generations(tmp_path / "instruct" / "fedkseed-lr1e-5-s2", 10, [("a", "a", 1.0)])
    write_generations(tmp_path / "instruct" / "fedkseed-lr1e-5-s2", 2, [("a", "", 0.0), ("b", "b", 1.0)])
    write_generations(tmp_path / "dolly" / "fedit-lr1e-3-s1", 5, [("a", "", 0.0)])
    loose = answers.table(tmp_path, ["dolly", "instruct"])
    archive = answers.pack(tmp_path)
    assert archive == tmp_path / "generations.tar.gz" and not list(tmp_path.rglob("generations-*.jsonl"))
    assert answers.table(tmp_path, ["dolly", "instruct"]) == loose
    packed = archive.read_bytes()
    assert answers.pack(tmp_path).read_bytes() == packed  # nothing loose: the same bytes again


def test_a_loose_file_joins_the_packed_ones_and_wins_over_its_packed_round(tmp_path):
    run = tmp_path / "dolly" / "fedit-lr1e-3-s1"
    write_generations(run, 5, [("a", "", 0.0)])
    answers.pack(tmp_path)
    write_generations(run, 5, [("a", "a", 1.0)])  # the round evaluated again
    write_generations(run, 10, [("a", "", 0.0), ("b", "b", 1.0)])
    rows = [r.split(" | ")[2:5] for r in answers.table(tmp_path, ["dolly"])[len(answers.HEADER):]]
    assert rows == [["5", "1", "0"], ["10", "2", "1"]]
    answers.pack(tmp_path)
    assert [r.split(" | ")[2:5] for r in answers.table(tmp_path, ["dolly"])[len(answers.HEADER):]] == rows


def test_a_malformed_packed_record_names_the_archive_member(tmp_path, capsys):
    run = tmp_path / "instruct" / "fedkseed-lr1e-5-s0"
    write_generations(run, 5, [("a", "a", 1.0)])
    with (run / "generations-5.jsonl").open("a") as f:
        f.write(json.dumps({"record": 1, "prediction": "b"}) + "\n")
    answers.pack(tmp_path)
    assert answers.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "generations.tar.gz:instruct/fedkseed-lr1e-5-s0/generations-5.jsonl" in err


def test_the_long_runs_generations_are_read_and_packed_under_their_own_dataset(tmp_path):
    write_generations(tmp_path / "dolly" / "fedkseed-lr1e-5-s0", 10, [("a", "", 0.0)])
    write_generations(tmp_path / "long" / "dolly" / "fedkseed-lr1e-5-s0", 10, [("a", "a", 1.0), ("b", "b", 1.0)])
    short, long = (answers.table(tmp_path, [d])[len(answers.HEADER):] for d in ("dolly", "long/dolly"))
    assert [r.split(" | ")[:5] for r in short] == [["| dolly", "fedkseed-lr1e-5-s0", "10", "1", "1"]]
    assert [r.split(" | ")[:5] for r in long] == [["| long/dolly", "fedkseed-lr1e-5-s0", "10", "2", "0"]]
    answers.pack(tmp_path)
    assert not list(tmp_path.rglob("generations-*.jsonl"))
    assert answers.table(tmp_path, ["long/dolly"])[len(answers.HEADER):] == long
    assert answers.table(tmp_path, ["dolly"])[len(answers.HEADER):] == short
