"""Validates JSON instances against a JSON Schema (draft 2020-12) with the pinned `jsonschema`.

Used by tests/schema.rs. Reads {"schema": <schema>, "instances": [<instance>, ...]} on stdin and
prints one JSON array on stdout: per instance, the list of its errors, each {"path", "message"}
with the path written the way the worker names fields (`job.env[0].name`; "" for the root).
The schema itself is checked against the 2020-12 meta-schema first (exit 2 if it is not valid).
"""
import json
import sys

import jsonschema
from jsonschema import Draft202012Validator


def field(path):
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def errors(validator, instance):
    found = []
    for e in validator.iter_errors(instance):
        found.append({"path": field(e.absolute_path), "message": e.message})
        # anyOf / oneOf failures: the reasons of each branch, deeper in the tree.
        for sub in e.context or []:
            found.append({"path": field(sub.absolute_path), "message": sub.message})
    return found


def main():
    request = json.load(sys.stdin)
    schema = request["schema"]
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        print(f"schema is not a valid draft 2020-12 schema: {e.message}", file=sys.stderr)
        sys.exit(2)
    validator = Draft202012Validator(schema)
    json.dump([errors(validator, i) for i in request["instances"]], sys.stdout)


if __name__ == "__main__":
    main()
