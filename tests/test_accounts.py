"""accounts.yaml is checked like a batch file, and never shows a key."""

from __future__ import annotations

import pytest

from jobs.accounts import load_accounts
from jobs.errors import ConfigError

GOOD = """\
accounts:
  - name: girl-1
    provider: gencraft
    api_key_env: GENCRAFT_KEY_1
    base_url: https://www.gencraft.cc
    rpm: 10
    max_in_flight: 4
"""


def test_a_good_file_gives_its_accounts(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD)
    accounts = load_accounts(path, environ={"GENCRAFT_KEY_1": "sk-secret"})
    assert accounts["girl-1"].rpm == 10
    assert "sk-secret" not in repr(accounts)


def test_a_key_variable_that_is_not_set_is_named_but_no_value_is_shown(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(GOOD)
    with pytest.raises(ConfigError) as refused:
        load_accounts(path, environ={})
    assert "girl-1" in str(refused.value) and "GENCRAFT_KEY_1" in str(refused.value)


def test_an_unknown_provider_and_a_missing_field_are_both_named(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(
        GOOD
        + "  - name: other\n    provider: dalle\n    api_key_env: K2\n    base_url: http://x\n    rpm: 1\n"
        + "    max_in_flight: 1\n  - name: third\n    provider: gencraft\n    api_key_env: K3\n    rpm: 1\n"
        + "    max_in_flight: 1\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_accounts(path, environ={"GENCRAFT_KEY_1": "a", "K2": "b", "K3": "c"})
    message = str(refused.value)
    assert "account other: provider: unknown provider 'dalle'" in message
    assert "account third: base_url" in message


def test_a_missing_file_says_how_to_name_one(tmp_path):
    with pytest.raises(ConfigError, match="GENQ_ACCOUNTS"):
        load_accounts(tmp_path / "nope.yaml")
