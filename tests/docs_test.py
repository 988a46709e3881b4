"""The documents' references resolve: § citations of docs/ALGORITHM.md, links.

In this repository a § always names a section of docs/ALGORITHM.md (e.g.
"ALGORITHM.md §5b", "§3–§4", "§4.2"); every one cited in the library, the
binaries, the tests, README.md or docs/*.md must be a section heading there.
Every relative Markdown link in README.md and docs/*.md, and every repository
path the documents name (`tff_hgb/hgb.py`, docs/STUDY.md, ...), must exist.
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALGORITHM = ROOT / 'docs' / 'ALGORITHM.md'

# Where citations are read.
CITING_DIRS = ('tff_hgb', 'experiments', 'tests')
DOCUMENTS = ('README.md', 'docs/*.md')

# A section heading of ALGORITHM.md: "## 5b. Estimator ..." or "### 4.2 Client".
_HEADING = re.compile(r'^#{2,4}\s+(\d+[a-z]?(?:\.\d+)*)\.?\s', re.M)
# One § reference: §5, §5b, §4.2 (a sentence's final dot is not part of it).
_SECTION = re.compile(r'§\s?(\d+[a-z]?(?:\.\d+)*)')
# "ALGORITHM.md" followed by one or more § references, joined by ranges
# (–, -), commas, "and", "to", whitespace or a comment's '#'.
_CITATION = re.compile(
    r'ALGORITHM\.md[\s#]*((?:§\s?\d+[a-z]?(?:\.\d+)*)'
    r'(?:(?:[\s#,]|–|-|and|to)+§\s?\d+[a-z]?(?:\.\d+)*)*)')
# [text](target) in Markdown, not images' or external targets.
_LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
# A repository path named in prose or code spans: a top-level directory of the
# repository, then a file name with an extension.
_REPO_PATH = re.compile(
    r'(?<![\w./-])((?:tff_hgb|experiments|tests|docs)/[\w./-]*\.(?:py|md|txt|'
    r'json|ini|csv))\b')


def _section_headings(text):
  return set(_HEADING.findall(text))


def _citing_files():
  files = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
  for directory in CITING_DIRS:
    files += sorted((ROOT / directory).rglob('*.py'))
  # This file's own examples cite sections that do not exist on purpose.
  return [f for f in files if f != pathlib.Path(__file__).resolve()]


def _citations(text):
  """Every section cited in `text`: explicit ALGORITHM.md citations and bare §."""
  cited = set()
  for match in _CITATION.finditer(text):
    cited.update(_SECTION.findall(match.group(1)))
  cited.update(_SECTION.findall(text))
  return cited


def missing_citations(files, headings, root=ROOT):
  """(file, line, section) for every cited section that is not a heading."""
  missing = []
  for path in files:
    text = path.read_text(encoding='utf-8')
    for number, line in enumerate(text.splitlines(), 1):
      for section in sorted(_citations(line)):
        if section not in headings:
          missing.append((str(path.relative_to(root)), number, section))
    # Citations that a line break splits ("ALGORITHM.md\n  §5b").
    for match in _CITATION.finditer(text):
      for section in _SECTION.findall(match.group(1)):
        if section not in headings:
          line = text.count('\n', 0, match.start()) + 1
          missing.append((str(path.relative_to(root)), line, section))
  return sorted(set(missing))


def _documents():
  files = []
  for pattern in DOCUMENTS:
    files += sorted(ROOT.glob(pattern))
  return files


def broken_links(files, root=ROOT):
  """(file, target) for every relative link or repository path that is absent."""
  broken = []
  for path in files:
    text = path.read_text(encoding='utf-8')
    for target in _LINK.findall(text):
      if re.match(r'[a-z][a-z0-9+.-]*:', target) or target.startswith('#'):
        continue  # http:, mailto:, an anchor in the same page.
      file_part = target.split('#', 1)[0]
      if file_part and not (path.parent / file_part).exists():
        broken.append((str(path.relative_to(root)), target))
    for target in _REPO_PATH.findall(text):
      # Named as repository paths, relative to the repository's root.
      if not (root / target).exists():
        broken.append((str(path.relative_to(root)), target))
  return sorted(set(broken))


def test_algorithm_md_has_every_section_its_readers_expect():
  headings = _section_headings(ALGORITHM.read_text(encoding='utf-8'))
  for section in ('1', '2', '3', '4', '4.1', '4.2', '4.3', '5', '5b', '6', '7',
                  '8', '9'):
    assert section in headings, f'docs/ALGORITHM.md lost §{section}'


def test_every_cited_section_exists():
  headings = _section_headings(ALGORITHM.read_text(encoding='utf-8'))
  files = _citing_files()
  # The scan must see the citations it is meant to check.
  cited = set()
  for path in files:
    cited |= _citations(path.read_text(encoding='utf-8'))
  assert {'2', '3', '4', '5b', '6'} <= cited, cited
  missing = missing_citations(files, headings)
  assert not missing, 'citations of sections docs/ALGORITHM.md does not have:\n' + \
      '\n'.join(f'  {f}:{n}: §{s}' for f, n, s in missing)


def test_citation_parsing():
  text = ('(ALGORITHM.md §3–§4) ALGORITHM.md §1 and §8; ALGORITHM.md §5, §6.\n'
          'see ALGORITHM.md\n    §5b whatever; ALGORITHM.md §4.2). no §7 here')
  assert _citations(text) == {'1', '3', '4', '4.2', '5', '5b', '6', '7', '8'}


def test_a_missing_section_is_reported(tmp_path):
  cited = tmp_path / 'cites.py'
  cited.write_text('"""See ALGORITHM.md §4–§42 and §5b."""\n', encoding='utf-8')
  assert missing_citations([cited], {'4', '5b'}, tmp_path) == [
      ('cites.py', 1, '42')]


def test_relative_links_and_paths_resolve():
  files = _documents()
  assert ROOT / 'README.md' in files and ALGORITHM in files
  broken = broken_links(files)
  assert not broken, 'links or paths to files that do not exist:\n' + \
      '\n'.join(f'  {f}: {t}' for f, t in broken)


def test_a_broken_link_is_reported(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'A.md').write_text('', encoding='utf-8')
  page = tmp_path / 'docs' / 'B.md'
  page.write_text('[ok](A.md#x) [gone](C.md) [web](https://x.org) [here](#y)\n'
                  'see `tff_hgb/nowhere.py` and docs/A.md.\n', encoding='utf-8')
  assert broken_links([page], tmp_path) == [('docs/B.md', 'C.md'),
                                  ('docs/B.md', 'tff_hgb/nowhere.py')]
