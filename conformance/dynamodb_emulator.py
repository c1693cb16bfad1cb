"""A DynamoDB emulator for the conformance suites: moto's server, one request at a time.

moto applies a TransactWriteItems by copying the table, writing, and restoring the copy if a
condition fails; two requests handled at once can therefore undo each other's writes. Real
DynamoDB serializes conflicting transactions, so the suites run moto single-threaded, which
makes every request atomic with respect to every other.

moto also copies the whole table once per item of a transaction, so a transaction's cost
grows with everything the table holds: a case of a few hundred group commits spent minutes
in those copies. Here a transaction is applied as DynamoDB defines it, all or nothing, at the
cost of the items it names: every condition is checked first (each item appears once in a
transaction, so a condition sees the item as it was before the transaction), nothing is
written if one fails, and if a write fails midway the items written so far are put back.

Usage: python3 dynamodb_emulator.py HOST PORT
"""

import copy
import sys

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

OPERATIONS = {"ConditionCheck", "Put", "Delete", "Update"}


def transact_write_items(self, transact_items):
    """TransactWriteItems at the cost of its own items (see the module's docs)."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    seen = set()
    planned = []  # (op_type, op, table_name, key, current item or None)
    errors = []
    for item in transact_items:
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException
        original_item = None
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in OPERATIONS:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            unique = (str(table_name), str(dict(sorted(key.items()))))
            if unique in seen:
                raise MultipleTransactionsException()
            seen.add(unique)
            current = self.get_item(table_name, key)
            condition = op.get("ConditionExpression")
            if condition is not None:
                check = get_filter_expression(
                    condition,
                    op.get("ExpressionAttributeNames"),
                    op.get("ExpressionAttributeValues"),
                )
                if not check.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            planned.append((op_type, op, table_name, key, current))
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))
        except Exception as e:  # noqa: BLE001 - reported per item, as moto does
            errors.append((type(e).__name__, str(e), original_item))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)

    # Every condition holds: write, and put back what was written if a write fails.
    written = []  # (table_name, key, the item before, as DynamoDB JSON, or None)
    try:
        for index, (op_type, op, table_name, key, current) in enumerate(planned):
            before = copy.deepcopy(current.to_json()["Attributes"]) if current else None
            try:
                if op_type == "Put":
                    self.put_item(table_name, op["Item"])
                elif op_type == "Delete":
                    self.delete_item(table_name, key)
                elif op_type == "Update":
                    self.update_item(
                        table_name,
                        key,
                        update_expression=op["UpdateExpression"],
                        expression_attribute_names=op.get("ExpressionAttributeNames"),
                        expression_attribute_values=op.get("ExpressionAttributeValues"),
                    )
            except MockValidationException:
                raise
            except Exception as e:  # noqa: BLE001 - the transaction is cancelled
                failed = [(None, None, None)] * len(planned)
                failed[index] = (type(e).__name__, str(e), None)
                raise TransactionCanceledException(failed) from e
            if op_type != "ConditionCheck":
                written.append((table_name, key, before))
    except Exception:
        for table_name, key, before in reversed(written):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before)
        raise


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    DynamoDBBackend.transact_write_items = transact_write_items
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
