"""Experiments run with this suite, one folder a study, apart from the product: each holds its settings, its runner,
its report and (where committed) its results. See studies/README.md."""
