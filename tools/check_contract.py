"""Prove that the OpenAPI document covers the source contract, operation by operation.

The source contract (a loosely formatted text export) is what clients were promised; the OpenAPI
document is what Connexion actually routes and validates. Nothing else ties the two together, so
this check does: every contract operation must be served, under both base paths the app mounts
(the contract's literal doubled prefix and the canonical one), with the same summary and
operationId, and every contract example must validate against the document's schema for it
(OpenAPI 3.0 semantics, `$ref`s resolved over the whole document). The document itself must be a
valid OpenAPI document. All problems are reported, one line each; exit status 1 if there are any.

    python -m tools.check_contract [--contract PATH] [--openapi PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openapi_spec_validator
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator.exceptions import OpenAPISpecValidatorError
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry
from referencing.exceptions import PointerToNowhere, Unresolvable
from referencing.jsonschema import DRAFT4

from claims_realtime.app import BASE_PATHS, CONTRACT_BASE

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTRACT = ROOT / "openapi/source-contract/realtime-subscriptions.contract.txt"
DEFAULT_OPENAPI = ROOT / "openapi/claims-realtime.yaml"
#: Where the document is registered for `$ref` resolution; never fetched.
DOC_URI = "https://claims-realtime.invalid/openapi.json"

HEADER = re.compile(r"^REST\s+(?P<prefix>/\S*)\s+(?P<count>\d+)\s+endpoints?$")
OPERATION = re.compile(r"^(?P<method>GET|PUT|POST|PATCH|DELETE|HEAD|OPTIONS)\s+(?P<path>/\S*)$")
EXAMPLE = re.compile(r"^(?P<kind>Request|Response) Example$")
NAMED_SUMMARY = re.compile(r"^(?P<summary>.*?)\s*\((?P<operation_id>[A-Za-z_]\w*)\)$")
JSON_START = re.compile(r"[{\[]")
END_OF_OPERATIONS = "Additional Metadata"


@dataclass(frozen=True)
class ContractOperation:
    method: str
    path: str  # literal, with `:param` placeholders and the doubled prefix
    summary: str  # without the trailing `(operationId)`
    operation_id: str | None
    access: str | None
    request_example: Any = None
    response_example: Any = None


def parse_header(text: str) -> tuple[str, int]:
    """The contract's prefix and declared endpoint count, from its first line."""
    match = HEADER.match(first := text.strip().partition("\n")[0].strip())
    if match is None:
        raise ValueError(f"header {first!r} is not 'REST <prefix> <N> endpoints'")
    return match["prefix"], int(match["count"])


def parse_contract(text: str) -> list[ContractOperation]:
    """Every operation of the contract; raises ValueError where the text cannot be parsed."""
    ops: list[dict[str, Any]] = []
    pos, decoder = 0, json.JSONDecoder()
    # Scan line by line, but jump over each example's JSON as a whole: that way nothing inside
    # an example can be mistaken for an operation or a heading.
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line, line_no, pos = text[pos:end].strip(), text.count("\n", 0, pos) + 1, end + 1
        if line == END_OF_OPERATIONS:
            break  # what follows is metadata about the export, not operations
        if (op_match := OPERATION.match(line)) is not None:
            ops.append({"method": op_match["method"], "path": op_match["path"], "text": []})
        elif (ex_match := EXAMPLE.match(line)) is not None and ops:
            start = JSON_START.search(text, pos)
            if start is None:
                raise ValueError(f"line {line_no}: {line} is not followed by JSON")
            try:
                example, pos = decoder.raw_decode(text, start.start())
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {line_no}: {line}: invalid JSON: {exc}") from exc
            ops[-1][f"{ex_match['kind'].lower()}_example"] = example
        elif line and ops:
            ops[-1]["text"].append(line)
    return [_operation(op) for op in ops]


def _operation(raw: dict[str, Any]) -> ContractOperation:
    lines: list[str] = raw.pop("text")
    if not lines:
        raise ValueError(f"{raw['method']} {raw['path']}: no summary line")
    named = NAMED_SUMMARY.match(lines[0])
    summary, operation_id = (named["summary"], named["operation_id"]) if named else (lines[0], None)
    access = lines[1] if len(lines) > 1 else None
    return ContractOperation(summary=summary, operation_id=operation_id, access=access, **raw)


def served_paths(contract_path: str, prefix: str) -> dict[str, str]:
    """Base path -> the full URL the contract implies under it, `:param` as `{param}`."""
    templated = re.sub(r":(\w+)", r"{\1}", contract_path)
    # The literal path repeats the prefix; the canonical URL is the same with it once.
    deduplicated = templated.replace(prefix + prefix, prefix, 1)
    return {base: templated if base == CONTRACT_BASE else deduplicated for base in BASE_PATHS}


def check(
    contract_ops: Sequence[ContractOperation], openapi_doc: dict[str, Any], prefix: str
) -> list[str]:
    """Problems with how `openapi_doc` covers `contract_ops` (empty when it covers them)."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT4.create_resource(openapi_doc))
    problems: list[str] = []
    for op in contract_ops:
        label, rel_paths = f"{op.method} {op.path}", set()
        for base, url in served_paths(op.path, prefix).items():
            rel = url[len(base) :] if url.startswith(base + "/") else None
            if rel is None or op.method.lower() not in openapi_doc.get("paths", {}).get(rel, {}):
                problems.append(f"{label}: not served as {op.method} {url} (base path {base})")
            else:
                rel_paths.add(rel)
        for rel in sorted(rel_paths):
            problems += [f"{label}: {p}" for p in _check_operation(op, openapi_doc, rel, registry)]
    return problems


def _check_operation(
    op: ContractOperation, doc: dict[str, Any], rel: str, registry: Registry[Any]
) -> list[str]:
    operation = doc["paths"][rel][op.method.lower()]
    pointer = f"/paths/{rel.replace('~', '~0').replace('/', '~1')}/{op.method.lower()}"
    problems = []
    if op.summary != operation.get("summary"):
        problems.append(f"summary {op.summary!r} != OpenAPI summary {operation.get('summary')!r}")
    if op.operation_id is not None and op.operation_id != operation.get("operationId"):
        problems.append(f"operationId {op.operation_id} != {operation.get('operationId')}")
    if op.access == "Public" and operation.get("security", doc.get("security")):
        problems.append("contract says Public but the operation requires security")
    if op.request_example is not None:
        owners = [f"{pointer}/requestBody"]
        problems += _validate("request", op.request_example, doc, owners, registry)
    if op.response_example is not None:
        # The success response: the lowest 2xx status that has a JSON schema.
        statuses = sorted(str(s) for s in operation.get("responses", {}) if str(s).startswith("2"))
        owners = [f"{pointer}/responses/{status}" for status in statuses]
        problems += _validate("response", op.response_example, doc, owners, registry)
    return problems


def _validate(
    kind: str, example: Any, doc: dict[str, Any], owners: list[str], registry: Registry[Any]
) -> list[str]:
    """Validate `example` against the JSON schema of the first of `owners` that has one."""
    schemas = (_resolve(doc, owner)[0] + "/content/application~1json/schema" for owner in owners)
    schema_ptr = next((ptr for ptr in schemas if _resolve(doc, ptr)[1] is not None), None)
    if schema_ptr is None:
        return [f"{kind} example: the operation has no application/json {kind} schema"]
    # A `$ref` into the registered document (rather than the schema dict itself) gives the
    # schema the document as its base, so its own `#/components/...` refs resolve.
    schema = {"$ref": DOC_URI + "#" + quote(schema_ptr, safe="/~")}
    validator = OAS30Validator(schema, registry=registry, format_checker=oas30_format_checker)
    try:
        errors = sorted(validator.iter_errors(example), key=lambda e: list(map(str, e.path)))
    except Unresolvable as exc:  # its str() dumps the whole document: name just the ref
        return [f"{kind} example: unresolvable $ref {exc.ref!r} in the schema"]
    return [f"{kind} example: {_short(e.message)} at {_at(e.path)}" for e in errors]


def _resolve(doc: dict[str, Any], pointer: str) -> tuple[str, Any]:
    """The object at `pointer` (None if absent), following the local `$ref`s a request body or
    response may be, and the pointer where it really is."""
    for _ in range(10):  # bounded: a reference cycle is a broken document, not a hang
        node: Any = doc
        for key in pointer.split("/")[1:]:
            key = key.replace("~1", "/").replace("~0", "~")
            node = node.get(key) if isinstance(node, dict) else None
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not (isinstance(ref, str) and ref.startswith("#/")):
            return pointer, node
        pointer = ref[1:]
    return pointer, None


def _at(path: Iterable[Any]) -> str:  # e.g. data/0/status, as a JSON pointer without the /
    return "/".join(map(str, path)) or "(root)"


def _short(message: str) -> str:
    """One line, and not the whole failing instance (messages may embed it)."""
    return textwrap.shorten(message, width=240, placeholder=" ...")


def check_document(openapi_doc: dict[str, Any]) -> list[str]:
    """The OpenAPI document's own validity problems."""
    try:
        openapi_spec_validator.validate(openapi_doc)
    except OpenAPIValidationError as exc:
        return [f"OpenAPI document: {_short(exc.message)} at {exc.json_path}"]
    except OpenAPISpecValidatorError as exc:
        return [f"OpenAPI document: no supported OpenAPI version ({type(exc).__name__})"]
    except (PointerToNowhere, Unresolvable) as exc:
        return [f"OpenAPI document: unresolvable $ref {exc.ref!r}"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.check_contract", description=__doc__.partition("\n")[0]
    )
    parser.add_argument("--contract", type=Path, default=DEFAULT_CONTRACT, help="source contract")
    parser.add_argument("--openapi", type=Path, default=DEFAULT_OPENAPI, help="OpenAPI document")
    args = parser.parse_args(argv)
    text = args.contract.read_text(encoding="utf-8")
    doc = yaml.safe_load(args.openapi.read_text(encoding="utf-8"))
    doc = doc if isinstance(doc, dict) else {}  # not a mapping: reported as no OpenAPI version
    problems, ops = check_document(doc), []
    try:
        prefix, declared = parse_header(text)
        ops = parse_contract(text)
        if len(ops) != declared:
            problems.append(f"contract header declares {declared} endpoints, parsed {len(ops)}")
        problems += check(ops, doc, prefix)
    except ValueError as exc:
        problems.append(f"contract: {exc}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    examples = sum(ex is not None for op in ops for ex in (op.request_example, op.response_example))
    counts = f"{len(ops)} operations x {len(BASE_PATHS)} base paths, {examples} examples"
    print(f"contract check: {counts}: {f'{len(problems)} problems' if problems else 'OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
