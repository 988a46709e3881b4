"""The benchmark of HGB on TFF (`experiments/benchmark.py`, BENCHMARKS.md).

One module per section of the program, plus what the sections share:

  settings     the program's sizes and choices (no TensorFlow: flags first)
  workload     the synthetic clients and the registry's processes it trains
               (the MLP workload, and the media one of conv encoders)
  instruments  timers, side-by-side repeats and medians, RSS, CPU, trace
               counts, perf sampling, what the numbers were measured on
  flop_count   FLOPs per example of the model, the machine's matmul rate
  plain_loop   a hand-written single-process HGB round (the floor), its child
  harness      the settings, workload, TFF contexts and results they share
  memory, ratio, flops, runtimes (+ transfer), media, scaling, workers,
  local_step   the sections
  report       benchmark.json, BENCHMARKS.md and the issue's targets
  driver       runs the chosen sections in order, the report after each

Nothing here changes what a learning process computes. The package imports
nothing on its own: `experiments/benchmark.py` imports `settings` before the
flags are parsed and the rest after TensorFlow's logging is set up.
"""
