r"""Serves TFF computations on this machine for a run on another one.

  python -m experiments.worker --port=8000              # on each worker host
  python -m experiments.run_experiment --runtime=tff \
      --workers=host1:8000,host2:8000 ...               # on the driver

Starts TFF's C++ `worker_binary` on --port, prints one line
`READY <host>:<port> pid=<pid>` to stdout when it answers, and runs until
SIGTERM or Ctrl-C, then stops the worker and exits 0. If the worker dies on its
own, exits 1. The worker is started with PR_SET_PDEATHSIG, so it never outlives
this process, even after `kill -9`.

SECURITY: a TFF worker accepts unauthenticated gRPC connections, and whoever
reaches its port can run arbitrary TensorFlow code (file and network access
included) as this user. TFF 0.87's `worker_binary` has no bind-address flag (it
listens on `[::]:<port>`, every IPv4 and IPv6 interface) whatever --host says,
so it prints a one-line warning when it starts. --host (default 127.0.0.1) is
only the address printed in the READY line. Keep the port closed to anything
but the driver: firewall it and reach it through an SSH tunnel
(docs/RELIABILITY.md, "Security", has the recipe).
"""

from __future__ import annotations

import signal
import sys
import threading

from absl import app
from absl import flags

flags.DEFINE_integer('port', None, 'TCP port the worker serves on (1-65535).')
flags.DEFINE_string(
    'host', '127.0.0.1',
    'Address the driver uses to reach this worker (printed in the READY '
    'line). The binary listens on all interfaces regardless: it has no '
    'bind-address option.')
flags.DEFINE_integer(
    'max_concurrent_computation_calls', -1,
    'Client computations the worker runs at once (bounds memory); '
    'non-positive: no bound.')
flags.DEFINE_string('log_file', None,
                    "File for the worker binary's own log (default: discard).")
flags.mark_flag_as_required('port')

FLAGS = flags.FLAGS

def _fail(message: str) -> None:
  print(f'worker: error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f'unexpected arguments {" ".join(argv[1:])}')
  # Imported here: flags errors should not wait for TensorFlow to load.
  from tff_hgb.runtime import options  # pylint: disable=g-import-not-at-top
  from tff_hgb.runtime import workers  # pylint: disable=g-import-not-at-top

  try:
    host, port = options.parse_address(f'{FLAGS.host}:{FLAGS.port}',
                                         '--host/--port')
  except ValueError as e:
    _fail(str(e))

  stop = threading.Event()
  received = []

  def on_signal(signum, frame):
    del frame
    received.append(signum)
    stop.set()

  # Installed before the worker starts, so `workers` leaves them in place.
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)

  worker = None
  try:
    # Prints the one-line all-interfaces warning (workers.start_worker).
    worker = workers.start_worker(
        port=port, host=host,
        max_concurrent_computation_calls=FLAGS.max_concurrent_computation_calls,
        log_path=FLAGS.log_file)
    # The binary listens on all interfaces, so loopback always reaches it.
    workers.wait_until_ready(f'127.0.0.1:{port}', timeout=60.0,
                             process=worker)
    print(f'READY {worker.address} pid={worker.pid}', flush=True)
    while not stop.wait(0.5):
      if not worker.alive():
        print(f'worker: error: worker_binary (pid {worker.pid}) exited with '
              f'code {worker.process.returncode}; is port {port} in use?',
              file=sys.stderr, flush=True)
        sys.exit(1)
  except workers.WorkerError as e:
    _fail(f'{e} Is port {port} already in use?')
  finally:
    workers.stop_all_workers()
  if received:
    print(f'worker: stopped ({signal.Signals(received[0]).name})',
          file=sys.stderr, flush=True)


if __name__ == '__main__':
  app.run(main)
