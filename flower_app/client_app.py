"""The ClientApp: a SuperNode's side of every method (node.py: what it does with a message; node_runtime.py:
what the process holds).

    query  -> which clients this node hosts, its base-model fingerprint and seed-pool digest
    train  -> catch up to the global c of round r-1, run the client's local MeZO steps, reply with
              (seed indices int32, scalar gradients float32, sample count)
"""
from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flower_app.node import handle_query, handle_train

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return Message(handle_query(context), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return Message(handle_train(msg.content, context), reply_to=msg)
