"""Data for FedKSeed: Dolly-15K and Natural Instructions, split over clients and tokenized for a causal LM."""
