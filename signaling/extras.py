"""Optional dependencies: what each install extra brings, and one clear line when one is missing.

``pip install connvo-rtc`` is the hub: signalling, the HTTP API, TURN credentials and the coturn
runner. Its import graph has no aiortc, av, pocketsphinx or matplotlib; those come as extras:

- ``media``: aiortc and av, the headless aiortc peer (:mod:`media`);
- ``tap``: media + pocketsphinx, the transcription tap (in-process in ``connvo-rtc serve``
  unless ``--no-tap``, or ``connvo-rtc tap``);
- ``loadtest``: media + matplotlib, ``connvo-rtc loadtest`` (matplotlib for ``--plot``).

Modules are looked up here, not imported: pocketsphinx is imported only by the recogniser
processes, matplotlib only when a plot is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterable
from typing import Any

#: The top-level modules each extra installs.
EXTRAS: dict[str, tuple[str, ...]] = {
    "media": ("aiortc", "av"),
    "tap": ("aiortc", "av", "pocketsphinx"),
    "loadtest": ("aiortc", "av", "matplotlib"),
}


def missing(modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` that are not installed (looked up without importing them)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # what an import hook answers for a module it hides
            found = False
        if not found:
            absent.append(name)
    return absent


def tap_modules(recognizer: str) -> tuple[str, ...]:
    """What a tap with the ``recognizer`` back-end needs: the media extra, and pocketsphinx for
    the built-in back-end (another back-end brings its own dependencies)."""
    return EXTRAS["media"] + (("pocketsphinx",) if recognizer == "pocketsphinx" else ())


def add_unavailable_command(subparsers: Any, command: str, extra: str, absent: str) -> None:
    """Register ``command`` as a stand-in for one whose modules need ``extra``: whatever its
    arguments, it says which extra to install and exits 1."""
    hint = f"install connvo-rtc[{extra}]"
    # No prefix characters: every argument is a word for the REMAINDER, so
    # `connvo-rtc loadtest --url ...` reaches the message instead of an argparse usage error.
    parser = subparsers.add_parser(command, help=f"not installed: {hint}", add_help=False,
                                   prefix_chars="\0")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def unavailable(args: argparse.Namespace) -> int:
        print(f"connvo-rtc {command}: needs {absent}, which is not installed: {hint}",
              file=sys.stderr)
        return 1

    parser.set_defaults(func=unavailable)
