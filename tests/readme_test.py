"""The README's embedding example runs as written (so the two cannot drift)."""

import pathlib
import re

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
