# run_once OUT FLAGS...: main.py FLAGS --output_dir OUT, unless OUT finished (it has a summary.json); a run that was
# killed (a checkpoint, no summary) continues with --resume. A study driver can therefore be stopped at any point and
# started again. Sourced by the studies' common.sh, from the repository root.
run_once() {
  local out=$1; shift
  if [ -f "$out/summary.json" ]; then return 0; fi
  if [ -f "$out/checkpoint.json" ]; then python main.py --resume "$out"; else python main.py "$@" --output_dir "$out"; fi
}
