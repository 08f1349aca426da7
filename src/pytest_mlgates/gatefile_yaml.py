"""A gate file's YAML as nodes that keep their positions, built into data only safely.

Everything a parser of gate files (``collect.py``, ``gatefile_run.py``,
``gatefile_criteria.py``) needs from PyYAML: the document composed into nodes (counted
first by ``bounded.check_yaml``: an alias bomb or absurd nesting is refused before a node
is built), a node built into plain data through the safe constructor only (a
``!!python/...`` tag is an error, never code), and :class:`Located`, which turns a node into
the one-line ``file:line:column: what is wrong`` a user reads.

PyYAML is imported inside the functions: nothing here runs before pytest meets a gate file.
"""

from __future__ import annotations

import difflib
from typing import Any

from pytest_mlgates.errors import GateFileError

__all__ = ["Located", "closest", "compose", "construct", "is_mapping", "mapping_pairs"]


class Located:
    """A YAML node's position, 1-based, in the file the user edits."""

    def __init__(self, display: str, line_offset: int) -> None:
        import yaml

        self.display = display
        self.line_offset = line_offset
        #: One safe constructor per file: builds plain data from nodes, never Python objects.
        self.constructor = yaml.constructor.SafeConstructor()

    def line(self, node: Any) -> int:
        return int(node.start_mark.line) + 1 + self.line_offset

    def column(self, node: Any) -> int:
        return int(node.start_mark.column) + 1

    def error(self, node: Any, message: str, *, column: int | None = None) -> GateFileError:
        col = self.column(node) if column is None else column
        return GateFileError(f"{self.display}:{self.line(node)}:{col}: {message}")


def closest(word: str, options: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(options)})"


def mapping_pairs(node: Any) -> dict[str, tuple[Any, Any]]:
    """Key string -> (key node, value node) of a YAML mapping node."""
    return {str(k.value): (k, v) for k, v in node.value}


def is_mapping(node: Any) -> bool:
    return node.id == "mapping"


def compose(text: str, where: Located) -> Any:
    """Compose (not construct) the YAML: nodes keep their positions for error messages.

    Only the safe constructor ever builds Python objects from them (see :func:`construct`),
    so a ``!!python/...`` tag is an error, never code.  What the document would expand to is
    counted first (``bounded.check_yaml``): an alias bomb, a 5000-digit integer or absurd
    nesting is one line at its position, before a node is built.
    """
    import yaml

    from pytest_mlgates.bounded import YamlRefused, check_yaml

    try:
        check_yaml(text)
    except YamlRefused as err:
        line = err.line + where.line_offset
        at = f":{line}:{err.column}" if err.line else ""
        raise GateFileError(f"{where.display}{at}: {err.problem}; refused") from None
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(err, where) from None
    except yaml.YAMLError as err:
        raise GateFileError(f"{where.display}: invalid YAML: {err}") from None
    finally:
        loader.dispose()


def construct(node: Any, where: Located) -> Any:
    """Plain Python data of a node, through PyYAML's safe constructor only."""
    import yaml

    try:
        return where.constructor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(err, where) from None
    except (ValueError, TypeError, OverflowError) as err:  # a date like 2001-13-45
        from pytest_mlgates.bounded import number_problem

        raise where.error(node, f"invalid YAML value ({number_problem(err)})") from None


def _yaml_error(err: Any, where: Located) -> GateFileError:
    mark = err.problem_mark or err.context_mark
    problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
    if mark is None:
        return GateFileError(f"{where.display}: invalid YAML: {problem}")
    line = mark.line + 1 + where.line_offset
    return GateFileError(f"{where.display}:{line}:{mark.column + 1}: invalid YAML: {problem}")
