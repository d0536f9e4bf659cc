"""Parameters against nextflow_schema.json: types, enums, ranges, and the cross-field rules.

The Nextflow head checks the same before any task is submitted (and names unknown parameters); this is
for the CLI used on its own, and checks again what reaches PREFLIGHT.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def schema_properties(schema_path) -> dict:
    """Every parameter's schema, from `$defs` (draft 2020-12, nf-core's current template) or `definitions`."""
    schema = json.loads(Path(schema_path).read_text())
    properties = {}
    for definition in (schema.get("$defs") or schema.get("definitions") or {}).values():
        properties.update(definition.get("properties", {}))
    properties.update(schema.get("properties", {}))
    return properties


def validate_params(params: dict, schema_path, source: str = "params") -> list[InputError]:
    """Check params against nextflow_schema.json (types, enums, ranges) and the cross-field rules."""
    import jsonschema

    flat = {"type": "object", "properties": schema_properties(schema_path)}
    given = {k: v for k, v in params.items() if v is not None}  # null: not given, the default applies
    for name, value in given.items():
        # Nextflow types command-line values itself: `--slurm_queue 1` arrives as the number 1
        if type(value) in (int, float) and flat["properties"].get(name, {}).get("type") == "string":
            given[name] = str(value)
    errors = []
    validator = jsonschema.Draft7Validator(flat)
    for problem in sorted(validator.iter_errors(given), key=lambda e: list(e.path)):
        name = ".".join(str(p) for p in problem.path) or "-"
        expected = flat["properties"].get(name, {})
        hint = f"give --{name} as {expected.get('type', 'the documented type')}"
        if "enum" in expected:
            hint = f"use one of {', '.join(map(str, expected['enum']))}"
        elif problem.validator in ("minimum", "maximum"):
            bounds = [f"at least {expected['minimum']}" if "minimum" in expected else "",
                      f"at most {expected['maximum']}" if "maximum" in expected else ""]
            hint = f"give --{name} {' and '.join(b for b in bounds if b)}"
        errors.append(InputError(source, f"--{name}", f"invalid value {problem.instance!r} ({problem.message})", hint))
    return errors + input_choice_errors(params, source)


def input_choice_errors(params: dict, source: str = "params") -> list[InputError]:
    """Exactly one of --input / --data_dir, with or without a schema to check types against."""
    has_input, has_data_dir = bool(params.get("input")), bool(params.get("data_dir"))
    if has_input == has_data_dir:
        return [InputError(source, "--input/--data_dir", "both given" if has_input else "neither given",
                           "give exactly one of --input <samplesheet.csv> or --data_dir <VirNucPro data/>")]
    return []


def unknown_params(params: dict, schema_path) -> list[str]:
    """Names given that the schema does not know (typos, usually)."""
    known = set(schema_properties(schema_path))
    return sorted(k for k in params if k not in known)
