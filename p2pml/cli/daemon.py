"""Commands that run processes: ``node`` (one node) and ``devnet``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from p2pml.cli.common import EXIT_CONFIG, fail


def cmd_node(args: argparse.Namespace) -> int:
    from p2pml.config import load_settings
    from p2pml.errors import ConfigError, NetworkError, StoreError
    from p2pml.logsetup import setup_logging
    from p2pml.node.node import run_node

    try:
        settings = load_settings(Path(args.config))
        setup_logging(settings.log)
        asyncio.run(run_node(settings))
    except ConfigError as exc:
        return fail(str(exc), EXIT_CONFIG)
    except (NetworkError, StoreError) as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_devnet(args: argparse.Namespace) -> int:
    from p2pml.devnet import run_devnet

    try:
        return run_devnet(Path(args.dir), args.nodes, args.demo, args.workers)
    except RuntimeError as exc:
        return fail(str(exc))
