"""FedKSeed / FedKSeed-Pro as a Flower app (Message API): the project's server.Server and client.Client run inside
a ServerApp and a ClientApp that exchange only seed indices, scalar gradients and sparse Delta c.

    messages.py    the wire records: encoding, decoding, validation of replies, measured sizes
    node.py        what a SuperNode keeps and does: its synced state, catch-up, local training
    node_store.py  the node's synced weights on disk, so a fresh ClientApp process need not replay from round 0
    faults.py      fault injection for tests: hostile replies
    client_app.py  the ClientApp (query: who am I; train: catch up, train, reply)
    server_app.py  the ServerApp: sampling, aggregation, c, Pro probabilities, evaluation, metrics
    collect.py     a round's messages: one per node at a time, replies checked, lost clients, the deadline
    traffic.py     bytes per client per round in metrics.jsonl and summary.json
    engine.py      main.py --engine flower: the same run in Flower's simulation engine
    stage.py       writes an app folder and run file for `flwr run`
    deploy.py      SuperLink + SuperNodes on 127.0.0.1, insecure or secure (scripts/flower_deploy_local.sh)
    secure.py      a CA, the SuperLink's certificate and SuperNode key pairs for secure mode
"""
