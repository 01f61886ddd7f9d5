"""Credentials out of what the CLI prints: URLs and the errors that quote them.

A transport may echo its raw URL (``user:password@host``, ``?token=...``) in an
exception; the CLI prints every such text through ``mask`` or ``one_line``.
"""

from __future__ import annotations

import re

from .deadline import Deadline

# ``user:password@`` anywhere (a transport may echo its raw netloc in an error), and
# secret-looking query parameters.
_USERINFO = re.compile(r"(?P<user>[^\s/@:'\"\[\]]+):[^\s/@'\"]+@")
_SECRET_PARAM = re.compile(r"(?i)(?P<key>[?&;](?:[^=&;\s]*(?:password|passwd|secret|token|key)[^=&;\s]*)=)[^&;\s\"']*")


def mask(text: str) -> str:
    """Mask credentials in URLs and in messages that quote them."""
    text = _USERINFO.sub(lambda m: f"{m['user']}:***@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}***", text)


def one_line(exc: BaseException) -> str:
    """An exception as one masked line: a transport may quote its raw URL in errors."""
    text = mask(" ".join(str(exc).split()))
    if isinstance(exc, Deadline):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
