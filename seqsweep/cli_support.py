"""What both command lines share: one-line usage errors and error-to-exit-code handling."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from seqsweep.errors import SeqsweepError, UsageError
from seqsweep.settings import BOUNDS, parse_bounded, parse_pack_size
from seqsweep.urls import BROKER_ENV, DB_ENV, mask_url

#: Flags that take a URL, and the environment variable that takes it as well.
URL_FLAGS = {"--db": DB_ENV, "--broker": BROKER_ENV}


def hide_passwords_from_ps(argv: list[str]) -> None:
    """If a flag in ``argv`` (this process's own arguments) holds a URL with a password,
    warn, move the URL into the environment and re-execute this same command without it.

    Every user of the machine sees a process's arguments (``ps``), and a worker node's
    pool processes inherit them; only the user (and root) can read its environment. The
    new process image has the same pid, so whoever started it notices nothing.
    """
    moved: dict[str, str] = {}
    kept: list[str] = []
    args = iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name in URL_FLAGS:
            url = value if equals else next(args, None)
            if url is not None and mask_url(url) != url:  # it holds a password
                moved[URL_FLAGS[name]] = url
                continue
            kept.extend([arg] if equals or url is None else [arg, url])
            continue
        kept.append(arg)
    if not moved:
        return
    flags = " and ".join(f for f, env in URL_FLAGS.items() if env in moved)
    print(
        f"warning: a password in {flags} shows in `ps` to every user; it is now hidden, "
        "but pass it with --db-env/--broker-env NAME, --db-file/--broker-file PATH "
        f"or ${DB_ENV}/${BROKER_ENV} instead",
        file=sys.stderr,
        flush=True,
    )
    os.environ.update(moved)
    prefix = sys.orig_argv[: len(sys.orig_argv) - len(argv)]  # interpreter, its options, -m X
    os.execv(sys.executable, [*prefix, *kept])


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


def pack_size_arg(text: str) -> int | str:
    """The argparse type of ``--pack-size``: ``auto`` or an integer within its bounds."""
    try:
        return parse_pack_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError("must " + str(exc).split(" must ", 1)[-1]) from None


pack_size_arg.__name__ = "--pack-size"  # argparse names the type in its own errors


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
