"""Files a user hands gatehook (a flows file, the scripts it names, an Auth0 export): read
within their folder, and YAML parsed within bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gatehook.errors import ValidationFailed

__all__ = ["MAX_NODES", "load_yaml", "read_inside"]

MAX_NODES = 100_000  # a document's values, every alias counted as what it stands for


def read_inside(root: Path, path: Path, what: str) -> str:
    """The text of ``path``, which must be a file inside ``root`` once links are followed;
    ``ValidationFailed`` otherwise. A file's paths are someone's input: ``..``, an absolute
    path or a link pointing out would make gatehook read ``/proc/self/environ``."""
    inside = root.resolve()
    real = path.resolve()
    if not real.is_relative_to(inside):
        raise ValidationFailed(f"{what}: {path} is outside {root}: only files in it are read")
    try:
        return real.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"{what}: cannot read {path}: {exc}") from None


def load_yaml(text: str) -> Any:
    """A YAML document's data (safe types only). Anchors and aliases are allowed, but the
    document, with every alias counted as the values it stands for, may hold at most
    ``MAX_NODES`` values: a few hundred bytes of nested aliases (a "billion laughs") would
    otherwise stand for billions of values, which a reader walking them never finishes."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"not YAML: {exc}") from None
    if node is None:
        return None
    size = _size(node, {})
    if size > MAX_NODES:
        raise ValidationFailed(
            f"the YAML document stands for {size} values or more (aliases expanded): at most"
            f" {MAX_NODES}"
        )
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"not YAML: {exc}") from None
    finally:
        loader.dispose()


def _size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values ``node`` stands for, an alias counted in full each time it is used
    (memoised by node: a composed document shares one node per anchor, so this is linear in
    the text, whatever the expansion), capped just past ``MAX_NODES``."""
    known = seen.get(id(node))
    if known is not None:
        return known
    seen[id(node)] = MAX_NODES + 1  # a cycle (a recursive alias) counts as too large
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _size(child, seen)
            if total > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _size(key, seen) + _size(value, seen)
            if total > MAX_NODES:
                break
    seen[id(node)] = min(total, MAX_NODES + 1)
    return seen[id(node)]
