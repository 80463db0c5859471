"""What a name registered by a plug-in (a PTQ method, a sensitivity metric, a search strategy) may be.

Names travel inside other strings: ``int4-g128-asym:METHOD+a8-tensor`` choice names, ``--seed-from METRIC``
(where a path to a table is also accepted), YAML spaces and MLflow params. A name that holds one of their
separators registers fine and only fails where it is read back, long after a search has run; so each
register function checks it here, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(kind: str, name: object, reserved: Iterable[str] = ()) -> str:
    """``name`` if it can be a ``kind``'s name (letters, digits, ``-``, ``_``, ``.``, starting with a letter or a digit,
    and not one of ``reserved``), else a ``ValueError`` saying which rule it breaks."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"cannot register {kind} {name!r}: a name is letters, digits, '-', '_' and '.', starting with a letter "
                         "or a digit (':', '+', '/', '=', ',' and spaces separate names where it is used)")
    taken = sorted(reserved)
    if name in taken:
        raise ValueError(f"cannot register {kind} {name!r}: the name is reserved ({', '.join(repr(r) for r in taken)} mean "
                         "something else where it is used)")
    return name
