"""Checks a workflow in ComfyUI's UI JSON format (what the editor saves and the
example_workflows/ templates are) against the nodes' `INPUT_TYPES` and `RETURN_TYPES`.

The editor stores the widget inputs of a node as `widgets_values`, in `INPUT_TYPES` order
(required, then optional) and without the socket inputs (MODEL, LATENT, ...). It adds one value
after an INT input marked `control_after_generate` (the "fixed"/"randomize" control) and one
after an `image_upload` combo (the upload button, saved as "image"). Socket inputs are entries of
the node's `inputs` list; links are `[id, from_node, from_slot, to_node, to_slot, type]`.
"""

from __future__ import annotations

import json
import pathlib

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "example_workflows"


def example_workflows() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(EXAMPLES.glob("*.json"))}


def _inputs(types: dict) -> list[tuple[str, object, dict]]:
    return [
        (name, spec[0], dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {})
        for group in ("required", "optional")
        for name, spec in types.get(group, {}).items()
    ]


def _is_widget(kind: object) -> bool:
    return isinstance(kind, (list, tuple)) or str(kind) in WIDGET_TYPES


def _check_value(where: str, kind: object, options: dict, value: object, any_file: bool) -> list[str]:
    if isinstance(kind, (list, tuple)):
        if value in kind or (any_file and isinstance(value, str) and value):
            return []
        return [f"{where}: {value!r} is not one of {list(kind)[:8]}"]
    kind = str(kind)
    if kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a BOOLEAN"]
    if kind == "STRING":
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a STRING"]
    ok_type = int if kind == "INT" else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        return [f"{where}: {value!r} is not an {kind}"]
    low, high = options.get("min", float("-inf")), options.get("max", float("inf"))
    return [] if low <= value <= high else [f"{where}: {value!r} is outside [{low}, {high}]"]


def check_workflow(workflow: dict, node_types: dict[str, dict], file_inputs=()) -> list[str]:
    """Every problem of `workflow` against `node_types` (`class_type -> {"input": INPUT_TYPES(),
    "output": RETURN_TYPES}`), as readable lines; empty when it validates.

    `file_inputs`: `(class_type, input)` pairs whose choices are the files of an installation
    (a checkpoint name): any non-empty name is accepted there.
    """
    problems: list[str] = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        kind = node["type"]
        where = f"node {node['id']} ({kind})"
        if kind in FRONTEND_ONLY:
            continue
        if kind not in node_types:
            problems.append(f"{where}: unknown node type")
            continue
        inputs = _inputs(node_types[kind]["input"])
        expected: list[tuple[str, object, dict]] = []
        for name, spec_kind, options in inputs:
            if not _is_widget(spec_kind):
                continue
            expected.append((name, spec_kind, options))
            if options.get("control_after_generate"):
                expected.append((f"{name} (control)", list(CONTROL_VALUES), {}))
            if options.get("image_upload"):
                expected.append((f"{name} (upload)", ["image"], {}))
        values = node.get("widgets_values") or []
        if len(values) != len(expected):
            problems.append(f"{where}: {len(values)} widget values for {len(expected)} widgets")
        for (name, spec_kind, options), value in zip(expected, values, strict=False):
            any_file = (kind, name) in file_inputs
            problems += _check_value(f"{where} {name}", spec_kind, options, value, any_file)
        sockets = {name: str(spec_kind) for name, spec_kind, _ in inputs if not _is_widget(spec_kind)}
        required = {name for name in node_types[kind]["input"].get("required", {}) if name in sockets}
        linked = set()
        for entry in node.get("inputs", []):
            if entry["name"] not in sockets:
                problems.append(f"{where}: input {entry['name']!r} is not a socket of the node")
            elif entry["type"] != sockets[entry["name"]]:
                problems.append(
                    f"{where}: input {entry['name']!r} is {entry['type']}, not {sockets[entry['name']]}"
                )
            if entry.get("link") is not None:
                linked.add(entry["name"])
        problems += [
            f"{where}: required input {name!r} is not connected" for name in sorted(required - linked)
        ]
        outputs = [str(t) for t in node_types[kind]["output"]]
        if [o["type"] for o in node.get("outputs", [])] != outputs:
            problems.append(f"{where}: outputs {[o['type'] for o in node.get('outputs', [])]} != {outputs}")
    for link_id, source, slot, target, target_slot, link_type in workflow["links"]:
        if source not in nodes or target not in nodes:
            problems.append(f"link {link_id}: unknown node")
            continue
        out = nodes[source].get("outputs", [])[slot]
        into = nodes[target].get("inputs", [])[target_slot]
        if link_id not in out["links"] or into["link"] != link_id:
            problems.append(f"link {link_id}: not recorded on both of its nodes")
        if not out["type"] == into["type"] == link_type:
            problems.append(f"link {link_id}: {out['type']} -> {into['type']} as {link_type}")
    return problems


def to_api_prompt(workflow: dict, node_types: dict[str, dict]) -> dict:
    """A UI-format workflow as the API prompt `/prompt` takes (what the editor's queue button
    sends): widget values named by `node_types` (`/object_info`: `class_type -> {"input": ...}`),
    sockets as `[source id, slot]`; frontend-only nodes left out."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY:
            continue
        inputs: dict[str, object] = {}
        values = iter(node.get("widgets_values") or [])
        for name, spec_kind, options in _inputs(node_types[kind]["input"]):
            if not _is_widget(spec_kind):
                continue
            inputs[name] = next(values)
            if options.get("control_after_generate") or options.get("image_upload"):
                next(values)  # the editor's extra widget (seed control, upload button)
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                _, source, slot, _, _, _ = links[entry["link"]]
                inputs[entry["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt
