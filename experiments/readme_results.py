r"""Puts the default comparison's table and plot at the top of README.md.

  make readme-results   # = python -m experiments.readme_results --results_dir=results/default

Reads what `make run` wrote (comparison.md, comparison.png), copies the plot to
docs/default_comparison.png and replaces the README block between the markers
below with the table and the command that made it. Runs no TFF computation.
"""

import os
import pathlib
import re
import shutil

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
START = '<!-- default-comparison:start (make readme-results) -->'
END = '<!-- default-comparison:end -->'
PLOT = 'docs/default_comparison.png'

_RESULTS_DIR = flags.DEFINE_string(
    'results_dir', 'results/default',
    'The output directory of `make run` (compare --config=default).')
_README = flags.DEFINE_string('readme', str(ROOT / 'README.md'),
                              'The README to update.')


class ResultsError(ValueError):
  """What `make run` should have written is missing or unreadable."""


def comparison_table(comparison_md: str) -> str:
  """The first Markdown table (with its title line, if any) of comparison.md."""
  lines = comparison_md.splitlines()
  start = next((i for i, line in enumerate(lines) if line.startswith('|')),
               None)
  if start is None:
    raise ResultsError('comparison.md has no table.')
  end = start
  while end < len(lines) and lines[end].startswith('|'):
    end += 1
  title = next((line.lstrip('# ').strip() for line in reversed(lines[:start])
                if line.startswith('#')), '')
  table = '\n'.join(lines[start:end])
  return f'**{title}**\n\n{table}' if title else table


def block(table: str) -> str:
  return '\n'.join([
      START, '',
      '`make run` (`python -m experiments.compare --config=default`), as '
      'measured on a 2-core machine; each method\'s client learning rate '
      'tuned on validation data:', '',
      table, '',
      f'![Test accuracy against rounds, mean and band over seeds]({PLOT})', '',
      END])


def update_readme(readme: str, table: str) -> str:
  """`readme` with the block between the markers replaced (or not found)."""
  pattern = re.compile(re.escape(START) + '.*?' + re.escape(END), re.DOTALL)
  if not pattern.search(readme):
    raise ResultsError(f'the README has no block between {START!r} and '
                       f'{END!r}.')
  return pattern.sub(lambda _: block(table), readme, count=1)


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments {" ".join(argv[1:])}')
  results_dir = _RESULTS_DIR.value
  try:
    markdown_path = os.path.join(results_dir, 'comparison.md')
    plot_path = os.path.join(results_dir, 'comparison.png')
    for path in (markdown_path, plot_path):
      if not os.path.isfile(path):
        raise ResultsError(f'{path} is missing: run `make run` first.')
    with open(markdown_path, encoding='utf-8') as f:
      table = comparison_table(f.read())
    readme_path = pathlib.Path(_README.value)
    updated = update_readme(readme_path.read_text(encoding='utf-8'), table)
    plot_target = readme_path.parent / PLOT
    plot_target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plot_path, plot_target)
    readme_path.write_text(updated, encoding='utf-8')
  except (ResultsError, OSError) as e:
    raise SystemExit(f'error: --results_dir: {e}') from None
  print(f'Updated {readme_path} and {plot_target}.')


if __name__ == '__main__':
  app.run(main)
