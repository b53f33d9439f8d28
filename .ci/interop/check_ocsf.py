"""Validates OCSF events (JSON lines on stdin) against the OCSF 1.5.0 API Activity class schema,
generated offline by the ocsf-json-schema package (which ships the OCSF schema releases)."""
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.5.0"))
name = schema.lookup_class_name_from_uid(class_uid=6003)
class_schema = schema.get_class_schema(class_name=name, profiles=[])
validator = jsonschema.Draft202012Validator(class_schema)

events = [json.loads(line) for line in sys.stdin if line.strip()]
if not events:
    sys.exit("no OCSF events to check")
bad = 0
for i, event in enumerate(events):
    for error in validator.iter_errors(event):
        bad += 1
        print(f"event {i} (entry {event.get('metadata', {}).get('sequence')}): {error.json_path}: {error.message}")
calls = sum(1 for e in events if e["api"]["operation"] == "tools/call")
print(f"{len(events)} events ({calls} tools/call) checked against OCSF 1.5.0 {name} (class 6003): {bad} errors")
sys.exit(1 if bad or not calls else 0)
