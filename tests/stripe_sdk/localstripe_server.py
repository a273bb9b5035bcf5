"""Start one localstripe server on 127.0.0.1:PORT with its state in memory only.

`python -m localstripe` would bind every interface (`::`) and pickle its whole store to
the fixed path /tmp/localstripe.pickle after every write, a file that every localstripe
on the machine shares (and reloads at start without --from-scratch). Two servers side by
side, or a rerun, would then race on that one file. This launcher serves the same aiohttp
app, bound to loopback only, with the disk persistence switched off: each server starts
empty and forgets everything when it stops.

Usage (with the venv's python): python localstripe_server.py --port 8420
"""

import argparse
import logging
import sys

from aiohttp import web
from localstripe import __version__, resources, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("localstripe_server.py: only a loopback host is allowed")

    # In memory only: no load at start, no pickle after each write.
    resources.Store.try_load_from_disk = lambda self: None
    resources.Store.dump_to_disk = lambda self: None

    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.INFO)
    access.addHandler(logging.StreamHandler())
    print(f"localstripe {__version__} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(server.app, host=args.host, port=args.port, access_log=access, print=None)


if __name__ == "__main__":
    main()
