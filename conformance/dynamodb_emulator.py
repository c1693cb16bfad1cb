"""A DynamoDB emulator for the conformance suites: moto's server, one request at a time.

moto applies a TransactWriteItems by copying the table, writing, and restoring the copy if a
condition fails; two requests handled at once can therefore undo each other's writes. Real
DynamoDB serializes conflicting transactions, so the suites run moto single-threaded, which
makes every request atomic with respect to every other.

Usage: python3 dynamodb_emulator.py HOST PORT
"""

import sys

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
