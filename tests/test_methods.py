"""The weight-shipping baselines behind the method seam: FedIT (LoRA + FedAvg) and full-parameter FedAvg, on the
tiny model; their bytes, compute and flag checks."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import config
import main
import modeling
from checkpoint import load_checkpoint
from client import Client
from conftest import dolly_records, main_py, run_and_kill, tiny_flags
from evaluations import eval_loss
from methods.first_order import FirstOrder, fedavg, read_tensors
from run_records import MEASURED, read_metrics
from utils_data.llm_dataset import LLMDataset


def parse(*argv: str):
    return config.validate(config.build_parser().parse_args([*argv, "--output_dir", "/tmp/unused", "--quiet"]))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return modeling.load_model(str(tiny_model_dir)), modeling.load_tokenizer(str(tiny_model_dir))


def make_client(tok, client_id: int = 0, n: int = 6) -> Client:
    return Client(client_id, LLMDataset(dolly_records(1)[:n], tok, "dolly", 128), tok.pad_token_id, run_seed=0)


def test_fedit_local_training_lowers_the_clients_training_loss(tiny):
    model, tok = tiny
    client = make_client(tok)
    method = FirstOrder(parse("--method", "fedit", "--lr", "1e-2", "--local_step", "30", "--lora_dropout", "0"),
                        copy.deepcopy(model), [client])
    before = eval_loss(method.global_model(), client.dataset, pad_id=tok.pad_token_id)
    report = method.train_client(client, round_idx=1)
    method.finish_round(1, [report])
    after = eval_loss(method.global_model(), client.dataset, pad_id=tok.pad_token_id)
    assert after < before - 0.1
    base = dict(model.named_parameters())
    for name, p in method.global_model().named_parameters():  # only the adapters moved
        if "lora_" not in name:
            assert torch.equal(p, base[name.replace("base_model.model.", "").replace(".base_layer", "")])


def test_fedavg_of_identical_clients_equals_one_clients_training(tiny):
    model, tok = tiny
    args = parse("--method", "fedit", "--lr", "1e-2", "--local_step", "5", "--lora_dropout", "0", "-m", "1")
    torch.manual_seed(0)
    one = FirstOrder(args, copy.deepcopy(model), [make_client(tok)])
    torch.manual_seed(0)
    two = FirstOrder(args, copy.deepcopy(model), [make_client(tok), make_client(tok)])
    one.finish_round(1, [one.train_client(make_client(tok), 1)])
    two.finish_round(1, [two.train_client(make_client(tok), 1), two.train_client(make_client(tok), 1)])
    a, b = read_tensors(one.global_model()), read_tensors(two.global_model())
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], read_tensors(FirstOrder(args, copy.deepcopy(model), [])
                                                         .global_model())[k]) for k in a)


def test_fedavg_weights_clients_by_data_size():
    uploads = [{"w": np.array([1.0, 2.0], dtype=np.float32)}, {"w": np.array([3.0, 6.0], dtype=np.float32)}]
    np.testing.assert_array_equal(fedavg(uploads, np.array([0.25, 0.75]))["w"], [2.5, 5.0])


def test_fedit_bytes_are_the_adapter_arrays(tiny):
    model, tok = tiny
    method = FirstOrder(parse("--method", "fedit", "--local_step", "2"), copy.deepcopy(model), [make_client(tok)])
    report = method.train_client(make_client(tok), 1)
    # tiny model: 2 layers, hidden 32, 2 KV heads of 8; r 8 on q_proj (32 -> 32) and v_proj (32 -> 16)
    per_layer = (8 * 32 + 32 * 8) + (8 * 32 + 16 * 8)
    assert report.bytes_down == 2 * per_layer * 4 == sum(a.nbytes for a in report.upload.values())
    assert report.bytes_up == report.bytes_down + 8
    assert report.forward_equivalents == 3 * 2


def test_fedavg_ships_every_weight(tiny):
    model, tok = tiny
    method = FirstOrder(parse("--method", "fedavg", "--local_step", "1"), copy.deepcopy(model), [make_client(tok)])
    report = method.train_client(make_client(tok), 1)
    assert report.bytes_down == 4 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("argv", "phrase"), [
    (["--lora_r", "4"], "--lora_r: LoRA flags need --method fedit"),
    (["--method", "fedavg", "--lora_target_modules", "q_proj"], "LoRA flags need --method fedit"),
    (["--method", "fedit", "--bias_sampling"], "--bias_sampling: FedKSeed-Pro's seed sampling"),
    (["--method", "fedit", "--engine", "flower", "--flower_catchup", "summed"], "--flower_catchup summed: a catch-up"),
    (["--method", "fedit", "--lora_r", "0"], "--lora_r 0: must be at least 1"),
])
def test_bad_method_flag_combinations_are_one_line_exit_2(argv, phrase, capsys):
    assert main.main(["--dataset", "dolly", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and phrase in err and err.count("\n") == 1


def run_flags(model_dir, data_file, out, *extra):
    """Both clients every round, 2 rounds of 3 steps, evaluation on 3 records; K and zo_eps at their defaults."""
    return tiny_flags(model_dir, data_file, out, *extra, K=None, rounds=2, local_step=3, clients=2, m=1,
                      eval_examples=3, eval_metric=None, max_new_tokens=2, lr="1e-2", zo_eps=None, no_compile=False)


def test_a_target_module_the_model_lacks_is_one_line(tiny_model_dir, dolly_file, tmp_path, capsys):
    argv = run_flags(tiny_model_dir, dolly_file, tmp_path / "r", "--method", "fedit", "--lora_target_modules",
                     "q_proj,query_key_value")
    assert main.main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the data's log lines
    assert last == "error: --lora_target_modules: the model has no module named query_key_value"


@pytest.mark.parametrize("method", ["fedit", "fedavg", "fedkseed"])
def test_every_method_reports_the_same_cost_metrics(tiny_model_dir, dolly_file, tmp_path, method):
    out = tmp_path / method
    assert main.main(run_flags(tiny_model_dir, dolly_file, out, "--method", method)) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    steps = 3
    for row in rows[1:]:
        assert row["forward_equivalents_per_client"] == (2 if method == "fedkseed" else 3) * steps
        assert row["bytes_up_per_client"] > 0 and row["bytes_down_per_client"] >= 0
        assert row["client_seconds"] > 0 and row["peak_memory_bytes"] > 0
    assert rows[2]["eval_loss"] != rows[0]["eval_loss"]


def test_fedit_killed_and_resumed_ends_as_an_uninterrupted_run(tiny_model_dir, dolly_file, tmp_path):
    def argv(out):
        return [*run_flags(tiny_model_dir, dolly_file, out, "--method", "fedit", "--eval_metric", "loss"),
                "--rounds", "6", "--local_step", "20"]

    whole = main_py(*argv(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed_at = run_and_kill(argv(tmp_path / "killed"), tmp_path / "killed", at_round=2)
    assert killed_at < 6
    resumed = main_py("--resume", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "killed")
    assert a.round == b.round == 6 and a.tensors.keys() == b.tensors.keys()
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    rows = [read_metrics(tmp_path / d / "metrics.jsonl") for d in ("whole", "killed")]
    assert [{k: v for k, v in r.items() if k not in MEASURED} for r in rows[0]] == \
        [{k: v for k, v in r.items() if k not in MEASURED} for r in rows[1]]


def test_fedit_export_is_the_merged_global_model(tiny_model_dir, dolly_file, tmp_path):
    from transformers import AutoModelForCausalLM

    result = main.train(run_flags(tiny_model_dir, dolly_file, tmp_path / "run", "--method", "fedit"))
    assert main.main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert not any("lora" in name for name, _ in exported.named_parameters())
    tokens = torch.tensor([[5, 9, 17, 23, 42, 7, 3]])
    with torch.no_grad():
        trained = result["method"].global_model()(tokens).logits
        torch.testing.assert_close(exported(tokens).logits, trained, atol=1e-5, rtol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(tokens).logits
        assert (base - trained).abs().max() > 1e-3


def test_fedkseed_on_lora_moves_only_the_adapters_and_replays_bit_identically(tiny_model_dir, dolly_file, tmp_path):
    from methods.first_order import with_lora
    from optimizers.seed_pool import SeededModel

    out = tmp_path / "lora"
    argv = run_flags(tiny_model_dir, dolly_file, out, "--peft", "lora", "--lr", "1e-2", "--zo_eps", "1e-2", "-K", "16")
    result = main.train(argv)
    model = result["method"].server.seeded.model
    base = dict(modeling.load_model(str(tiny_model_dir)).named_parameters())
    adapters = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            adapters += 1
            if "lora_B" in name:  # starts at zero
                assert p.abs().sum() > 0
        else:
            assert torch.equal(p, base[name.replace("base_model.model.", "").replace(".base_layer", "")])
    assert adapters == 2 * 2 * 2  # A and B on q_proj and v_proj in 2 layers
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[1]["bytes_up_per_client"] == 8 * 3 + 8  # still (seed index, g) pairs
    # a client that replays the rounds' Delta c onto base + initial adapters holds the server's adapters exactly
    args = parse(*argv)
    state = load_checkpoint(out)
    replayed = SeededModel(with_lora(modeling.load_model(str(tiny_model_dir)), args), state.seed_pool, args.method.lr)
    replayed.replay_rounds(state.deltas)
    for (_, p), (_, q) in zip(model.named_parameters(), replayed.model.named_parameters(), strict=True):
        assert torch.equal(p, q)


def test_fedkseed_on_lora_perturbs_a_model_without_dropout(tiny_model_dir, dolly_file, tmp_path):
    # peft creates its adapters' dropout in training mode: on, the two losses of a step would see different masks
    result = main.train(run_flags(tiny_model_dir, dolly_file, tmp_path / "lora", "--peft", "lora", "-K", "16"))
    model = result["method"].server.seeded.model
    tokens = torch.tensor([[5, 9, 17, 23, 42, 7, 3, 11, 29, 31] * 4])
    with torch.no_grad():
        losses = [model(input_ids=tokens, labels=tokens).loss.item() for _ in range(4)]
    assert len(set(losses)) == 1, losses


def test_peft_lora_with_fedavg_is_refused(capsys):
    assert main.main(["--dataset", "dolly", "--method", "fedavg", "--peft", "lora"]) == 2
    assert capsys.readouterr().err.startswith("error: --peft lora: fedavg trains every weight")


def test_a_crash_between_the_tensors_and_the_checkpoint_leaves_the_previous_checkpoint_whole(tmp_path):
    from checkpoint import CHECKPOINT_FILE, TensorState, save_checkpoint

    def state(round_idx, value):
        return TensorState(round=round_idx, fingerprint="f", flags={}, server_rng={},
                           tensors={"w": np.full(3, value, dtype=np.float32)})

    save_checkpoint(tmp_path / CHECKPOINT_FILE, state(1, 1.0))
    # the next save dies after writing its tensors, before checkpoint.json: simulated by saving elsewhere and
    # copying only the tensors file in
    other = tmp_path / "other"
    other.mkdir()
    save_checkpoint(other / CHECKPOINT_FILE, state(2, 2.0))
    for f in other.glob("tensors*.npz"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    loaded = load_checkpoint(tmp_path)
    assert loaded.round == 1 and np.array_equal(loaded.tensors["w"], [1.0, 1.0, 1.0])
    save_checkpoint(tmp_path / CHECKPOINT_FILE, state(2, 2.0))
    assert [f.name for f in tmp_path.glob("tensors*.npz")] == ["tensors-2.npz"]  # older files go
