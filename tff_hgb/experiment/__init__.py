"""The experiment harness: what the binaries run, beside the core.

It turns a configuration into runs, tunings, comparisons, the paper's tables
and the §5b study, and writes their files; the core (the modules at the top of
`tff_hgb`, `algorithms/`, `data/`, `runtime/`) never imports it.

  config        ExperimentConfig, its validation, --tune specs → values
  results       the files of a run directory: names, atomic writes, RunWriter
  reports       summaries of rows and runs, comparison tables and plots
  caches        data and built algorithms, each made once per configuration
  loop          the round loop: sampling, evaluation, checkpoints, progress
  tuning        choosing hyper-parameters on training-pool validation data
  run           one run end to end (run_experiment) and its result line
  reference     centrally trained references (uni:best, the centralized row)
  comparison    algorithms × seeds (run_comparison) and compare's presets
  paper         the paper's Tables I–III (run_paper_tables, RESULTS.md)
  study         the §5b study (run_study); study_report writes STUDY.md

The TFF runtime is NOT started here: the caller installs it (the binaries with
`tff_hgb.runtime.set_local_context()`, the tests through tests/conftest.py).
"""
