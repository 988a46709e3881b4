"""The runtimes section: an HGB round on TFF, in-process, in a plain loop.

The plain loop is the floor; also the dataset transfer cost (`transfer`).
"""

from __future__ import annotations

import collections
import traceback

from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments
from tff_hgb.benchmarking import plain_loop
from tff_hgb.benchmarking import transfer

_COMPARED = (
    'One HGB round (registry \'hgb\', same clients, data and seeds) three '
    'ways, interleaved: tff = process.next on the owned TFF worker; '
    'inprocess = the same process.next under tff_hgb.runtime.'
    'set_inprocess_context(devices=\'cpu\'); plain = benchmarking.'
    'PlainHGBLoop in a child process (Keras invalidates eagerly built '
    'models once TFF builds a process in a graph, so it cannot share this '
    'process): the same local procedure (client_work.'
    'build_hgb_client_update, a tf.function traced once) called client '
    'after client, a tf.function weighted mean of the deltas and the '
    'server SGD step, no metrics. All three time the round only, after '
    'the clients\' datasets are built. inprocess_jit: the in-process round '
    'of the same HGB process built with --jit (AlgorithmConfig.jit: XLA-'
    'compiled local steps and snapshots).')


def _interleave(measurements, s, inprocess_status):
  """Times `measurements`; without 'inprocess' if that one fails.

  Returns:
    (times, inprocess_status): the status says why in-process is missing.
  """
  try:
    return instruments.interleave(measurements, repeats=s.repeats,
                                  warmup=s.warmup), inprocess_status
  except Exception as e:  # pylint: disable=broad-except
    if 'inprocess' not in measurements:
      raise
    # Report the in-process context's failure and measure the rest.
    inprocess_status = ('pending: the in-process context failed '
                        f'({type(e).__name__}: {str(e)[:300]})')
    traceback.print_exc()
    measurements.pop('inprocess')
    measurements.pop('inprocess_jit')
    return instruments.interleave(measurements, repeats=s.repeats,
                                  warmup=s.warmup), inprocess_status


def _section(times, epochs, ids, plain_traces, inprocess_context,
             inprocess_status):
  """The figures: ratios to the plain loop and to in-process, round seconds."""
  summarize, ratios = instruments.summarize, instruments.ratios
  section = collections.OrderedDict(
      local_epochs=epochs, clients_per_round=len(ids),
      tff_over_plain_loop=summarize(ratios(times['tff'], times['plain'])),
      plain_loop_round_s=summarize(times['plain']),
      tff_round_s=summarize(times['tff']),
      plain_loop_client_update_traces=plain_traces)
  if 'inprocess' in times:
    section['inprocess_over_plain_loop'] = summarize(
        ratios(times['inprocess'], times['plain']))
    section['tff_over_inprocess_round_time'] = summarize(
        ratios(times['tff'], times['inprocess']))
    section['inprocess_round_s'] = summarize(times['inprocess'])
    section['inprocess_jit_round_s'] = summarize(times['inprocess_jit'])
    section['inprocess_jit_over_inprocess'] = summarize(
        ratios(times['inprocess_jit'], times['inprocess']))
    section['inprocess_devices'] = list(inprocess_context.devices)
  else:
    section['inprocess_over_plain_loop'] = inprocess_status
    section['tff_over_inprocess_round_time'] = inprocess_status
  section['compared'] = _COMPARED
  return section


def run(bench: harness_lib.Harness) -> None:
  """Writes results['runtimes']."""
  s = bench.settings
  fd = bench.workload.data(s.clients)
  ids = fd.client_ids[:s.clients]
  epochs = s.local_epochs[0]
  bench.log(f'runtimes: plain loop, TFF worker, in-process, E={epochs}')
  data_fn = bench.workload.hgb_data_fn(fd)
  process = bench.workload.process('hgb', epochs)
  tff_runner = instruments.RoundRunner(process, data_fn, ids)
  plain = plain_loop.PlainLoopChild(s, epochs)
  measurements = collections.OrderedDict(
      tff=tff_runner.round, plain=plain.round)
  inprocess_context = bench.inprocess()
  inprocess_status = bench.inprocess_status
  if inprocess_context is not None:
    measurements['inprocess'] = bench.in_context(
        inprocess_context,
        instruments.RoundRunner(process, data_fn, ids).round)
    measurements['inprocess_jit'] = bench.in_context(
        inprocess_context, instruments.RoundRunner(
            bench.workload.process('hgb', epochs, jit=True), data_fn,
            ids).round)
  try:
    times, inprocess_status = _interleave(measurements, s, inprocess_status)
    plain_traces = plain.traces
  finally:
    plain.close()
  section = _section(times, epochs, ids, plain_traces, inprocess_context,
                     inprocess_status)
  section['datasets_per_client'] = transfer.measure(bench, ids, data_fn)
  bench.results['runtimes'] = section
