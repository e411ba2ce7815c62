"""The methods as a Flower app (Message API): a ServerApp whose round loop is method-agnostic, and a ClientApp on every
SuperNode. FedKSeed / FedKSeed-Pro exchange only seed indices, scalar gradients and sparse Delta c (server.Server and
client.Client run inside); FedIT and FedAvg exchange their tensors as ArrayRecords.

    server_app.py     the ServerApp: rounds.py's round loop with the Grid as its transport (node discovery, messages)
    fedkseed_wire.py  FedKSeed's messages around its method: what each node holds, instructions, reply checks
    array_wire.py     the array-shipping methods' messages (methods.base.ArrayMethod)
    wire.py           what every method's messages share: message types, the set-up query, measured sizes
    fedkseed_messages.py  FedKSeed's wire records: encoding, decoding, validation of replies
    array_messages.py the array methods' wire records (ArrayRecord + round record)
    node.py           what a SuperNode does with a message: the query's reply; a round's catch-up, training, reply
    node_runtime.py   what a SuperNode process holds: base model, data, the copies it trains on and catches up
    run_file.py       the run's resolved flags, read by the ServerApp and every ClientApp
    node_store.py     the node's synced weights on disk, so a fresh ClientApp process need not replay from round 0
    faults.py         fault injection for tests: hostile replies and uploads
    client_app.py     the ClientApp (query: who am I; train: catch up, train, reply)
    collect.py        a round's messages: one per node at a time, replies checked, lost clients, the deadline
    traffic.py        bytes per client per round in metrics.jsonl and summary.json
    engine.py         main.py --engine flower: the same run in Flower's simulation engine
    stage.py          writes an app folder and run file for `flwr run`
    deploy.py         SuperLink + SuperNodes on 127.0.0.1, insecure or secure (scripts/flower_deploy_local.sh)
    secure.py         a CA, the SuperLink's certificate and SuperNode key pairs for secure mode
"""
