"""The environment goalloop gives to checks and command proposers: the user's, without its secrets.

A variable is a secret when its name contains KEY, TOKEN, SECRET, PASSWORD, PASSWD or CREDENTIAL (in any
case): API keys, cloud credentials, CI tokens. A goal passes one through by naming it under `env.pass`
(an agent CLI such as `claude -p` needs its key). What is dropped never reaches the check, the proposer,
their output, the prompt or the record.
"""

from __future__ import annotations

from collections.abc import Mapping

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def without_secrets(environ: Mapping[str, str], passed: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """`environ` minus the secret-looking variables not named in `passed`."""
    keep = set(passed)
    return {name: value for name, value in environ.items() if name in keep or not is_secret(name)}
