"""A run that cannot fit the machine's memory is refused with one line before anything is loaded or written: the
weights' size comes from the safetensors headers, each method says how many weight-sized buffers it holds."""
from __future__ import annotations

import pytest
import torch

import config
import main
import modeling
from conftest import tiny_flags
from flower_app.node_runtime import node_weight_copies
from methods import method_class
from modeling import copy_trainable, load_model, weight_bytes


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weight_bytes_are_read_from_the_headers_in_the_dtype_of_the_run(tiny_model_dir, dtype):
    model = load_model(str(tiny_model_dir), dtype)
    assert weight_bytes(str(tiny_model_dir), dtype) == sum(
        p.numel() * p.element_size() for p in model.state_dict().values())
    assert weight_bytes("smollm2-135m-instruct", dtype) is None  # a GGUF: its size is known once converted


def test_a_run_that_cannot_fit_is_refused_before_anything_is_written(tiny_model_dir, dolly_file, tmp_path, capsys,
                                                                     monkeypatch):
    weights = weight_bytes(str(tiny_model_dir), "float32")
    monkeypatch.setattr(modeling, "physical_memory", lambda: int(1.5 * weights))  # room for one copy, not two
    monkeypatch.setattr(modeling, "load_model", lambda *a, **k: pytest.fail("loaded a model that cannot fit"))
    out = tmp_path / "copy"
    assert main.main(tiny_flags(tiny_model_dir, dolly_file, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --model ") and "--client_sync copy" in err[0]
    assert f"{2 * weights / 2**30:.1f} GiB" in err[0] and not out.exists()
    for method in ("fedavg", "ferret"):
        assert main.main(tiny_flags(tiny_model_dir, dolly_file, tmp_path / method, "--method", method)) == 2
        assert method.replace("fedavg", "FedAvg").replace("ferret", "Ferret") in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(modeling, "physical_memory", lambda: int(1.5 * weights))
    assert main.main(tiny_flags(tiny_model_dir, dolly_file, tmp_path / "replay", "--client_sync", "replay")) == 0


def test_the_buffers_each_method_and_node_holds():
    def args(**flags):
        return config.recorded({"method": "fedkseed", "client_sync": "copy", "flower_catchup": "exact",
                                "dtype": "float32", **flags})

    assert method_class("fedkseed").weight_copies(args())[0] == 2
    assert method_class("fedkseed").weight_copies(args(client_sync="replay"))[0] == 1
    assert method_class("fedkseed").weight_copies(args(peft="lora"))[0] == 1  # the copy shares the frozen base
    assert node_weight_copies(args())[0] == 2 and node_weight_copies(args(flower_catchup="summed"))[0] == 1
    fedavg = args(method="fedavg")
    assert node_weight_copies(fedavg)[0] == method_class("fedavg").weight_copies(fedavg)[0] - 1 == 5
    # measured (bench/scale.py, 1.43B in bfloat16, alone on a 23.5 GiB machine): past 8 buffers and still growing
    assert method_class("fedavg").weight_copies(args(method="fedavg", dtype="bfloat16"))[0] > 8


def test_a_client_copy_of_a_lora_model_shares_the_frozen_base(tiny_model_dir):
    from methods.first_order import with_lora

    lora = config.recorded({"lora_r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "seed": 0})
    model = with_lora(load_model(str(tiny_model_dir)), lora)
    copied = copy_trainable(model)
    pairs = list(zip(model.parameters(), copied.parameters(), strict=True))
    assert {p.requires_grad for p, _ in pairs} == {True, False}
    for p, q in pairs:
        assert (p.data_ptr() == q.data_ptr()) == (not p.requires_grad)  # the base shared, the adapters its own
        assert torch.equal(p, q)
