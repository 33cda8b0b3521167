#!/usr/bin/python3
"""e2e-json EXPR [FILE]: evaluate EXPR over a JSON document and print the result.

Installed into the e2e container as /usr/local/bin/e2e-json (the container has python3 but
no jq). The document (FILE, or stdin) is bound to ``d``; ``comp(domain, key)`` returns that
component's object from ``d["components"]`` (None if absent) and ``comps`` is the list.
Strings print bare, everything else as JSON; exit status 1 when the document is not JSON or
EXPR raises, so a shell test fails instead of comparing against garbage.

    oneiricctl --json status | e2e-json 'comp("adapter", "cache")["admin"]'
"""

import json
import sys


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if len(sys.argv) == 3:
            with open(sys.argv[2], "rb") as fh:
                d = json.load(fh)
        else:
            d = json.load(sys.stdin)
    except (OSError, ValueError) as exc:
        print(f"e2e-json: no JSON document: {exc}", file=sys.stderr)
        return 1
    comps = d.get("components", []) if isinstance(d, dict) else []

    def comp(domain: str, key: str) -> object:
        return next((c for c in comps if c.get("domain") == domain and c.get("key") == key), None)

    try:
        value = eval(sys.argv[1], {"d": d, "comp": comp, "comps": comps})
    except Exception as exc:
        print(f"e2e-json: {sys.argv[1]!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(value if isinstance(value, str) else json.dumps(value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
