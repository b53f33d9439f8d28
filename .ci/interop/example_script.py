"""Prints the Python script embedded in an example CI file, so the suite can run it as written.

usage: example_script.py examples/github-actions.yml|examples/gitlab-ci.yml
"""

import sys

import yaml

path = sys.argv[1]
doc = yaml.safe_load(open(path))
if "jobs" in doc:  # GitHub Actions
    run = next(s["run"] for s in doc["jobs"]["deploy"]["steps"] if s.get("name") == "Deploy through custody")
else:  # GitLab CI
    run = doc["deploy"]["script"][0]
lines = run.splitlines()
start = next(i for i, l in enumerate(lines) if l.strip().endswith("python - <<'PY'"))
end = next(i for i, l in enumerate(lines) if l.strip() == "PY" and i > start)
print("\n".join(lines[start + 1 : end]))
