"""Workflows: job invocations (with matrix copies), ``requires``, filters,
contexts, approval jobs, ``when``/``unless``, triggers; jobs in a
deterministic topological order."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from circlet import plan
from circlet.config import matrix as matrix_mod
from circlet.config.context import Context, string_list, text, without
from circlet.config.jobs import JobCompiler
from circlet.config.load import YList, YMap
from circlet.config.logic import LogicEvaluator
from circlet.config.namespace import MissingOrb, Namespace, missing_orb_message
from circlet.plan import Location

WORKFLOW_KEYS = frozenset({"jobs", "triggers", "when", "unless", "max_auto_reruns"})
RESERVED_ARGS = frozenset(
    {"requires", "name", "context", "filters", "type", "matrix", "pre-steps", "post-steps",
     "serial-group", "max_auto_reruns"}
)  # fmt: skip
STATUSES = ("success", "failed", "canceled", "not_run", "unauthorized")
# "terminal" is CircleCI's shorthand for any final status.
TERMINAL = ("success", "failed", "canceled", "not_run")
IMPLICIT_WORKFLOW = "workflow"


@dataclass
class _Entry:
    """A workflow job before ``requires`` are resolved."""

    node: plan.JobNode
    requires: list[tuple[str, tuple[str, ...], Location | None, str]] = field(default_factory=list)
    index: int = 0


class WorkflowCompiler:
    """Compiles the ``workflows`` section."""

    def __init__(self, ctx: Context, ns: Namespace, jobs: JobCompiler) -> None:
        self.ctx = ctx
        self.ns = ns
        self.jobs = jobs

    def compile_all(self, root: YMap) -> list[plan.Workflow]:
        """Every workflow; the implicit one for a config with only a ``build`` job."""
        ctx = self.ctx
        workflows = root.get("workflows")
        if workflows is None:
            return self._implicit(root)
        if not isinstance(workflows, YMap):
            ctx.error(
                "workflows must be a mapping of names", root.key_loc("workflows"), "workflows"
            )
            return []
        out = []
        for name, body in workflows.items():
            if name == "version":  # legacy `workflows: version: 2`
                continue
            path = f"workflows.{name}"
            if not isinstance(body, YMap):
                ctx.error(
                    f"workflow {name!r} must be a mapping with 'jobs'",
                    workflows.key_loc(name),
                    path,
                )
                continue
            wf = self.workflow(name, body, workflows.key_loc(name), path)
            if wf is not None:
                out.append(wf)
        if not out and not ctx.problems.has_errors:
            ctx.error("the config has no workflows", root.key_loc("workflows"), "workflows")
        return out

    def _implicit(self, root: YMap) -> list[plan.Workflow]:
        ctx = self.ctx
        build = self.ns.find("jobs", "build")
        if build is None or isinstance(build, MissingOrb):
            ctx.error("the config has no workflows and no 'build' job", root.loc(), "")
            return []
        compiled = self.jobs.compile(build, YMap(), where=build.location, path="jobs.build")
        if compiled is None:
            return []
        filters = plan.Filters()
        if "branches" in build.body:  # 2.0 job-level branch filter
            branches = self._btf(
                build.body["branches"], build.body.key_loc("branches"), "jobs.build.branches"
            )
            filters = plan.Filters(branches=branches)
        node = plan.JobNode(name="build", job=compiled[0], filters=filters, location=build.location)
        return [plan.Workflow(name=IMPLICIT_WORKFLOW, jobs=(node,), location=build.location)]

    def workflow(
        self, name: str, body: YMap, where: Location | None, path: str
    ) -> plan.Workflow | None:
        """One workflow."""
        ctx = self.ctx
        ctx.check_keys(body, WORKFLOW_KEYS, f"workflow {name!r}", path)
        enabled = True
        logic = LogicEvaluator(ctx.problems, ctx.base)
        for key in ("when", "unless"):
            if key in body:
                value = ctx.subst.value(body[key], ctx.base, body.key_loc(key), f"{path}.{key}")
                if isinstance(value, YMap) and "condition" in value:
                    ctx.error(
                        f"a workflow's {key} takes a logic statement directly, without 'condition'",
                        body.key_loc(key),
                        f"{path}.{key}",
                    )
                    value = value["condition"]
                truth = logic.truth(value, body.key_loc(key), f"{path}.{key}")
                enabled = enabled and (truth if key == "when" else not truth)
        wf_reruns = self._reruns(body, path)
        jobs = body.get("jobs")
        if not isinstance(jobs, YList):
            ctx.error(f"workflow {name!r} needs a 'jobs' list", body.loc() or where, path)
            return None
        if not jobs:
            ctx.warning(
                f"workflow {name!r} has no jobs; it does nothing", body.key_loc("jobs"), path
            )
        entries: list[_Entry] = []
        aliases: dict[str, list[str]] = {}
        for i, item in enumerate(jobs):
            for entry in self.invocations(
                item, jobs.item_loc(i), f"{path}.jobs[{i}]", aliases, wf_reruns
            ):
                entry.index = len(entries)
                entries.append(entry)
        nodes = self._resolve(name, entries, aliases, path)
        triggers = self._triggers(
            body.get("triggers"), body.key_loc("triggers"), f"{path}.triggers"
        )
        return plan.Workflow(
            name=name, jobs=nodes, enabled=enabled, triggers=triggers, location=where
        )

    # ------------------------------------------------------------ invocations

    def invocations(
        self,
        item: Any,
        where: Location | None,
        path: str,
        aliases: dict[str, list[str]],
        reruns: int,
    ) -> list[_Entry]:
        """The nodes of one ``jobs:`` entry (several for a matrix)."""
        ctx = self.ctx
        if isinstance(item, str):
            job_name, args = item, YMap()
        elif isinstance(item, YMap) and len(item) == 1:
            ((job_name, args),) = item.items()
            where = item.key_loc(job_name)
            if args is None:
                args = YMap()
            if not isinstance(args, YMap):
                ctx.error(f"the arguments of job {job_name!r} must be a mapping", where, path)
                return []
        else:
            ctx.error(
                "a workflow job is a job name or a one-key mapping of name to arguments",
                where,
                path,
            )
            return []
        path = f"{path}.{job_name}"
        combos: tuple[dict[str, Any] | None, ...] = (None,)
        alias = job_name
        if "matrix" in args:
            if not ctx.v21:
                ctx.error("matrix needs version 2.1", args.key_loc("matrix"), path)
            raw = ctx.subst.value(
                args["matrix"], ctx.base, args.key_loc("matrix"), f"{path}.matrix"
            )
            expanded = matrix_mod.expand(
                ctx, raw, job_name, args.key_loc("matrix"), f"{path}.matrix"
            )
            combos = expanded.combos
            alias = expanded.alias or job_name
            aliases.setdefault(alias, [])
        out = []
        rest = without(args, "matrix")
        for combo in combos:
            b = replace(ctx.base, matrix=combo) if combo is not None else ctx.base
            sub = ctx.subst.value(rest, b, where, path)
            entry = self._entry(job_name, sub, combo, where, path, wf_reruns=reruns)
            if entry is None:
                continue
            if combo is not None:
                aliases[alias].append(entry.node.name)
            out.append(entry)
        return out

    def _entry(
        self,
        job_name: str,
        args: YMap,
        combo: dict[str, Any] | None,
        where: Location | None,
        path: str,
        *,
        wf_reruns: int,
    ) -> _Entry | None:
        ctx = self.ctx
        node_name: str | None
        if "name" in args:
            node_name = text(ctx, args["name"], "name", args.key_loc("name"), f"{path}.name")
        elif combo is not None:
            node_name = matrix_mod.default_name(job_name, combo)
        else:
            node_name = job_name
        if node_name is None:
            return None
        job_args = args.derive()
        for key, value in args.items():
            if key not in RESERVED_ARGS:
                job_args[key] = value
        if combo:
            for key, value in combo.items():
                job_args[key] = value
        kind = args.get("type", "build")
        if kind not in ("build", "approval"):
            ctx.error(
                f"workflow job type must be approval, got {kind!r}", args.key_loc("type"), path
            )
            kind = "build"
        contexts: tuple[str, ...] = ()
        if "context" in args:
            contexts = string_list(
                ctx, args["context"], "context", args.key_loc("context"), f"{path}.context"
            )
        filters = self._filters(args.get("filters"), args.key_loc("filters"), f"{path}.filters")
        serial = None
        if "serial-group" in args:
            serial = text(
                ctx, args["serial-group"], "serial-group", args.key_loc("serial-group"), path
            )
        reruns = self._reruns(args, path, default=wf_reruns)
        common: dict[str, Any] = {
            "name": node_name,
            "contexts": contexts,
            "filters": filters,
            "matrix": dict(combo or {}),
            "serial_group": serial,
            "max_auto_reruns": reruns,
            "location": where,
        }
        if kind == "approval":
            job = plan.JobSpec(name=job_name, executor=None, location=where)
            node = plan.JobNode(job=job, type="approval", **{**common, "max_auto_reruns": 0})
        else:
            found = self.ns.find("jobs", job_name)
            compiled = None
            if isinstance(found, MissingOrb):
                ctx.error(missing_orb_message(found), where, path)
            elif found is None:
                ctx.error(f"unknown job {job_name!r}", where, path)
            else:
                compiled = self.jobs.compile(
                    found,
                    job_args,
                    pre_steps=args.get("pre-steps"),
                    post_steps=args.get("post-steps"),
                    where=where,
                    path=path,
                )
            # A job that failed to compile (an error is recorded) keeps its
            # place, so that jobs requiring it report no second error.
            spec, job_type = compiled or (plan.JobSpec(name=job_name, executor=None), "build")
            node = plan.JobNode(job=spec, type=job_type, **common)
        entry = _Entry(node)
        entry.requires = self._requires(
            args.get("requires"), args.key_loc("requires"), f"{path}.requires"
        )
        return entry

    def _reruns(self, mapping: YMap, path: str, default: int = 0) -> int:
        value = mapping.get("max_auto_reruns", default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5:
            self.ctx.error(
                "max_auto_reruns must be an integer from 0 to 5",
                mapping.key_loc("max_auto_reruns"),
                f"{path}.max_auto_reruns",
            )
            return default
        return value

    # ------------------------------------------------------------ requires

    def _requires(
        self, raw: Any, where: Location | None, path: str
    ) -> list[tuple[str, tuple[str, ...], Location | None, str]]:
        ctx = self.ctx
        if raw is None:
            return []
        if not isinstance(raw, YList):
            ctx.error("requires must be a list of job names", where, path)
            return []
        out: list[tuple[str, tuple[str, ...], Location | None, str]] = []
        for i, item in enumerate(raw):
            loc, ipath = raw.item_loc(i), f"{path}[{i}]"
            if isinstance(item, str):
                out.append((item, ("success",), loc, ipath))
            elif isinstance(item, YMap) and len(item) == 1:
                ((name, statuses),) = item.items()
                values = string_list(ctx, statuses, "status", item.key_loc(name), ipath)
                expanded: list[str] = []
                for status in values:
                    if status == "terminal":
                        expanded.extend(TERMINAL)
                    elif status in STATUSES:
                        expanded.append(status)
                    else:
                        ctx.error(
                            f"unknown job status {status!r} "
                            f"(expected {', '.join(STATUSES)} or terminal)",
                            item.key_loc(name),
                            ipath,
                        )
                out.append((name, tuple(dict.fromkeys(expanded)) or ("success",), loc, ipath))
            else:
                ctx.error("a requires entry is a job name or {job: status}", loc, ipath)
        return out

    def _resolve(
        self, wf: str, entries: list[_Entry], aliases: dict[str, list[str]], path: str
    ) -> tuple[plan.JobNode, ...]:
        ctx = self.ctx
        by_name: dict[str, _Entry] = {}
        for entry in entries:
            if entry.node.name in by_name:
                ctx.error(
                    f"duplicate job name {entry.node.name!r} in workflow {wf!r} "
                    "(give each a unique name:)",
                    entry.node.location,
                    path,
                )
                continue
            by_name[entry.node.name] = entry
        kept = list(by_name.values())
        edges: dict[str, list[str]] = {}
        for entry in kept:
            reqs: dict[str, tuple[str, ...]] = {}
            for name, statuses, loc, rpath in entry.requires:
                if name in by_name:
                    targets = [name]
                elif name in aliases:
                    targets = aliases[name]
                else:
                    ctx.error(
                        f"job {entry.node.name!r} requires {name!r}, "
                        f"which is not in workflow {wf!r}",
                        loc,
                        rpath,
                    )
                    continue
                for target in targets:
                    if target == entry.node.name:
                        ctx.error(f"job {target!r} requires itself", loc, rpath)
                        continue
                    reqs[target] = statuses
            entry.node = replace(
                entry.node, requires=tuple(plan.Requirement(n, s) for n, s in reqs.items())
            )
            edges[entry.node.name] = list(reqs)
        order = _toposort([e.node.name for e in kept], edges)
        if order is None:
            cycle = _find_cycle(edges)
            first = by_name[cycle[0]]
            ctx.error(
                f"requires cycle in workflow {wf!r}: {' -> '.join(cycle)}",
                first.node.location,
                path,
            )
            return tuple(e.node for e in kept)
        return tuple(by_name[n].node for n in order)

    # ------------------------------------------------------------ filters

    def _filters(self, raw: Any, where: Location | None, path: str) -> plan.Filters:
        ctx = self.ctx
        if raw is None:
            return plan.Filters()
        if not isinstance(raw, YMap):
            ctx.error("filters must be a mapping with branches and/or tags", where, path)
            return plan.Filters()
        ctx.check_keys(raw, {"branches", "tags"}, "filters", path)
        branches = tags = None
        if "branches" in raw:
            branches = self._btf(raw["branches"], raw.key_loc("branches"), f"{path}.branches")
        if "tags" in raw:
            tags = self._btf(raw["tags"], raw.key_loc("tags"), f"{path}.tags")
        return plan.Filters(branches=branches, tags=tags)

    def _btf(self, raw: Any, where: Location | None, path: str) -> plan.BranchTagFilter | None:
        ctx = self.ctx
        if raw is None:
            return None
        if not isinstance(raw, YMap):
            ctx.error("a branch/tag filter is a mapping with only and/or ignore", where, path)
            return None
        ctx.check_keys(raw, {"only", "ignore"}, "branch/tag filter", path)
        result: dict[str, tuple[str, ...]] = {}
        for key in ("only", "ignore"):
            values: tuple[str, ...] = ()
            if raw.get(key) is not None:
                values = string_list(ctx, raw[key], key, raw.key_loc(key), f"{path}.{key}")
            for value in values:
                if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
                    try:
                        re.compile(value[1:-1])
                    except re.error as exc:
                        ctx.error(
                            f"invalid regular expression {value}: {exc}",
                            raw.key_loc(key),
                            f"{path}.{key}",
                        )
            result[key] = values
        return plan.BranchTagFilter(only=result["only"], ignore=result["ignore"])

    def _triggers(
        self, raw: Any, where: Location | None, path: str
    ) -> tuple[plan.ScheduleTrigger, ...]:
        ctx = self.ctx
        if raw is None:
            return ()
        if not isinstance(raw, YList):
            ctx.error("triggers must be a list", where, path)
            return ()
        out = []
        for i, item in enumerate(raw):
            ipath = f"{path}[{i}]"
            schedule = item.get("schedule") if isinstance(item, YMap) else None
            if not isinstance(schedule, YMap) or not isinstance(schedule.get("cron"), str):
                ctx.error(
                    "a trigger is {schedule: {cron: '…', filters: …}}", raw.item_loc(i), ipath
                )
                continue
            ctx.check_keys(item, {"schedule"}, "trigger", ipath)
            ctx.check_keys(schedule, {"cron", "filters"}, "schedule", f"{ipath}.schedule")
            sub = ctx.subst.value(schedule, ctx.base, schedule.loc(), f"{ipath}.schedule")
            filters = self._filters(
                sub.get("filters"), sub.key_loc("filters"), f"{ipath}.schedule.filters"
            )
            cron = text(
                ctx, sub["cron"], "cron", schedule.key_loc("cron"), f"{ipath}.schedule.cron"
            )
            out.append(plan.ScheduleTrigger(cron=cron or "", filters=filters))
        return tuple(out)


def _toposort(names: list[str], edges: dict[str, list[str]]) -> list[str] | None:
    """Kahn's algorithm; among ready jobs the one declared first goes first."""
    position = {n: i for i, n in enumerate(names)}
    remaining = {n: len(edges.get(n, [])) for n in names}
    dependents: dict[str, list[str]] = {n: [] for n in names}
    for node, reqs in edges.items():
        for req in reqs:
            dependents[req].append(node)
    ready = sorted((n for n, c in remaining.items() if c == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for dep in dependents[current]:
            remaining[dep] -= 1
            if remaining[dep] == 0:
                ready.append(dep)
                ready.sort(key=position.__getitem__)
    return order if len(order) == len(names) else None


def _find_cycle(edges: dict[str, list[str]]) -> list[str]:
    """One cycle, as ``[a, b, …, a]`` (a requires b requires … a)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in edges:
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []
