"""`python -m bench.badinput`: the bad-input corpus (deploy/badinput.py) against a running
gateway, the command the README and the Makefile document.

    python -m bench.badinput --rest http://127.0.0.1:8080 --grpc 127.0.0.1:50051
"""

import sys

from deploy.badinput import get_args_parser, main

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
