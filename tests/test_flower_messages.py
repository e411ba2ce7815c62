"""Flower wire records without a Flower run: round trips, measured serialized sizes against the issue's bounds,
and one rejection test per kind of hostile reply (decode + server.validate_update, as the ServerApp does)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Message, Metadata  # noqa: E402

from client import ClientUpdate, LocalTraining  # noqa: E402
from flower_app import fedkseed_messages, wire  # noqa: E402
from flower_app.faults import FAULTS, apply_fault  # noqa: E402

K = 1024
STEPS = 200
UP_BOUND = 2048  # the issue: upload at 200 local steps at most ~2 KB
DOWN_BOUND = 8192  # the issue: download with K = 1024 at most ~8 KB ...
FRAMING = 512  # ... plus Flower's framing: message metadata (~230 B) and a 64-byte id per object (3 objects)
CONFIG = 512  # the instruction's round config (keys and scalars, ~300 B) beside the Delta c arrays


def as_message(content, reply: bool = False) -> Message:
    """A Message as the Grid / ClientApp would build it (ids of realistic length), without a running Flower."""
    big = 2**63 - 25
    metadata = Metadata(run_id=big, message_id="", src_node_id=big - 1, dst_node_id=big - 2,
                        reply_to_message_id="f" * 64 if reply else "", group_id="12", created_at=time.time(),
                        ttl=43200.0, message_type=wire.TRAIN, src_task_id=big - 3, dst_task_id=big - 4)
    return Message(metadata=metadata, content=content)


def honest_update(steps: int = STEPS, round_idx: int = 3, seed: int = 0) -> ClientUpdate:
    rng = np.random.default_rng(seed)
    return ClientUpdate(client_id=7, round=round_idx, seed_indices=rng.integers(0, K, steps),
                        grads=rng.normal(0, 50, steps).astype(np.float32).astype(np.float64), num_samples=12,
                        mean_loss=2.5, skipped={"nan": 0, "clip": 0})


def round_delta(clients: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A round's sparse Delta c as the server records it: the distinct seeds `clients` x `steps` draws touched."""
    rng = np.random.default_rng(seed)
    idx = np.unique(rng.integers(0, K, clients * steps))
    return idx.astype(np.int32), rng.normal(0, 1, len(idx))


def instruction(groups, catchup="exact", probabilities=None, base=0) -> fedkseed_messages.Instruction:
    return fedkseed_messages.Instruction(round=base + len(groups) + 1, client=3, catchup=catchup, base=base,
                                local=LocalTraining(lr=3e-7, eps=5e-4, local_step=STEPS, grad_clip=-100.0),
                                groups=groups, c_digest=b"\x01" * 8, pro=probabilities is not None,
                                p_round=base + len(groups) + 1, probabilities=probabilities)


# --- sizes --------------------------------------------------------------------------------------------------------


def test_upload_at_200_local_steps_is_at_most_2_kb():
    sizes = wire.measure(as_message(fedkseed_messages.encode_reply(honest_update(), synced=2, p_round=-1), reply=True))
    assert sizes["payload"] == STEPS * (4 + 4)  # int32 index + float32 g per step
    assert sizes["record"] <= UP_BOUND, sizes
    assert sizes["message"] <= UP_BOUND + FRAMING, sizes


def test_download_with_k_1024_is_at_most_8_kb_plus_framing():
    # a node one round behind, the round with 2 clients x 200 steps (the setting at m * N = 2)
    typical = wire.measure(as_message(fedkseed_messages.encode_instruction(instruction([round_delta(2, STEPS, 1)]), K)))
    assert typical["message"] <= DOWN_BOUND, typical
    # the worst case of one round, or of the summed catch-up after any number of rounds: every one of the K
    # entries changed -> a K-bit bitmap and K float64 values
    everything = (np.arange(K, dtype=np.int32), np.random.default_rng(2).normal(size=K))
    for catchup in ("exact", "summed"):
        worst = wire.measure(as_message(fedkseed_messages.encode_instruction(instruction([everything], catchup), K)))
        assert worst["payload"] == K * 8 + K // 8 + 8  # values + bitmap + the 8-byte c digest
        assert worst["message"] <= DOWN_BOUND + K // 8 + CONFIG + FRAMING, worst


def test_pro_probabilities_add_k_float64_only_when_sent():
    group = [round_delta(2, STEPS, 3)]
    without = wire.measure(as_message(fedkseed_messages.encode_instruction(instruction(group), K)))["payload"]
    p = np.random.default_rng(4).dirichlet(np.ones(K))
    with_p = wire.measure(as_message(fedkseed_messages.encode_instruction(instruction(group, probabilities=p), K)))
    assert with_p["payload"] == without + 8 * K


# --- round trips --------------------------------------------------------------------------------------------------


def test_groups_round_trip_bit_exactly_in_sparse_and_bitmap_form():
    groups = [round_delta(1, 5, 6), round_delta(3, 400, 7), (np.zeros(0, np.int32), np.zeros(0)),
              (np.array([0, K - 1], np.int32), np.array([-0.0, 1e-300]))]
    packed = fedkseed_messages.pack_groups(groups, K)
    assert packed["g_bitmap"] == [False, True, False, False]  # the bitmap wins only when it is smaller
    back = fedkseed_messages.unpack_groups(packed, K)
    for (i0, v0), (i1, v1) in zip(groups, back, strict=True):
        np.testing.assert_array_equal(i0, i1)
        assert v0.tobytes() == v1.tobytes()


def test_instruction_round_trips_including_pro_probabilities():
    p = np.random.default_rng(8).dirichlet(np.ones(K))
    ins = instruction([round_delta(2, 50, 9), round_delta(2, 50, 10)], probabilities=p, base=4)
    back = fedkseed_messages.decode_instruction(fedkseed_messages.encode_instruction(ins, K), K)
    assert (back.round, back.base, back.client) == (7, 4, 3)
    assert back.local == LocalTraining(lr=3e-7, eps=5e-4, local_step=STEPS, grad_clip=-100.0)
    assert back.probabilities.tobytes() == p.tobytes()
    assert len(back.groups) == 2 and back.c_digest == ins.c_digest


def test_reply_round_trips_g_as_float32():
    update = honest_update()
    decoded, reason = fedkseed_messages.check_reply(fedkseed_messages.encode_reply(update, 2, -1), 3, 7, K, STEPS)
    assert reason is None
    np.testing.assert_array_equal(decoded.update.seed_indices, update.seed_indices)
    np.testing.assert_array_equal(decoded.update.grads, update.grads)  # float32-representable: exact
    assert decoded.update.num_samples == 12 and decoded.synced == 2


# --- hostile replies ----------------------------------------------------------------------------------------------

EXPECTED = {  # fault -> a phrase of the rejection reason
    "nan": "non-finite", "inf": "non-finite", "index": "outside [0, 1024)", "lengths": "gradients",
    "zero_samples": "not positive", "negative_samples": "not positive", "round": "round 2, expected 3",
    "oversized": "oversized",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_of_hostile_reply_is_rejected(kind):
    assert kind in FAULTS
    content = fedkseed_messages.encode_reply(honest_update(), 2, -1)
    apply_fault(content[fedkseed_messages.REPLY_RECORD], kind, instruction([round_delta(1, 1, 0)] * 2))
    decoded, reason = fedkseed_messages.check_reply(content, 3, 7, K, STEPS)
    assert reason is not None and EXPECTED[kind] in reason, reason


def test_scaled_gradients_are_well_formed_and_pass_validation():
    content = fedkseed_messages.encode_reply(honest_update(), 2, -1)
    apply_fault(content[fedkseed_messages.REPLY_RECORD], "scale1000", instruction([round_delta(1, 1, 0)] * 2))
    assert fedkseed_messages.check_reply(content, 3, 7, K, STEPS)[1] is None  # poisoning is the aggregation's job


@pytest.mark.parametrize("mutate, phrase", [
    (lambda rec: rec.__setitem__("idx", b"\x00" * 7), "multiples of 4"),
    (lambda rec: rec.__setitem__("n", "12"), "not an integer"),
    (lambda rec: rec.__delitem__("g"), "missing field"),
    (lambda rec: rec.__setitem__("client", 8), "names client 8"),
    (lambda rec: rec.__setitem__("g", b"\x00" * (4 * STEPS + 4)), "oversized"),
])
def test_malformed_replies_are_rejected(mutate, phrase):
    content = fedkseed_messages.encode_reply(honest_update(), 2, -1)
    mutate(content[fedkseed_messages.REPLY_RECORD])
    _, reason = fedkseed_messages.check_reply(content, 3, 7, K, STEPS)
    assert reason is not None and phrase in reason, reason


def test_a_node_reported_error_is_passed_on_as_such():
    error = fedkseed_messages.encode_error_reply("out of sync", 0, -1)
    decoded, reason = fedkseed_messages.check_reply(error, 3, 7, K, STEPS)
    assert reason == f"{wire.NODE_REPORTED}out of sync" and decoded.synced == 0
