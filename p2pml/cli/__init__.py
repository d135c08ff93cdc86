"""The ``p2pml`` command line.

``p2pml node --config FILE`` runs a node; ``p2pml devnet`` runs a local
network; every other command talks to a node's admin API (``--api``, default
``$P2PML_API`` or http://127.0.0.1:8080). Errors are one line and a non-zero
exit; ``--json`` prints machine-readable output.

Commands live in modules by what they act on (``daemon``, ``network``,
``tasks``, ``models``); ``parser`` wires them; ``common`` holds what they share.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from p2pml import calllog
from p2pml.cli.common import fail
from p2pml.cli.daemon import cmd_node
from p2pml.cli.parser import build_parser
from p2pml.errors import ApiError, P2PMLError

__all__ = ["build_parser", "cmd_node", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    calllog.record_cli(parser, sys.argv[1:] if argv is None else argv)
    # Common options are SUPPRESSed so a subcommand never resets them: fill gaps.
    for name, default in (("api", None), ("token_file", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        return int(args.fn(args))
    except ApiError as exc:
        return fail(str(exc))
    except P2PMLError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `p2pml ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
