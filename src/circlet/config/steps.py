"""Steps: built-in steps to Plan steps; commands, ``when``/``unless`` and
``steps`` parameters expanded and flattened."""

from __future__ import annotations

import re
from typing import Any

from circlet import plan
from circlet.config.context import Context, environment, string_list, text
from circlet.config.load import YList, YMap
from circlet.config.logic import LogicEvaluator
from circlet.config.namespace import (
    Definition,
    MissingOrb,
    Namespace,
    missing_orb_message,
    scoped,
)
from circlet.config.params import bind
from circlet.config.subst import Bindings
from circlet.plan import Location

_MAX_COMMAND_DEPTH = 50
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_WHEN = ("on_success", "always", "on_fail")
_RUN_KEYS = frozenset(
    {
        "command", "name", "shell", "environment", "background", "working_directory",
        "no_output_timeout", "when", "max_auto_reruns", "auto_rerun_delay",
    }
)  # fmt: skip
_BUILTIN_KEYS: dict[str, frozenset[str]] = {
    "checkout": frozenset({"name", "path", "method", "when"}),
    "save_cache": frozenset({"name", "key", "paths", "when"}),
    "restore_cache": frozenset({"name", "key", "keys", "when"}),
    "persist_to_workspace": frozenset({"name", "root", "paths", "when"}),
    "attach_workspace": frozenset({"name", "at", "when"}),
    "store_artifacts": frozenset({"name", "path", "destination", "when"}),
    "store_test_results": frozenset({"name", "path", "when"}),
    "add_ssh_keys": frozenset({"name", "fingerprints", "when"}),
    "setup_remote_docker": frozenset(
        {"name", "version", "docker_layer_caching", "reusable", "exclusive", "when"}
    ),
}
# Built-in steps that may be written as a bare string.
_BARE_OK = ("checkout", "add_ssh_keys", "setup_remote_docker")


def parse_duration(value: Any) -> float | None:
    """``"10m"``, ``"1h30m"``, ``"1.5h"``, ``"45s"`` → seconds; None when malformed."""
    if not isinstance(value, str) or not _DURATION.fullmatch(value.strip()):
        return None
    return sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(value))


class StepCompiler:
    """Turns a (substituted) ``steps`` list into Plan steps."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def steps(
        self,
        raw: Any,
        ns: Namespace,
        b: Bindings,
        path: str,
        where: Location | None,
        *,
        depth: int = 0,
    ) -> list[plan.Step]:
        """Compile a step list; nested lists (spliced ``steps`` parameters) are flattened."""
        out: list[plan.Step] = []
        if raw is None:
            return out
        ns = getattr(raw, "namespace", ns)  # steps given as an argument
        if not isinstance(raw, YList):
            self.ctx.error("steps must be a list", where, path)
            return out
        for i, item in enumerate(raw):
            loc = raw.item_loc(i)
            ipath = f"{path}[{i}]"
            if isinstance(item, YList):  # a steps parameter spliced in place
                out.extend(self.steps(item, ns, b, ipath, loc, depth=depth))
            else:
                out.extend(self.step(item, ns, b, ipath, loc, depth=depth))
        return out

    def step(
        self, item: Any, ns: Namespace, b: Bindings, path: str, loc: Location | None, *, depth: int
    ) -> list[plan.Step]:
        """One step entry, which may expand to several (a command, a ``when``)."""
        ctx = self.ctx
        if isinstance(item, str):
            name, args = item, None
        elif isinstance(item, YMap) and len(item) == 1:
            ((name, args),) = item.items()
            loc = item.key_loc(name)
        elif isinstance(item, YMap):
            ctx.error(
                f"a step has exactly one key (its type), got {len(item)}: {', '.join(item)}",
                item.loc() or loc,
                path,
            )
            return []
        else:
            ctx.error(f"a step must be a string or a mapping, got {item!r}", loc, path)
            return []
        spath = f"{path}.{name}"
        if name in ("run", "deploy"):
            step = self.run(args, spath, loc)
            return [step] if step is not None else []
        if name in _BUILTIN_KEYS:
            if args is None:
                if isinstance(item, str) and name not in _BARE_OK:
                    ctx.error(f"step {name!r} needs arguments", loc, spath)
                    return []
                args = YMap()
            elif not isinstance(args, YMap):
                ctx.error(f"arguments of step {name!r} must be a mapping", loc, spath)
                return []
            built = self.builtin(name, args, spath, loc)
            return [built] if built is not None else []
        if name in ("when", "unless") and ctx.v21:
            return self.conditional(name, args, ns, b, path=spath, loc=loc, depth=depth)
        if name == "steps" and ctx.v21:
            return self.steps(args, ns, b, spath, loc, depth=depth)
        if not ctx.v21:
            ctx.error(f"unknown step {name!r} (commands need version 2.1)", loc, spath)
            return []
        return self.command(name, args, ns, path, loc, depth=depth)

    # ------------------------------------------------------------------ commands

    def command(
        self, name: str, args: Any, ns: Namespace, path: str, loc: Location | None, *, depth: int
    ) -> list[plan.Step]:
        """Expand a command invocation into its steps."""
        ctx = self.ctx
        found = ns.find("commands", name)
        if isinstance(found, MissingOrb):
            ctx.error(missing_orb_message(found), loc, path)
            return []
        if found is None:
            ctx.error(f"unknown step or command {name!r}", loc, path)
            return []
        if depth >= _MAX_COMMAND_DEPTH:
            ctx.error(f"command {name!r} expands too deeply (does it call itself?)", loc, path)
            return []
        if args is None:
            args = YMap()
        if not isinstance(args, YMap):
            ctx.error(f"arguments of command {name!r} must be a mapping", loc, path)
            return []
        b2 = self.bindings_for(found, args, loc, path, caller=ns)
        body = found.body
        ctx.check_keys(body, {"parameters", "steps", "description"}, found.label, found.path)
        if "steps" not in body:
            ctx.error(f"{found.label} has no steps", found.location, found.path)
            return []
        steps = ctx.subst.value(body["steps"], b2, body.key_loc("steps"), f"{found.path}.steps")
        return self.steps(
            steps,
            found.namespace,
            b2,
            f"{found.path}.steps",
            body.key_loc("steps"),
            depth=depth + 1,
        )

    def bindings_for(
        self, defn: Definition, args: YMap, loc: Location | None, path: str, *, caller: Namespace
    ) -> Bindings:
        """Bind ``args`` to ``defn``'s parameters; defaults get pipeline values.

        ``steps`` and ``executor`` arguments remember ``caller``, the namespace
        they were written in, to resolve the names in them there.
        """
        ctx = self.ctx
        specs = defn.params(ctx.problems)
        bound = bind(
            specs,
            args,
            owner=defn.label,
            problems=ctx.problems,
            where=loc,
            path=path,
            arg_locs=args,
        )
        for pname, value in bound.items():
            if pname in args:
                bound[pname] = scoped(specs[pname].type, value, caller)
            elif isinstance(value, str | YMap | YList):
                bound[pname] = ctx.subst.value(
                    value, ctx.base, specs[pname].location, f"{defn.path}.parameters.{pname}"
                )
        return ctx.base.with_params(bound, defn.label)

    # ------------------------------------------------------------------ when

    def conditional(
        self,
        kind: str,
        args: Any,
        ns: Namespace,
        b: Bindings,
        *,
        path: str,
        loc: Location | None,
        depth: int,
    ) -> list[plan.Step]:
        """``when``/``unless`` steps: evaluated now, their steps flattened in."""
        ctx = self.ctx
        if not isinstance(args, YMap) or "condition" not in args or "steps" not in args:
            ctx.error(f"'{kind}' step needs 'condition' and 'steps'", loc, path)
            return []
        ctx.check_keys(args, {"condition", "steps"}, f"{kind} step", path)
        truth = LogicEvaluator(ctx.problems, b).truth(
            args["condition"], args.key_loc("condition"), f"{path}.condition"
        )
        if truth != (kind == "when"):
            return []
        return self.steps(args["steps"], ns, b, f"{path}.steps", args.key_loc("steps"), depth=depth)

    # ------------------------------------------------------------------ built-ins

    def _when(self, args: YMap, path: str) -> plan.StepWhen:
        value = args.get("when", "on_success")
        if value not in _WHEN:
            self.ctx.error(
                f"when must be one of {', '.join(_WHEN)}, got {value!r}",
                args.key_loc("when"),
                f"{path}.when",
            )
            return "on_success"
        return value  # type: ignore[no-any-return]

    def _name(self, args: YMap, default: str, path: str) -> str:
        if "name" not in args:
            return default
        return text(self.ctx, args["name"], "name", args.key_loc("name"), f"{path}.name") or default

    def run(self, args: Any, path: str, loc: Location | None) -> plan.RunStep | None:
        """A ``run`` step (``deploy`` is its deprecated alias)."""
        ctx = self.ctx
        if isinstance(args, str | int | float) and not isinstance(args, bool):
            line = str(args)
            return plan.RunStep(name=_default_name(line), command=line)
        if not isinstance(args, YMap):
            ctx.error("run takes a command string or a mapping with 'command'", loc, path)
            return None
        ctx.check_keys(args, _RUN_KEYS, "run step", path)
        if args.get("command") is None:
            ctx.error("run step has no 'command'", args.loc() or loc, path)
            return None
        command = text(
            ctx, args.get("command"), "command", args.key_loc("command"), f"{path}.command"
        )
        if command is None:
            return None
        timeout = plan.DEFAULT_NO_OUTPUT_TIMEOUT
        if "no_output_timeout" in args:
            parsed = parse_duration(args["no_output_timeout"])
            if parsed is None:
                ctx.error(
                    f"no_output_timeout {args['no_output_timeout']!r} is not a duration "
                    "like 20m, 1.5h or 30s",
                    args.key_loc("no_output_timeout"),
                    f"{path}.no_output_timeout",
                )
            else:
                timeout = parsed
        background = args.get("background", False)
        if not isinstance(background, bool):
            ctx.error("background must be true or false", args.key_loc("background"), path)
            background = False
        reruns = args.get("max_auto_reruns", 0)
        if not isinstance(reruns, int) or isinstance(reruns, bool) or not 0 <= reruns <= 5:
            ctx.error(
                "max_auto_reruns must be an integer from 0 to 5",
                args.key_loc("max_auto_reruns"),
                path,
            )
            reruns = 0
        return plan.RunStep(
            name=self._name(args, _default_name(command), path),
            command=command,
            shell=text(
                ctx, args.get("shell"), "shell", args.key_loc("shell"), path, allow_none=True
            ),
            working_directory=text(
                ctx,
                args.get("working_directory"),
                "working_directory",
                args.key_loc("working_directory"),
                path,
                allow_none=True,
            ),
            environment=environment(
                ctx, args.get("environment"), args.key_loc("environment"), f"{path}.environment"
            ),
            background=background,
            no_output_timeout=timeout,
            max_auto_reruns=reruns,
            when=self._when(args, path),
        )

    def builtin(self, kind: str, args: YMap, path: str, loc: Location | None) -> plan.Step | None:
        """Any other built-in step."""
        ctx = self.ctx
        ctx.check_keys(args, _BUILTIN_KEYS[kind], f"{kind} step", path)
        when = self._when(args, path)

        def need(key: str) -> Any:
            if key not in args:
                ctx.error(f"{kind} step needs {key!r}", args.loc() or loc, path)
                return None
            return args[key]

        def opt_text(key: str) -> str | None:
            return text(
                ctx, args.get(key), key, args.key_loc(key), f"{path}.{key}", allow_none=True
            )

        def req_text(key: str) -> str | None:
            value = need(key)
            if value is None:
                return None
            return text(ctx, value, key, args.key_loc(key), f"{path}.{key}")

        def paths(key: str) -> tuple[str, ...]:
            value = need(key)
            return (
                ()
                if value is None
                else string_list(ctx, value, key, args.key_loc(key), f"{path}.{key}")
            )

        if kind == "checkout":
            method = args.get("method", "full")
            if method not in ("full", "blobless"):
                ctx.error("checkout method must be full or blobless", args.key_loc("method"), path)
                method = "full"
            return plan.CheckoutStep(
                name=self._name(args, "Checkout code", path),
                path=opt_text("path"),
                method=method,
                when=when,
            )
        if kind == "save_cache":
            key, p = req_text("key"), paths("paths")
            if key is None:
                return None
            return plan.SaveCacheStep(
                key=key, paths=p, name=self._name(args, "Saving cache", path), when=when
            )
        if kind == "restore_cache":
            keys: list[str] = []
            if "key" in args:
                keys.extend(
                    string_list(ctx, args["key"], "key", args.key_loc("key"), f"{path}.key")
                )
            if "keys" in args:
                keys.extend(
                    string_list(ctx, args["keys"], "keys", args.key_loc("keys"), f"{path}.keys")
                )
            if not keys:
                ctx.error("restore_cache step needs 'key' or 'keys'", args.loc() or loc, path)
                return None
            return plan.RestoreCacheStep(
                keys=tuple(keys), name=self._name(args, "Restoring cache", path), when=when
            )
        if kind == "persist_to_workspace":
            root, p = req_text("root"), paths("paths")
            if root is None:
                return None
            return plan.PersistToWorkspaceStep(
                root=root,
                paths=p,
                name=self._name(args, "Persisting to workspace", path),
                when=when,
            )
        if kind == "attach_workspace":
            at = req_text("at")
            if at is None:
                return None
            return plan.AttachWorkspaceStep(
                at=at, name=self._name(args, "Attaching workspace", path), when=when
            )
        if kind == "store_artifacts":
            p1 = req_text("path")
            if p1 is None:
                return None
            return plan.StoreArtifactsStep(
                path=p1,
                destination=opt_text("destination"),
                name=self._name(args, "Uploading artifacts", path),
                when=when,
            )
        if kind == "store_test_results":
            p1 = req_text("path")
            if p1 is None:
                return None
            return plan.StoreTestResultsStep(
                path=p1, name=self._name(args, "Uploading test results", path), when=when
            )
        if kind == "add_ssh_keys":
            fps = args.get("fingerprints")
            return plan.AddSshKeysStep(
                fingerprints=()
                if fps is None
                else string_list(ctx, fps, "fingerprints", args.key_loc("fingerprints"), path),
                name=self._name(args, "Install additional SSH keys", path),
                when=when,
            )
        # setup_remote_docker
        dlc = args.get("docker_layer_caching", False)
        if not isinstance(dlc, bool):
            ctx.error(
                "docker_layer_caching must be true or false",
                args.key_loc("docker_layer_caching"),
                path,
            )
            dlc = False
        return plan.SetupRemoteDockerStep(
            version=opt_text("version"),
            docker_layer_caching=dlc,
            name=self._name(args, "Setup a remote Docker engine", path),
            when=when,
        )


def _default_name(command: str) -> str:
    """CircleCI names an unnamed run step after its command (config reference:
    "default: full command"), without the trailing newline of a ``|`` block."""
    return command.rstrip() or command
