"""make readme-results: README's opening table and plot come from make run."""

import pathlib
import subprocess
import sys

from experiments import readme_results

ROOT = pathlib.Path(__file__).resolve().parent.parent

COMPARISON_MD = """# htad / mixed_b: 10 clients

| method | seeds | final top-1 (%) |
|---|---|---|
| fedavg | 3 | 87.36 ± 0.78 |
| hgb | 3 | 60.90 ± 17.00 |

Learning rates: fedavg client_learning_rate=0.4.
"""


def _results(tmp_path, markdown=COMPARISON_MD):
  results = tmp_path / 'results'
  results.mkdir()
  (results / 'comparison.md').write_text(markdown)
  (results / 'comparison.png').write_bytes(b'\x89PNG fake plot')
  readme = tmp_path / 'README.md'
  readme.write_text(f'# Title\n\n{readme_results.START}\nold\n'
                    f'{readme_results.END}\n\n## Rest\n')
  return results, readme


def _run(results, readme):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.readme_results',
       f'--results_dir={results}', f'--readme={readme}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_block_gets_the_table_and_the_plot_and_nothing_else(tmp_path):
  results, readme = _results(tmp_path)
  completed = _run(results, readme)
  assert completed.returncode == 0, completed.stderr
  text = readme.read_text()
  assert '| hgb | 3 | 60.90 ± 17.00 |' in text
  assert '**htad / mixed_b: 10 clients**' in text
  assert 'old' not in text and 'Learning rates' not in text
  assert text.startswith('# Title\n') and text.endswith('## Rest\n')
  assert f']({readme_results.PLOT})' in text
  assert (tmp_path / readme_results.PLOT).read_bytes() == b'\x89PNG fake plot'
  # Idempotent: a second run changes nothing.
  assert _run(results, readme).returncode == 0
  assert readme.read_text() == text


def test_missing_results_end_in_one_line(tmp_path):
  results, readme = _results(tmp_path)
  (results / 'comparison.png').unlink()
  completed = _run(results, readme)
  assert completed.returncode == 1
  assert completed.stderr.strip().splitlines() == [
      f'error: --results_dir: {results}/comparison.png is missing: run '
      '`make run` first.']
  assert 'old' in readme.read_text()


def test_the_repository_readme_opens_with_the_block():
  text = (ROOT / 'README.md').read_text()
  start = text.index(readme_results.START)
  assert text.index('\n## ') > start, 'the results come before any section'
  assert (ROOT / readme_results.PLOT).is_file()
