"""What an install is made of: pyproject's pins, and constraints.txt, the exact versions CI passed with
(.ci/run installs with it), which README offers for an install that matches CI."""
import re
import tomllib

from .conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, 1)[0].lower().replace("_", "-")


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    return pins


def test_constraints_pin_every_dependency_and_agree_with_pyprojects_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = _constraints()
    assert [r for r in wanted if _name(r) not in pins] == []
    for r in wanted:
        if "==" in r:  # torch and torchvision: pinned in pyproject too, to the releases on this disk
            assert pins[_name(r)] == r.split("==")[1], r


def test_ci_installs_the_constraints_and_readme_offers_them():
    assert '-c constraints.txt' in (REPO / ".ci" / "run").read_text()
    assert "pip install -e . -c constraints.txt" in (REPO / "README.md").read_text()
