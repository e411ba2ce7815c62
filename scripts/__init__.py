"""Tools a user runs on their own data, models and runs (plots, data samples, byte counts, the local Flower
deployment); a package so that tests import them as scripts.<tool>."""
