"""Search by example and `library:auto` routing over one entry per query distribution (grounding, a suite task, a
style, safety). Entries whose tasks share the very same queries (the two styles answer "Describe the image.",
the suite tasks all ask "Which word goes with this picture?") cannot be told apart by any example, so the routing
library holds one of each. A routed entry that carries a condition is still gated by it."""

from __future__ import annotations

from pathlib import Path

from m2iv.evaluate.steering.common import Runner, standard_error

ROUTED = {"sandbox-grounding": "grounding", "sandbox-colour-nonce": "colour-nonce",
          "sandbox-style-caps": "style-caps", "sandbox-safety": "safety"}


def routing_library(r: Runner, lib, vec_dirs: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A library of one entry per routed task, each with its task prototype; (root, name -> entry id)."""
    from m2iv.data.tasks import get_task
    from m2iv.library.store import Library

    for task, name in ROUTED.items():
        e = next((x for x in lib.entries() if x.name == name), None) or lib.add(vec_dirs[task], name=name, task=task,
                                                                                tags=("sandbox",))
        if e.prototype is None:
            lib.add_prototype_from_task(e.id, r.lm, get_task(task), seed=r.seed)
    root = r.work / "library-apps" / "routing-library"
    with Library(root) as route_lib:
        for task, name in ROUTED.items():
            if not [e for e in route_lib.entries() if e.name == name]:
                src = lib.get(name)
                e = route_lib.add(r.export(lib, name), name=name, task=task, tags=tuple(src.tags))
                route_lib.set_prototype(e.id, src.prototype, src.prototype_info)
        return root, {e.name: e.id for e in route_lib.entries()}


def search_and_routing(r: Runner, lib, vec_dirs: dict[str, str], search_n: int) -> tuple[dict, list[dict]]:
    from m2iv.data.tasks import get_task
    from m2iv.library.store import Library

    root, want = routing_library(r, lib, vec_dirs)
    per_task: list[dict] = []
    with Library(root) as route_lib:
        for task, name in ROUTED.items():
            test = get_task(task).splits(None, seed=r.seed)["test"][:search_n]
            hits = sum(g == want[name] for g in route_lib.route(r.lm, test))
            per_task.append({"task": task, "entry": name, "n": len(test), "top1": round(hits / len(test), 4)})
            r.log(f"[search] {task}: {hits}/{len(test)} routed to {name}")
        members = [{"name": e.name, "task": e.task} for e in route_lib.entries()]
    total = sum(s["n"] for s in per_task)
    top1 = round(sum(s["top1"] * s["n"] for s in per_task) / total, 4)
    search = {"per_task": per_task, "top1": top1, "n": total, "se": standard_error(top1, total), "library": members}
    routing = []
    for task, name in ROUTED.items():
        hand, _, hand_cmd = r.run(task, "hand", str(r.export(lib, name)))
        auto, preds, auto_cmd = r.run(task, "library-auto", "library:auto", library_root=root)
        routed_right = sum(p.get("route") == want[name] for p in preds) / max(len(preds), 1)
        routing.append({"task": task, "metric": auto["metric"], "hand_vector": round(hand["score"], 4),
                        "library_auto": round(auto["score"], 4), "routed_to_own_entry": round(routed_right, 4),
                        "n": auto["n"], "se": standard_error(round(auto["score"], 4), auto["n"]),
                        "command": f"M2IV_LIBRARY={root} {auto_cmd}", "hand_command": hand_cmd})
    return search, routing


__all__ = ["ROUTED", "search_and_routing"]
