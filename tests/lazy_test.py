"""Tests of tff_hgb.lazy, the first-use loading behind the packages' names."""

import importlib
import json
import subprocess
import sys

import pytest

from tff_hgb import lazy


def test_symbols_and_submodules_resolve_to_what_they_name():
  getattr_ = lazy.module_getattr('email', {'dumps': 'json'}, ['charset'])
  assert getattr_('dumps') is json.dumps
  assert getattr_('charset') is importlib.import_module('email.charset')


def test_an_unknown_name_is_an_attribute_error_naming_the_package():
  getattr_ = lazy.module_getattr('tff_hgb.example', {'dumps': 'json'})
  with pytest.raises(AttributeError, match="'tff_hgb.example' has no "
                     "attribute 'loads'"):
    getattr_('loads')
  # hasattr relies on AttributeError (not ImportError or KeyError).
  assert not hasattr(sys.modules['tff_hgb'], 'no_such_name')


def test_package_names_load_their_module_only_when_used():
  # A TensorFlow-free name, so the check takes a second, not an import of TF.
  code = ('import sys, tff_hgb, tff_hgb.runtime\n'
          'before = "tff_hgb.runtime.options" in sys.modules\n'
          'tff_hgb.runtime.validate_runtime_flags\n'
          'print(before, "tff_hgb.runtime.options" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, timeout=300).stdout.split()
  assert out == ['False', 'True']
