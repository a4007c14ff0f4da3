"""Checks for the ledger's OpenAPI description, run by tests/openapi.rs.

  openapi_check.py spec SPEC.json
      SPEC.json is valid OpenAPI 3.x (openapi-spec-validator).
  openapi_check.py answers SPEC.json ANSWERS.json
      Every recorded answer of a real ledger matches its operation: the
      status is declared, the content type is declared, and a JSON body
      validates against the declared schema (openapi-schema-validator's
      OAS 3.1 dialect); so does the JSON request body that was sent, if any. Objects are closed for this check: a field the
      schema does not declare fails too, so a schema that is wrong about a
      field in either direction is caught.

Prints one line per problem and exits 1 if there is any.
"""

import copy
import json
import sys


def spec_check(path):
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    spec, _ = read_from_filename(path)
    validate(spec)
    print(f"{path}: valid OpenAPI {spec['openapi']}")


def closed(schema):
    """Every object schema that lists its properties admits no others."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            closed(v)
    elif isinstance(schema, list):
        for v in schema:
            closed(v)
    return schema


def pointer(*parts):
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def media(content_type):
    return content_type.split(";")[0].strip().lower()


def validate(spec, at, instance):
    """Problems of `instance` against the schema at path `at` of `spec`."""
    from openapi_schema_validator import OAS31Validator

    # The whole description is the root, so that its "#/components/..."
    # references resolve; "$ref" points at the schema to check against.
    root = dict(spec)
    root["$ref"] = pointer(*at)
    errors = sorted(OAS31Validator(root).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"at {'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}" for e in errors[:5]]


def answers_check(spec_path, answers_path):
    with open(spec_path) as f:
        spec = closed(json.load(f))
    with open(answers_path) as f:
        answers = json.load(f)
    problems = []
    checked = 0
    for a in answers:
        what = f"{a['method'].upper()} {a['path']} -> {a['status']}"
        op = spec["paths"].get(a["path"], {}).get(a["method"])
        if op is None:
            problems.append(f"{what}: no such operation in the description")
            continue
        responses = op.get("responses", {})
        status = str(a["status"])
        if status not in responses:
            problems.append(f"{what}: status not declared (declared: {sorted(responses)})")
            continue
        content = responses[status].get("content", {})
        declared = {media(k): k for k in content}
        got = media(a["content_type"] or "")
        if got not in declared:
            problems.append(f"{what}: content type {a['content_type']!r} not declared (declared: {sorted(content)})")
            continue
        key = declared[got]
        if a["json"] is not None:
            at = ("paths", a["path"], a["method"], "responses", status, "content", key, "schema")
            problems += [f"{what}: {p}" for p in validate(spec, at, a["json"])]
        if a.get("request") is not None:
            at = ("paths", a["path"], a["method"], "requestBody", "content", "application/json", "schema")
            problems += [f"{what}: request body {p}" for p in validate(spec, at, a["request"])]
        checked += 1
    for p in problems:
        print(p)
    print(f"{checked} answers checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    if sys.argv[1] == "spec":
        spec_check(sys.argv[2])
    elif sys.argv[1] == "answers":
        answers_check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown check {sys.argv[1]!r}")
