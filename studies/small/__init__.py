"""The small CPU study (docs/small_study.md): settings in common.sh, runner run.sh, tables report.py."""
