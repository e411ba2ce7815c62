"""The quality-against-cost study (docs/results.md): settings in common.sh, runner run.sh, numbers report.py, curves
plots.py, answers answers.py; its committed runs in results/."""
