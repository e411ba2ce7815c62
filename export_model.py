"""Export a run's model: theta0 - lr * sum_j c_j z_j as a Hugging Face folder that from_pretrained loads."""
from __future__ import annotations

from pathlib import Path

from checkpoint import RunState, TensorState, load_checkpoint, model_fingerprint
from config import recorded
from errors import FedKSeedError
from methods.first_order import with_lora
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import SeededModel
from run_lock import holder


def rebuild_model(run_dir: Path, device: str = "cpu", at_round: int | None = None):
    """The run's global model after at_round rounds (default: its last), rebuilt bit for bit from theta0 and its
    checkpoint (LoRA merged). A seed-based run keeps every round's Delta c, so any earlier round can be rebuilt."""
    state = load_checkpoint(run_dir)
    if at_round is not None and at_round != state.round:
        if not isinstance(state, RunState):
            raise FedKSeedError(f"{run_dir}: a {state.flags.get('method')} run keeps only its last round's weights "
                                f"(round {state.round}); an earlier round is for seed-based runs")
        if not 0 <= at_round <= state.round:
            raise FedKSeedError(f"{run_dir}: round {at_round} is not between 0 and the run's last, {state.round}")
        state = state.at_round(at_round)
    flags = state.flags
    model = load_model(flags["model"], flags["dtype"], device)
    lora = flags.get("peft") == "lora" and isinstance(state, RunState)
    if lora:  # FedKSeed on LoRA: its theta0 is the base plus the initial adapters
        model = with_lora(model, recorded(flags))
    if model_fingerprint(model) != state.fingerprint:
        raise FedKSeedError(f"{run_dir}: the base model {flags['model']} differs from the one the run started from")
    if isinstance(state, TensorState):
        return merged_model(model, state), flags
    if flags.get("method") == "ferret":  # theta0 + sum c_{k,l} z_{k,l}, replayed round by round as the run did
        from methods.ferret import Ferret

        return Ferret(recorded(flags), model, [], state).global_model(), flags
    compile_z = False if flags.get("no_compile") else None  # the path the run used: its floats, bit for bit
    seeded = SeededModel(model, state.seed_pool, flags["lr"], kind=flags["perturbation"], compile=compile_z)
    seeded.replay_rounds(state.deltas)
    return (model.merge_and_unload() if lora else model), flags


def merged_model(model, state: TensorState):
    """A first-order run's model: the trained tensors written in, LoRA adapters merged into the weights."""
    from methods.first_order import trainable_model, write_tensors

    cfg = recorded(state.flags)
    model = trainable_model(model, cfg)
    write_tensors(model, state.tensors)
    return model.merge_and_unload() if cfg.method.method == "fedit" else model


def as_plain_weights(model) -> None:
    """A GGUF base (e.g. the builtin SmolLM2) is dequantised when it is loaded, yet transformers still marks the
    model as GGUF-quantized and refuses to save it. Its weights are plain tensors of the run's dtype, which is
    what the exported folder holds, so the marks go."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config


def export_run(run_dir: Path, out_dir: Path, at_round: int | None = None) -> Path:
    """Write the model after at_round rounds (default: the last) and its tokenizer into out_dir (save_pretrained)."""
    writer = holder(run_dir)  # its checkpoint may be a round behind what it is about to write: wait for the end
    if writer is not None:
        raise FedKSeedError(f"{run_dir}: a run is still writing it (pid {writer['pid']} on {writer.get('host')}); "
                            "export when it has finished")
    model, flags = rebuild_model(run_dir, at_round=at_round)
    as_plain_weights(model)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        load_tokenizer(flags["model"]).save_pretrained(out_dir)
    except (OSError, ValueError) as exc:
        raise FedKSeedError(f"export: cannot write {out_dir} ({exc.__class__.__name__}: {exc})") from None
    return out_dir
