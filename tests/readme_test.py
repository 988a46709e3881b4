"""The README's embedding and prediction examples run as written (so the two
cannot drift)."""

import pathlib
import re

from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import run

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADING = '## Embedding HGB in your own TFF program'


def _example():
  text = (ROOT / 'README.md').read_text()
  assert HEADING in text, 'README lost its embedding section'
  section = text.split(HEADING, 1)[1]
  match = re.search(r'```python\n(.*?)```', section, re.S)
  assert match, 'no python block in the embedding section'
  return match.group(1)


def test_readme_embedding_example_runs(capsys):
  code = _example()
  # The session already owns a local context; the example's own call installs
  # a fresh one, exactly as a user's program would.
  namespace = {}
  exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith('0 ') and printed[1].startswith('1 ')
  assert 'fusion/accuracy' in printed[-1]
  weights = namespace['process'].get_model_weights(namespace['state'])
  assert len(weights.trainable) > 0


PREDICT_HEADING = '## Using a trained model'


def test_readme_prediction_example_runs(tmp_path, monkeypatch, capsys):
  text = (ROOT / 'README.md').read_text()
  assert PREDICT_HEADING in text, 'README lost its prediction section'
  section = text.split(PREDICT_HEADING, 1)[1].split('\n## ', 1)[0]
  command = re.search(r'```sh\n(.*?)```', section, re.S).group(1)
  assert 'run_experiment --algorithm=hgb --dataset=htad' in command
  assert '--output_dir=results/my_run' in command
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  # The section's run, made small: the example only needs its model/.
  monkeypatch.chdir(tmp_path)
  summary = run.run_experiment(config_lib.ExperimentConfig.from_dict(dict(
      algorithm='hgb', dataset='htad', num_clients=3, rounds=2,
      batch_size=16, output_dir='results/my_run', progress=False)))
  capsys.readouterr()
  exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith("['audio', 'accel'] ['"), printed[0]
  assert printed[1] == f'accuracy {summary["final_accuracy"]}'
  assert printed[2] == ('accuracy without audio '
                        f'{summary["missing_modality_accuracy"]["audio"]}')
