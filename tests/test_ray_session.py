"""The Ray token a sweep's private local Ray authenticates with: made owner-only by kd-sweep when there is
none, tightened when it is readable by others, left alone when Ray is given one."""
import os

import pytest

from orchestrator.ray_session import RunError, owner_only_token


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_new_token_is_owner_only_and_as_random_as_rays(home):
    path = owner_only_token()
    assert path == home / ".ray" / "auth_token"
    assert path.stat().st_mode & 0o777 == 0o600 and (home / ".ray").stat().st_mode & 0o777 == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits in hex, as `ray get-auth-token --generate`
    assert owner_only_token() == path and path.read_text() == token  # kept: a running cluster may use it


def test_a_token_readable_by_others_is_tightened_not_replaced(home):
    (home / ".ray").mkdir()
    path = home / ".ray" / "auth_token"
    path.write_text("a" * 64)
    path.chmod(0o644)
    owner_only_token()
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "a" * 64


def test_a_token_given_to_ray_otherwise_is_not_touched(home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 64)
    assert owner_only_token() is None and not (home / ".ray").exists()
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert owner_only_token() is None and not (home / ".ray").exists()


def test_a_home_that_cannot_hold_the_token_is_one_line(monkeypatch, home):
    monkeypatch.setenv("HOME", os.devnull)
    with pytest.raises(RunError, match=r"cannot write Ray's token /dev/null/.ray/auth_token \(Not a directory\)"):
        owner_only_token()
