"""``python -m agent_mock``: the fleet simulator without the hub's own command."""

from __future__ import annotations

import argparse
import logging
import sys

from agent_mock.cli import add_arguments, main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m agent_mock",
                                     description="simulate a fleet of RemoteGPU agents")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
