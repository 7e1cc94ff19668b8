"""What both command lines share: one-line usage errors and error-to-exit-code handling."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from seqsweep.errors import SeqsweepError, UsageError
from seqsweep.settings import BOUNDS, parse_bounded


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def bounded(name: str) -> Callable[[str], int]:
    """Return an argparse type for the integers ``seqsweep.settings.BOUNDS[name]`` allows."""

    def parse(text: str) -> int:
        try:
            return parse_bounded(name, text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError("must " + str(exc).split(" must ", 1)[-1]) from None

    parse.__name__ = BOUNDS[name].flag  # argparse names the type in its own errors
    return parse


def interrupt_on_termination() -> None:
    """Treat SIGTERM and SIGHUP like Ctrl-C, so ``finally`` blocks stop child processes."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def run_cli(command: Callable[[], int]) -> int:
    """Run ``command``; turn seqsweep errors into one stderr line and their exit code."""
    try:
        return command()
    except SeqsweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
