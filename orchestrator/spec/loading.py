"""Reading a sweep file: YAML with its safety limits (size, depth, aliases, duplicate keys), `--set`
overrides, and pydantic's errors turned into one line that names the file and the field."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .checks import check_method_knobs, check_search
from .schema import SpecError, Sweep, _all_fields, _did_you_mean, _loc


def apply_overrides(raw: dict, sets: list[str], file: str) -> dict:
    """`--set train.epochs=1`: a dotted path and a YAML value, applied before validation."""
    raw = copy.deepcopy(raw)
    for s in sets:
        if "=" not in s:
            raise SpecError(file, f"--set {s}", "expected PATH=VALUE, e.g. train.epochs=1")
        path, value = s.split("=", 1)
        parsed = parse_yaml(value, file, f"--set {path}")
        _check_size(parsed, file)
        node = raw
        keys = path.split(".")
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(key)]
                    continue
                except (ValueError, IndexError):
                    raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:i + 1])} is no index of the list") from None
            if not isinstance(node, dict):
                raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:i])} is a value, not a mapping")
            nxt = node.get(key)
            if nxt is None:
                nxt = node[key] = {}
            elif isinstance(nxt, str) and key in ("teacher", "student"):  # `teacher: resnet56` shorthand
                nxt = node[key] = {"model": nxt}
            if not isinstance(nxt, (dict, list)):
                raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:i + 1])} is not a mapping")
            node = nxt
        if isinstance(node, list):
            try:
                node[int(keys[-1])] = parsed
            except (ValueError, IndexError):
                raise SpecError(file, f"--set {path}", "not an index of the list") from None
        elif isinstance(node, dict):
            node[keys[-1]] = parsed
        else:
            raise SpecError(file, f"--set {path}", f"{'.'.join(keys[:-1])} is a value, not a mapping")
    return raw


MAX_FILE_BYTES = 1 << 20  # a sweep file is a page of YAML; a megabyte is something else
MAX_VALUES = 100_000  # values after YAML aliases are expanded (a "billion laughs" file is small on disk)
MAX_DEPTH = 50


class _UniqueKeys(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(raw: Any, file: str) -> None:
    """Walks the loaded file without recursion, stopping at MAX_VALUES values or MAX_DEPTH levels: aliases
    can make a small file expand to billions of values, and deep nesting exhausts the stack later."""
    stack, count = [(raw, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SpecError(file, "", f"the file expands to more than {MAX_VALUES:,} values (YAML aliases?): not a sweep")
        if depth > MAX_DEPTH:
            raise SpecError(file, "", f"the file nests deeper than {MAX_DEPTH} levels: not a sweep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_yaml(text: str, file: str, where: str = "") -> Any:
    """YAML text -> data, every failure one line naming the place."""
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = where or (f"line {mark.line + 1}" if mark else "yaml")
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SpecError(file, at, f"not valid YAML: {problem}") from None
    except RecursionError:
        raise SpecError(file, where, "the YAML nests deeper than Python can read: not a sweep") from None


def load_sweep(path: str | Path, sets: list[str] | None = None) -> Sweep:
    file = str(path)
    try:
        if Path(path).is_dir():
            raise SpecError(file, "", "is a folder, not a sweep file")
        if Path(path).stat().st_size > MAX_FILE_BYTES:
            raise SpecError(file, "", f"is over {MAX_FILE_BYTES >> 20} MB: not a sweep file")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(file, "", f"cannot read the file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise SpecError(file, "", "is not a text file (not UTF-8): give the sweep's YAML file") from None
    raw = parse_yaml(text, file)
    if not isinstance(raw, dict):
        raise SpecError(file, "", "a sweep file is a YAML mapping (name:, dataset:, pairs:, ...)")
    _check_size(raw, file)
    raw = apply_overrides(raw, sets or [], file)
    try:
        sweep = Sweep.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {err['loc'][-1]!r}{_did_you_mean(str(err['loc'][-1]), _all_fields())}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        raise SpecError(file, _loc(err["loc"]), msg) from None
    check_method_knobs(sweep, file)
    check_search(sweep, file)
    return sweep
