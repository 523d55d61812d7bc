"""Generate `viper_agent.cdp.generated` from the pinned Chrome DevTools Protocol JSON.

The agent keeps its own small pycdp-style binding (the PyPI `pycdp` is an empty placeholder):
sans-I/O command functions that yield a request dict and return a typed result, and typed event
classes. Only what the agent uses is generated: the commands and events listed in `WANTED`, plus
every type they reference (types of domains not pinned become `Any`).

Usage:
    python scripts/gen_cdp.py --pin PROTOCOL.json   # refresh cdp_protocol.json from a full
                                                    # protocol (Chromium's GET /json/protocol
                                                    # or npm devtools-protocol), then generate
    python scripts/gen_cdp.py                       # generate from the pinned cdp_protocol.json
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PINNED = HERE / "cdp_protocol.json"
OUT = HERE.parent / "src" / "viper_agent" / "cdp" / "generated"

# domain -> (commands, events) the agent uses.
WANTED: dict[str, tuple[list[str], list[str]]] = {
    "Browser": (["getVersion"], []),
    "Target": (
        [
            "getTargets",
            "getTargetInfo",
            "createTarget",
            "closeTarget",
            "attachToTarget",
            "setDiscoverTargets",
        ],
        [
            "targetCreated",
            "targetDestroyed",
            "targetInfoChanged",
            "targetCrashed",
            "detachedFromTarget",
        ],
    ),
    "Page": (
        [
            "enable",
            "navigate",
            "reload",
            "getNavigationHistory",
            "navigateToHistoryEntry",
            "captureScreenshot",
            "getLayoutMetrics",
            "setLifecycleEventsEnabled",
            "addScriptToEvaluateOnNewDocument",
            "getFrameTree",
            "handleJavaScriptDialog",
        ],
        ["lifecycleEvent", "frameNavigated", "navigatedWithinDocument", "javascriptDialogOpening"],
    ),
    "Runtime": (
        ["enable", "evaluate", "terminateExecution"],
        ["consoleAPICalled", "exceptionThrown"],
    ),
    "Network": (
        ["enable"],
        ["requestWillBeSent", "responseReceived", "loadingFailed"],
    ),
    "Emulation": (["setDeviceMetricsOverride", "setUserAgentOverride"], []),
    "Input": (["dispatchMouseEvent", "dispatchKeyEvent", "insertText"], []),
    "Storage": (["getCookies", "setCookies", "clearCookies"], []),
    "Fetch": (["enable", "fulfillRequest"], ["requestPaused"]),
    "Inspector": ([], ["targetCrashed"]),
}

PRIMITIVES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "any": "Any",
    "object": "dict[str, Any]",
    "binary": "str",
}


def snake(name: str) -> str:
    s1 = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    out = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s1).lower()
    return out + "_" if keyword.iskeyword(out) or out in ("json", "cls", "self") else out


def camel(name: str) -> str:
    return name[0].upper() + name[1:]


# --- pinning: keep only what WANTED reaches ---------------------------------------------------


def _refs(node: Any, domain: str, out: set[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            dom, _, name = ref.rpartition(".")
            out.add((dom or domain, name))
        for value in node.values():
            _refs(value, domain, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, domain, out)


def pin(full: dict[str, Any]) -> dict[str, Any]:
    """The subset of `full` that `WANTED` needs, with every referenced type."""
    domains = {d["domain"]: d for d in full["domains"]}
    types: set[tuple[str, str]] = set()
    picked: dict[str, dict[str, Any]] = {}
    for name, (commands, events) in WANTED.items():
        src = domains[name]
        dom = {k: v for k, v in src.items() if k not in ("commands", "events", "types")}
        dom["commands"] = [c for c in src.get("commands", []) if c["name"] in commands]
        dom["events"] = [e for e in src.get("events", []) if e["name"] in events]
        missing = set(commands) - {c["name"] for c in dom["commands"]}
        missing |= set(events) - {e["name"] for e in dom["events"]}
        if missing:
            raise SystemExit(f"{name}: not in the protocol: {sorted(missing)}")
        _refs(dom["commands"] + dom["events"], name, types)
        picked[name] = dom
    seen: set[tuple[str, str]] = set()
    while types - seen:
        dom_name, type_name = (types - seen).pop()
        seen.add((dom_name, type_name))
        if dom_name not in picked:
            continue  # a domain the agent does not pin: its types become Any
        (typedef,) = [t for t in domains[dom_name].get("types", []) if t["id"] == type_name]
        _refs(typedef, dom_name, types)
    for dom_name, dom in picked.items():
        wanted_types = {t for d, t in seen if d == dom_name}
        dom["types"] = [t for t in domains[dom_name].get("types", []) if t["id"] in wanted_types]
    return {"version": full["version"], "domains": list(picked.values())}


# --- code generation -----------------------------------------------------------------------


class Generator:
    def __init__(self, protocol: dict[str, Any]) -> None:
        self.domains = {d["domain"]: d for d in protocol["domains"]}
        self.types: dict[tuple[str, str], dict[str, Any]] = {}
        for name, dom in self.domains.items():
            for t in dom.get("types", []):
                self.types[(name, t["id"])] = t

    def resolve(self, ref: str, domain: str) -> tuple[str, str]:
        dom, _, name = ref.rpartition(".")
        return dom or domain, name

    def is_class(self, key: tuple[str, str]) -> bool:
        t = self.types.get(key)
        return t is not None and t["type"] == "object" and "properties" in t

    def py_type(self, spec: dict[str, Any], domain: str) -> str:
        if "$ref" in spec:
            key = self.resolve(spec["$ref"], domain)
            if key not in self.types:
                return "Any"
            prefix = "" if key[0] == domain else f"{key[0].lower()}."
            return prefix + key[1]
        if spec["type"] == "array":
            return f"list[{self.py_type(spec['items'], domain)}]"
        if spec["type"] == "string" and "enum" in spec:
            return "str"
        return PRIMITIVES[spec["type"]]

    def from_json(self, spec: dict[str, Any], domain: str, expr: str, depth: int = 0) -> str:
        if "$ref" in spec:
            key = self.resolve(spec["$ref"], domain)
            t = self.types.get(key)
            if t is None:
                return expr
            if self.is_class(key):
                return f"{self.py_type(spec, domain)}.from_json({expr})"
            return self.from_json(t, key[0], expr, depth)
        if spec.get("type") == "array":
            var = f"i{depth}"
            inner = self.from_json(spec["items"], domain, var, depth + 1)
            return expr if inner == var else f"[{inner} for {var} in {expr}]"
        return expr

    def to_json(self, spec: dict[str, Any], domain: str, expr: str, depth: int = 0) -> str:
        if "$ref" in spec:
            key = self.resolve(spec["$ref"], domain)
            t = self.types.get(key)
            if t is None:
                return expr
            if self.is_class(key):
                return f"{expr}.to_json()"
            return self.to_json(t, key[0], expr, depth)
        if spec.get("type") == "array":
            var = f"i{depth}"
            inner = self.to_json(spec["items"], domain, var, depth + 1)
            return expr if inner == var else f"[{inner} for {var} in {expr}]"
        return expr

    def deps(self, domain: str) -> set[str]:
        found: set[tuple[str, str]] = set()
        dom = self.domains[domain]
        _refs([dom.get("types", []), dom.get("commands", []), dom.get("events", [])], domain, found)
        return {d for d, n in found if d != domain and (d, n) in self.types}

    def doc(self, text: str | None, indent: str) -> list[str]:
        text = (text or "").strip().replace("\\", "\\\\").replace('"""', "'''")
        if not text:
            return []
        lines = text.splitlines()
        if len(lines) == 1:
            return [f'{indent}"""{lines[0]}"""']
        return [
            f'{indent}"""{lines[0]}',
            *[f"{indent}{ln}".rstrip() for ln in lines[1:]],
            f'{indent}"""',
        ]

    def dataclass(
        self,
        name: str,
        props: list[dict[str, Any]],
        domain: str,
        doc: str | None,
        method: str | None = None,
    ) -> list[str]:
        out = ["", "", "@dataclass(frozen=True, kw_only=True)", f"class {name}:"]
        out += self.doc(doc, "    ") or [f'    """{method or name}."""']
        if method:
            out.append(f'    METHOD: ClassVar[str] = "{method}"')
        for p in props:
            t = self.py_type(p, domain)
            if p.get("optional"):
                out.append(f"    {snake(p['name'])}: {t} | None = None")
            else:
                out.append(f"    {snake(p['name'])}: {t}")
        out += ["", "    @classmethod", f"    def from_json(cls, json: dict[str, Any]) -> {name}:"]
        out.append("        return cls(")
        for p in props:
            key = p["name"]
            if p.get("optional"):
                conv = self.from_json(p, domain, f'json["{key}"]')
                out.append(
                    f'            {snake(key)}={conv} if json.get("{key}") is not None else None,'
                )
            else:
                out.append(
                    f"            {snake(key)}={self.from_json(p, domain, f'json[{key!r}]')},"
                )
        out.append("        )")
        if method is None:
            out += [
                "",
                "    def to_json(self) -> dict[str, Any]:",
                "        json: dict[str, Any] = {}",
            ]
            for p in props:
                attr = f"self.{snake(p['name'])}"
                conv = self.to_json(p, domain, attr)
                if p.get("optional"):
                    out.append(f"        if {attr} is not None:")
                    out.append(f'            json["{p["name"]}"] = {conv}')
                else:
                    out.append(f'        json["{p["name"]}"] = {conv}')
            out.append("        return json")
        return out

    def command(self, cmd: dict[str, Any], domain: str) -> list[str]:
        name = cmd["name"]
        method = f"{domain}.{name}"
        params = cmd.get("parameters", [])
        returns = cmd.get("returns", [])
        out: list[str] = []
        result = "None"
        if returns:
            result = f"{camel(name)}Result"
            out += self.dataclass(result, returns, domain, f"What {method} returns.", method=None)
        sig = []
        for p in params:
            t = self.py_type(p, domain)
            sig.append(
                f"{snake(p['name'])}: {t} | None = None"
                if p.get("optional")
                else f"{snake(p['name'])}: {t}"
            )
        star = ["*"] if sig else []
        out += [
            "",
            "",
            f"def {snake(name)}(",
            *[f"    {s}," for s in star + sig],
            f") -> Generator[dict[str, Any], dict[str, Any], {result}]:",
        ]
        out += self.doc(cmd.get("description"), "    ") or [f'    """{method}."""']
        out.append("    params: dict[str, Any] = {}")
        for p in params:
            attr = snake(p["name"])
            conv = self.to_json(p, domain, attr)
            if p.get("optional"):
                out.append(f"    if {attr} is not None:")
                out.append(f'        params["{p["name"]}"] = {conv}')
            else:
                out.append(f'    params["{p["name"]}"] = {conv}')
        if returns:
            out.append(f'    json = yield {{"method": "{method}", "params": params}}')
            out.append(f"    return {result}.from_json(json)")
        else:
            out.append(f'    yield {{"method": "{method}", "params": params}}')
        return out

    def module(self, domain: str) -> str:
        dom = self.domains[domain]
        out = [
            f'"""CDP domain {domain}: generated by scripts/gen_cdp.py from cdp_protocol.json.',
            "",
            "Do not edit by hand; change WANTED in the script and run it again.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
            "from collections.abc import Generator",
            "from dataclasses import dataclass",
            "from typing import Any, ClassVar, TypeAlias",
            "",
        ]
        deps = sorted(self.deps(domain))
        if deps:
            out.append(
                "from viper_agent.cdp.generated import " + ", ".join(d.lower() for d in deps)
            )
            out.append("")
        class_names = set()
        for t in dom.get("types", []):
            key = (domain, t["id"])
            if self.is_class(key):
                class_names.add(t["id"])
                out += self.dataclass(t["id"], t["properties"], domain, t.get("description"))
            else:
                spec = dict(t)
                if spec["type"] == "object":
                    target = "dict[str, Any]"
                else:
                    target = self.py_type(spec, domain)
                out += ["", f"{t['id']}: TypeAlias = {target}"]
                out += self.doc(t.get("description"), "")
        for cmd in dom.get("commands", []):
            out += self.command(cmd, domain)
        events = []
        for ev in dom.get("events", []):
            cls = camel(ev["name"])
            if cls in class_names:
                cls += "Event"
            events.append((ev["name"], cls))
            out += self.dataclass(
                cls,
                ev.get("parameters", []),
                domain,
                ev.get("description"),
                method=f"{domain}.{ev['name']}",
            )
        out += ["", "", "EVENTS: dict[str, Any] = {"]
        out += [f'    "{domain}.{name}": {cls},' for name, cls in events]
        out += ["}", ""]
        text = "\n".join(out)
        if "TypeAlias" not in text.split("from typing import", 1)[1].split("\n", 1)[1]:
            text = text.replace(
                "from typing import Any, ClassVar, TypeAlias", "from typing import Any, ClassVar"
            )
        return text

    def package(self) -> str:
        names = sorted(d.lower() for d in self.domains)
        return "\n".join(
            [
                '"""Typed CDP commands and events: generated by scripts/gen_cdp.py; do not edit.',
                "",
                "`parse_event(method, params)` turns an event message into its typed class",
                "(None for events not generated).",
                '"""',
                "",
                "from __future__ import annotations",
                "",
                "from typing import Any",
                "",
                "from viper_agent.cdp.generated import " + ", ".join(names),
                "",
                "EVENTS: dict[str, Any] = {",
                *[f"    **{n}.EVENTS," for n in names],
                "}",
                "",
                f"__all__ = [{', '.join(repr(n) for n in names)}, 'EVENTS', 'parse_event']",
                "",
                "",
                "def parse_event(method: str, params: dict[str, Any]) -> object | None:",
                '    """The typed event for `method`, or None when the agent does not use it."""',
                "    cls = EVENTS.get(method)",
                "    return None if cls is None else cls.from_json(params)",
                "",
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", type=Path, help="full protocol JSON to pin from")
    args = parser.parse_args()
    if args.pin:
        pinned = pin(json.loads(args.pin.read_text()))
        PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    protocol = json.loads(PINNED.read_text())
    gen = Generator(protocol)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for domain in gen.domains:
        (OUT / f"{domain.lower()}.py").write_text(gen.module(domain))
    (OUT / "__init__.py").write_text(gen.package())
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    files = [str(p) for p in OUT.glob("*.py")]
    subprocess.run(
        [ruff, "format", "--quiet", "--isolated", "--line-length", "100", *files], check=False
    )


if __name__ == "__main__":
    main()
