"""Reading YAML that may be hostile: every YAML file fave loads (pipeline.yaml, template.yaml) goes through here.

PyYAML's ``SafeLoader`` builds no arbitrary objects, but on its own it:

* hands back aliases as shared references, so a "billion laughs" file of a few hundred bytes is a graph that
  whoever walks it (pydantic, ``json.dumps``, the template reader) sees as 10^9 nodes;
* keeps the last of two equal keys without a word;
* recurses per nesting level: 500 ``[`` end in ``RecursionError``, not a YAML error;
* raises ``ValueError``, not a YAML error, for scalars it cannot convert (a 5,000-digit integer, the date
  2001-13-45), and spends quadratic time on long sexagesimal numbers (``1:00:00:...``);
* is pure Python: 1 MB of YAML takes about 8 s to parse on the development machine.

``HardenedLoader`` refuses, *while composing* (before any Python object is built): more than ``MAX_NODES``
nodes once aliases are counted at their expanded size, an alias inside the node it names (a recursive
structure), nesting deeper than ``MAX_DEPTH``. While constructing it refuses duplicate keys and numbers longer
than ``MAX_NUMBER_CHARS`` characters, and turns conversion errors into YAML errors. ``load_file`` refuses,
before parsing, anything but a regular file, files over ``MAX_FILE_BYTES`` and text that is not UTF-8.

``MAX_FILE_BYTES`` is 256 KiB and ``MAX_NODES`` 20,000: 12 and 18 times what the largest YAML file of this
repository needs (template.yaml: 20 KB, 1,080 nodes). Together they bound the worst case to about 0.6 s of
parsing on the development machine (a file of 20,000 one-character numbers; 256 KiB of long strings or
comments takes half that). The limits are class attributes, so a loader can be given others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from fave_shared.errors import ValidationError

__all__ = ["MAX_FILE_BYTES", "HardenedLoader", "LimitError", "YamlInputError", "describe", "load_file", "load_text"]

#: Largest YAML file read, in bytes (checked before parsing).
MAX_FILE_BYTES = 256 * 1024

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(ValidationError):
    """A YAML file was refused. The message is one line and starts with the file's path."""


class LimitError(yaml.MarkedYAMLError):
    """The document is over one of ``HardenedLoader``'s limits."""


class HardenedLoader(yaml.SafeLoader):
    """``SafeLoader`` with the limits described in the module docstring."""

    MAX_NODES = 20_000
    """Nodes in the document with every alias counted as the nodes it stands for (a "billion laughs" file
    is refused at the alias that crosses this, before the rest is even parsed)."""
    MAX_DEPTH = 100
    """Nesting levels (far below the point where the pure-Python composer exhausts the stack)."""
    MAX_NUMBER_CHARS = 100
    """Characters of an int or float scalar (a longer one is refused; quote it to make it a string)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0  # nodes so far, aliases at their expanded size
        self._depth = 0
        self._expanded: dict[yaml.Node, int] = {}  # finished node -> its expanded size

    # -- composing (events -> nodes): aliases and depth are bounded here, before anything is built ---------

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is the composer's own error
                size = self._expanded.get(target)
                if size is None:
                    raise LimitError(None, None, f"alias *{event.anchor} is inside the node it refers to", mark)
                self._count(size, mark)
            return super().compose_node(parent, index)
        if self._depth >= self.MAX_DEPTH:
            raise LimitError(None, None, f"nested more than {self.MAX_DEPTH} levels deep", mark)
        start = self._nodes
        self._count(1, mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._expanded[node] = self._nodes - start
        return node

    def _count(self, nodes: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > self.MAX_NODES:
            raise LimitError(
                None,
                None,
                f"more than {self.MAX_NODES} nodes, with aliases counted at their expanded size",
                mark,
            )

    # -- constructing (nodes -> Python objects) ------------------------------------------------------------

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:  # e.g. the date 2001-13-45: not a YAML error in PyYAML
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {e}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *base`: merged keys may be overridden, that is the point of a merge
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: SafeConstructor reports "found unhashable key"
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_short(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        self._check_number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        self._check_number(node)
        return super().construct_yaml_float(node)

    def _check_number(self, node: yaml.ScalarNode) -> None:
        if len(node.value) > self.MAX_NUMBER_CHARS:
            raise LimitError(
                None,
                None,
                f"a number of {len(node.value)} characters (at most {self.MAX_NUMBER_CHARS}; quote it for a string)",
                node.start_mark,
            )


# Constructors are looked up in a per-class table, not by method name: register the overrides there.
HardenedLoader.add_constructor("tag:yaml.org,2002:int", HardenedLoader.construct_yaml_int)
HardenedLoader.add_constructor("tag:yaml.org,2002:float", HardenedLoader.construct_yaml_float)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(error: yaml.YAMLError) -> str:
    """One line: what is wrong and where (line and column, 1-based)."""
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [p for p in (error.context, error.problem) if p]
        mark = error.problem_mark or error.context_mark
        text = "; ".join(parts) or "invalid YAML"
        if mark is not None:
            text += f" at line {mark.line + 1}, column {mark.column + 1}"
    else:
        text = str(error)
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def load_text(text: str, loader: type[HardenedLoader] = HardenedLoader) -> Any:
    """Parse one YAML document with ``loader``. Raises ``yaml.YAMLError`` (``LimitError`` for a limit)."""
    instance = loader(text)
    try:
        return instance.get_single_data()
    finally:
        instance.dispose()


def load_file(
    path: str | os.PathLike[str],
    loader: type[HardenedLoader] = HardenedLoader,
    *,
    max_bytes: int = MAX_FILE_BYTES,
) -> Any:
    """Read and parse a YAML file within the limits.

    ``FileNotFoundError`` propagates (each caller words "not found" its own way); everything else that is
    wrong is a ``YamlInputError`` whose one-line message starts with the path.
    """
    data = _read(Path(path), max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlInputError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    try:
        return load_text(text, loader)
    except LimitError as e:
        raise YamlInputError(f"{path}: refused: {describe(e)}") from None
    except yaml.YAMLError as e:
        raise YamlInputError(f"{path}: not valid YAML: {describe(e)}") from None


def _read(path: Path, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused as not a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise YamlInputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise YamlInputError(f"{path}: cannot read: {kind}")
        if info.st_size > max_bytes:
            raise YamlInputError(f"{path}: refused: {info.st_size} bytes, over the limit of {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:  # the file may have grown since fstat: read one byte past the limit at most
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise YamlInputError(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise YamlInputError(f"{path}: refused: over the limit of {max_bytes} bytes")
    return b"".join(chunks)
