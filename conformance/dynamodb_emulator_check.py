"""Checks of `dynamodb_emulator.py`'s TransactWriteItems against a running copy of it: all or
nothing, conditions per item, one operation per item, and items put back when a write fails
midway. Run by the test command before the suites use the emulator.

Usage: python3 dynamodb_emulator_check.py
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.exceptions import ClientError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    port = free_port()
    emulator = Path(__file__).with_name("dynamodb_emulator.py")
    server = subprocess.Popen(
        [sys.executable, str(emulator), "127.0.0.1", str(port)], stderr=subprocess.DEVNULL
    )
    try:
        check(port, server)
    finally:
        server.terminate()
        server.wait()
    print("the emulator's transactions are all or nothing")


def check(port: int, server: subprocess.Popen) -> None:
    c = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    while True:  # until it listens, or has exited
        if server.poll() is not None:
            sys.exit(f"the emulator exited with status {server.returncode}")
        try:
            c.list_tables()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    c.create_table(
        TableName="t",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )

    def key(k):
        return {"pk": {"S": "p"}, "sk": {"S": k}}

    def put(k, v, **extra):
        return {"Put": {"TableName": "t", "Item": {**key(k), "v": {"N": str(v)}}, **extra}}

    def value(k):
        item = c.get_item(TableName="t", Key=key(k)).get("Item")
        return item and int(item["v"]["N"])

    def refused(items):
        try:
            c.transact_write_items(TransactItems=items)
        except ClientError as e:
            return e.response
        sys.exit(f"a transaction that must fail went through: {items}")

    absent = {"ConditionExpression": "attribute_not_exists(pk)"}
    c.transact_write_items(TransactItems=[put("a", 1), put("b", 1, **absent)])
    assert (value("a"), value("b")) == (1, 1)

    # A condition fails on the second item: nothing is written, and the reasons say which.
    r = refused([put("a", 2), put("b", 2, **absent, ReturnValuesOnConditionCheckFailure="ALL_OLD")])
    assert r["Error"]["Code"] == "TransactionCanceledException", r
    reasons = [x["Code"] for x in r["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"], reasons
    assert r["CancellationReasons"][1]["Item"]["v"] == {"N": "1"}, r
    assert (value("a"), value("b")) == (1, 1)

    # The same item twice: refused whole.
    delete_c = {"Delete": {"TableName": "t", "Key": key("c")}}
    r = refused([put("c", 1), delete_c])
    assert r["Error"]["Code"] == "ValidationException", r
    assert value("c") is None

    # A write fails after two were made: both are put back (a changed, b deleted).
    bad_update = {
        "Update": {
            "TableName": "t",
            "Key": key("d"),
            "UpdateExpression": "SET v = v + :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    delete_b = {"Delete": {"TableName": "t", "Key": key("b")}}
    refused([put("a", 9), delete_b, bad_update])
    assert (value("a"), value("b"), value("d")) == (1, 1, None)

    # A condition check on one item, an update of another.
    exists_a = {
        "ConditionCheck": {
            "TableName": "t",
            "Key": key("a"),
            "ConditionExpression": "attribute_exists(pk)",
        }
    }
    set_e = {
        "Update": {
            "TableName": "t",
            "Key": key("e"),
            "UpdateExpression": "SET v = :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    c.transact_write_items(TransactItems=[exists_a, set_e])
    assert value("e") == 1
    exists_z = {"ConditionCheck": {**exists_a["ConditionCheck"], "Key": key("z")}}
    refused([exists_z, put("e", 5)])
    assert value("e") == 1


if __name__ == "__main__":
    main()
