"""From a schema-valid document to the typed :class:`Scenario` (and the semantic checks).

Schema validation has already guaranteed shapes and types; this pass resolves names to
values (statuses, flags), checks what a schema cannot (names bound before use, requirement
IDs in the catalogue, token-spec sources), and works out which capabilities the steps imply.
"""

from __future__ import annotations

from typing import Any

from adapters import constants as const
from adapters import status as st
from conformance.requirements import load_catalogue
from conformance.scenario import model as m
from conformance.scenario.errors import LoadError
from conformance.scenario.validate import path_text
from conformance.scenario.yamlsafe import Locations

RESERVED = frozenset({"null", "bogus"})
WORDS = frozenset({"success", "failure", "any"})
KIND_WORDS = {"ctx": "an async context", "cred": "a credential", "context": "a security context",
              "token": "a token"}

# Capabilities a step implies (docs/scenarios.md, "requires").
IMPLIED = {
    "complete": ("completion-control",),
    "mode": ("completion-control",),
    "inject_fault": ("fault-injection",),
    "requires_notify": ("requires-notify",),
    "initialize": ("client",),
    "accept": ("server",),
    "handshake": ("client", "server"),
    "query_sizes": ("stream",),
    "encrypt": ("stream",),
    "decrypt": ("stream",),
    "shutdown": ("stream",),
}


def status_set(raw: Any) -> m.StatusSet:
    items = raw if isinstance(raw, list) else [raw]
    values: set[int] = set()
    words: set[str] = set()
    texts: list[str] = []
    for item in items:
        if isinstance(item, str) and item in WORDS:
            words.add(item)
            texts.append(item)
        else:
            value = st.parse(item)
            values.add(value)
            texts.append(st.describe(value))
    text = texts[0] if len(texts) == 1 else "any of " + ", ".join(texts)
    return m.StatusSet(frozenset(values), frozenset(words), text)


OK = status_set("SEC_E_OK")
SUCCESS = status_set("success")


class _Compiler:
    def __init__(self, file: str, locs: Locations) -> None:
        self.file = file
        self.locs = locs
        self.bound: dict[str, str] = {}  # name -> kind
        self.catalogue = load_catalogue()

    def error(self, path: tuple[Any, ...], message: str, at_key: bool = False) -> LoadError:
        line, column = self.locs.key(path) if at_key else self.locs.of(path)
        where = path_text(path)
        return LoadError(self.file, line, column, f"{where}: {message}" if where else message)

    # ---- names -----------------------------------------------------------------------------
    def use(self, name: Any, kind: str, path: tuple[Any, ...]) -> str | None:
        """A handle reference that must already be bound (null and bogus always pass)."""
        if name is None:
            return None
        if name == "bogus":
            return name
        if name == "null":
            return None
        have = self.bound.get(name)
        if have is None:
            raise self.error(path, f"{name!r} is used before any step binds it (expected {KIND_WORDS[kind]})")
        if have != kind:
            raise self.error(path, f"{name!r} is {KIND_WORDS[have]}, not {KIND_WORDS[kind]}")
        return str(name)

    def bind(self, name: Any, kind: str, path: tuple[Any, ...]) -> str:
        if name in RESERVED:
            raise self.error(path, f"{name!r} is reserved and cannot be bound")
        have = self.bound.get(name)
        if have is not None and have != kind:
            raise self.error(path, f"{name!r} is already {KIND_WORDS[have]}, cannot rebind it as {KIND_WORDS[kind]}")
        self.bound[name] = kind
        return str(name)

    def maybe_bind(self, name: Any, kind: str, path: tuple[Any, ...]) -> str | None:
        """A name that is passed when bound and bound by the call otherwise (context, token)."""
        if name is None or name == "null":
            return None
        if name == "bogus":
            return "bogus"
        return self.bind(name, kind, path)

    # ---- values ------------------------------------------------------------------------------
    def token_spec(self, raw: Any, path: tuple[Any, ...]) -> m.TokenSpec | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            return m.TokenSpec("ref", name=str(self.use(raw, "token", path)))
        sources = [k for k in ("token", "hex", "garbage", "concat", "empty") if k in raw]
        if len(sources) != 1:
            raise self.error(path, "a token spec needs exactly one of token, hex, garbage, concat, empty"
                             + (f" (found {', '.join(sources)})" if sources else ""))
        source = sources[0]
        if source == "token":
            name = str(self.use(raw["token"], "token", (*path, "token")))
            cut = raw.get("slice")
            return m.TokenSpec("ref", name=name, truncate=raw.get("truncate"),
                               slice=(int(cut[0]), int(cut[1])) if cut else None, flip=raw.get("flip"))
        if source == "hex":
            return m.TokenSpec("hex", data=bytes.fromhex(raw["hex"]))
        if source == "garbage":
            return m.TokenSpec("garbage", count=int(raw["garbage"]))
        if source == "concat":
            parts = tuple(self.token_spec(p, (*path, "concat", i)) or m.TokenSpec("empty")
                          for i, p in enumerate(raw["concat"]))
            return m.TokenSpec("concat", parts=parts)
        return m.TokenSpec("empty")

    @staticmethod
    def output_spec(raw: Any) -> m.OutputSpec:
        if raw is None or raw == "none":
            return m.OutputSpec("none", 0)
        if "allocate" in raw:
            return m.OutputSpec("allocate", 0)
        return m.OutputSpec("size", int(raw["size"]))

    def outputs(self, raw: Any, table_name: str) -> m.OutputChecks | None:
        if raw is None:
            return None
        size = raw.get("token_size")
        lo = hi = None
        if isinstance(size, dict):
            lo, hi = size.get("min"), size.get("max")
        elif size is not None:
            lo = hi = int(size)
        table = getattr(const, table_name) if table_name else {}
        attrs = raw.get("attributes") or {}
        return m.OutputChecks(
            token=raw.get("token"), token_min=lo, token_max=hi, new_context=raw.get("new_context"),
            credential=raw.get("credential"), extra=raw.get("extra"), missing=raw.get("missing"),
            has=const.flags_value(attrs.get("has", []), table), lacks=const.flags_value(attrs.get("lacks", []), table),
            flag_table=table_name, expiry=raw.get("expiry"), written=raw.get("written"))

    # ---- steps ---------------------------------------------------------------------------------
    def step(self, index: int, raw: dict[str, Any], scenario_package: str, needs: set[str]) -> m.Step:
        path: tuple[Any, ...] = ("steps", index)
        action = next(k for k in raw if k in _BUILDERS)
        value = raw[action]
        vpath = (*path, action)
        needs.update(IMPLIED.get(action, ()))
        args, summary, expect = _BUILDERS[action](self, value, vpath, raw, scenario_package, needs)
        line, column = self.locs.key(vpath)
        completes = status_set(raw["completes"]) if "completes" in raw else None
        table = {"initialize": "ISC_RET", "accept": "ASC_RET"}.get(action, "")
        return m.Step(index=index, action=action, args=args, file=self.file, line=line, column=column,
                      summary=summary, expect=expect, completes=completes,
                      outputs=self.outputs(raw.get("outputs"), table), note=str(raw.get("note", "")))


def _ctx_only(kind_expect: str) -> Any:
    def build(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
        action = p[-1]
        ctx = c.use(v, "ctx", p)
        if kind_expect == "status":
            expect: Any = status_set(raw["expect"]) if "expect" in raw else None
        elif kind_expect == "ok":
            expect = status_set(raw["expect"]) if "expect" in raw else OK
        elif kind_expect == "success":
            expect = status_set(raw["expect"]) if "expect" in raw else SUCCESS
        elif kind_expect == "bool":
            expect = bool(raw["expect"])
        elif kind_expect == "int":
            expect = int(raw["expect"])
        else:
            expect = None
        return m.CtxOnly(ctx), f"{action} {v if v is not None else 'null'}", expect
    return build


def _create(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    expect_null = raw.get("expect", "handle") in (None, "null")
    return m.Create(c.bind(v, "ctx", p), expect_null), f"create {v}", None


def _set_callback(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    ctx = c.use(v, "ctx", p)
    data = raw["data"] if "data" in raw else v
    expect = status_set(raw["expect"]) if "expect" in raw else OK
    extra = f" on_callback={raw['on_callback']}" if raw.get("on_callback") else ""
    return m.SetCallback(ctx, data, raw.get("on_callback")), f"set_callback {v}{extra}", expect


def _op_expect(raw: dict[str, Any]) -> m.StatusSet:
    return status_set(raw["expect"]) if "expect" in raw else OK


def _acquire(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    ctx = c.use(v["ctx"], "ctx", (*p, "ctx"))
    if "package" not in v:
        needs.add(f"package:{pkg}")
    use = v.get("use", "outbound")
    use_value = const.CRED_USE[use] if isinstance(use, str) else int(use)
    cred = c.bind(v["cred"], "cred", (*p, "cred"))
    package = v.get("package", pkg)
    args = m.Acquire(ctx, cred, package, use_value, v.get("principal"), v.get("auth"))
    return args, f"acquire {cred} ({package}, {use}) on {v['ctx']}", _op_expect(raw)


def _leg(client: bool) -> Any:
    def build(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
        ctx = c.use(v["ctx"], "ctx", (*p, "ctx"))
        cred = c.use(v.get("cred"), "cred", (*p, "cred"))
        spec = c.token_spec(v.get("input"), (*p, "input"))
        context = c.maybe_bind(v.get("context"), "context", (*p, "context"))
        token = c.maybe_bind(v.get("token"), "token", (*p, "token")) if "token" in v else None
        req = const.flags_value(v.get("req", []), const.ISC_REQ if client else const.ASC_REQ)
        output = _Compiler.output_spec(v.get("output")) if "output" in v else m.OutputSpec()
        args = m.Handshake1(client, ctx, cred, context, v.get("target") if client else None, req, spec, output,
                            token, int(v.get("reserved1", 0)), int(v.get("reserved2", 0)),
                            data_rep_value(v.get("data_rep", 0)))
        name = "initialize" if client else "accept"
        return args, f"{name} {v.get('context')} on {v['ctx']}", _op_expect(raw)
    return build


def _delete(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    args = m.DeleteContext(c.use(v["ctx"], "ctx", (*p, "ctx")), c.use(v["context"], "context", (*p, "context")))
    return args, f"delete_context {v['context']} on {v['ctx']}", _op_expect(raw)


def _free_creds(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    args = m.FreeCredentials(c.use(v["ctx"], "ctx", (*p, "ctx")), c.use(v["cred"], "cred", (*p, "cred")))
    return args, f"free_credentials {v['cred']} on {v['ctx']}", _op_expect(raw)


def _wait(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    expect = status_set(raw["expect"]) if "expect" in raw else None
    return m.Wait(c.use(v, "ctx", p), int(raw.get("timeout_ms", 2000))), f"wait {v}", expect


def _no_callback(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    within = int(raw.get("within_ms", 50))
    return m.ExpectNoCallback(c.use(v, "ctx", p), within), f"expect_no_callback {v} within {within} ms", None


def _complete(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    if v == "all":
        return m.Complete(()), "complete all", None
    names = v if isinstance(v, list) else [v]
    used = tuple(str(c.use(n, "ctx", (*p, i) if isinstance(v, list) else p)) for i, n in enumerate(names))
    return m.Complete(used), f"complete {', '.join(used)}", None


def _mode(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    return m.Mode(str(v)), f"mode {v}", None


def _inject(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    params = tuple((k, st.parse(x) if k == "status" else x) for k, x in v.items() if k != "fault")
    return m.InjectFault(v["fault"], params), f"inject_fault {v['fault']}", None


def _sleep(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    return m.Sleep(int(v)), f"sleep {v} ms", None


# TargetDataRep words (OQ-19); an integer passes through.
DATA_REP = {"native": const.SECURITY_NATIVE_DREP, "network": const.SECURITY_NETWORK_DREP}


def data_rep_value(raw: Any) -> int:
    return DATA_REP[raw] if isinstance(raw, str) else int(raw)


def _payload(data: Any) -> bytes:
    """``data:`` of encrypt / ``send_after``: text, ``{hex: ..}`` or ``{size: N}`` (bytes 0, 1, 2, ...)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if "hex" in data:
        return bytes.fromhex(data["hex"])
    return bytes(i & 0xFF for i in range(int(data["size"])))


def _side(c: _Compiler, v: dict[str, Any], p: tuple[Any, ...], client: bool) -> m.Side:
    ctx = str(c.use(v["ctx"], "ctx", (*p, "ctx")))
    cred = c.use(v.get("cred"), "cred", (*p, "cred"))
    context = str(c.maybe_bind(v["context"], "context", (*p, "context")))
    token = c.maybe_bind(v.get("token"), "token", (*p, "token")) if "token" in v else None
    rest = c.bind(v["rest"], "token", (*p, "rest")) if "rest" in v else None
    req = const.flags_value(v.get("req", []), const.ISC_REQ if client else const.ASC_REQ)
    output = _Compiler.output_spec(v.get("output")) if "output" in v else m.OutputSpec()
    alert_raw = v.get("alert")
    alert: tuple[int, int] | str | None = (int(alert_raw[0]), int(alert_raw[1])) if isinstance(alert_raw, list) \
        else alert_raw
    final = c.outputs(v.get("final"), "ISC_RET" if client else "ASC_RET")
    send_after = _payload(v["send_after"]) if "send_after" in v else None
    return m.Side(ctx, cred, context, v.get("target") if client else None, req, output, token, rest, send_after,
                  alert, final, data_rep_value(v.get("data_rep", 0)),
                  status_set(v["expect"]) if "expect" in v else None)


def _handshake(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    client = _side(c, v["client"], (*p, "client"), True)
    server = _side(c, v["server"], (*p, "server"), False)
    if client.ctx == server.ctx:
        raise c.error((*p, "server", "ctx"), "client and server need two different async contexts")
    legs = tuple(status_set(x) for x in v["legs"]) if "legs" in v else None
    raw_delivery: Any = v.get("delivery", "whole")
    delivery, chunk = str(raw_delivery), 0
    if isinstance(raw_delivery, dict):
        delivery, chunk = "chunk", int(raw_delivery["chunk"])
    elif raw_delivery == "byte-by-byte":
        delivery, chunk = "chunk", 1
    if delivery != "whole" or client.send_after is not None or server.send_after is not None:
        needs.add("stream")
    retry = "client_certificate_retry" in v
    retry_cred = c.use(v["client_certificate_retry"], "cred", (*p, "client_certificate_retry")) if retry else None
    args = m.Handshake(client, server, v.get("reuse", "reinit"), int(v.get("max_legs", 12)), legs, delivery, chunk,
                       retry, retry_cred, v.get("expect_incomplete"), v.get("expect_extra"))
    return args, f"handshake {client.context} <-> {server.context}", _op_expect(raw)


def _query(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    return m.QuerySizes(c.use(v["context"], "context", (*p, "context"))), "query_sizes", _op_expect(raw)


def _encrypt(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    context = c.use(v["context"], "context", (*p, "context"))
    payload = _payload(v["data"])
    record = c.bind(v["record"], "token", (*p, "record")) if "record" in v else None
    return m.Encrypt(context, payload, record), f"encrypt {len(payload)} bytes", _op_expect(raw)


def _decrypt(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    context = c.use(v["context"], "context", (*p, "context"))
    spec = c.token_spec(v["input"], (*p, "input"))
    plain = v["plaintext"].encode("utf-8") if "plaintext" in v else None
    data = c.bind(v["data"], "token", (*p, "data")) if "data" in v else None
    extra = c.bind(v["extra"], "token", (*p, "extra")) if "extra" in v else None
    return m.Decrypt(context, spec, plain, data, extra), "decrypt", _op_expect(raw)


def _complete_auth(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    context = c.use(v["context"], "context", (*p, "context"))
    return m.CompleteAuthToken(context), f"complete_auth_token {v['context']}", _op_expect(raw)


def _shutdown(c: _Compiler, v: Any, p: tuple[Any, ...], raw: dict[str, Any], pkg: str, needs: set[str]) -> Any:
    alert = (int(v["alert"][0]), int(v["alert"][1])) if "alert" in v else None
    summary = f"shutdown (alert {alert[0]}, {alert[1]})" if alert else "shutdown"
    return m.Shutdown(c.use(v["context"], "context", (*p, "context")), alert), summary, _op_expect(raw)


_BUILDERS: dict[str, Any] = {
    "create": _create,
    "set_callback": _set_callback,
    "clear_callback": _ctx_only("ok"),
    "requires_notify": _ctx_only("bool"),
    "status": _ctx_only("status"),
    "reinit": _ctx_only("success"),
    "free": _ctx_only("none"),
    "acquire": _acquire,
    "initialize": _leg(True),
    "accept": _leg(False),
    "delete_context": _delete,
    "free_credentials": _free_creds,
    "wait": _wait,
    "expect_no_callback": _no_callback,
    "complete": _complete,
    "mode": _mode,
    "inject_fault": _inject,
    "callbacks": _ctx_only("int"),
    "sleep_ms": _sleep,
    "handshake": _handshake,
    "query_sizes": _query,
    "encrypt": _encrypt,
    "decrypt": _decrypt,
    "shutdown": _shutdown,
    "complete_auth_token": _complete_auth,
}


def compile_scenario(doc: dict[str, Any], file: str, locs: Locations) -> m.Scenario:
    c = _Compiler(file, locs)
    for key in ("requirements", "expect_diagnostics"):
        for i, rid in enumerate(doc.get(key, ())):
            if rid not in c.catalogue:
                raise c.error((key, i), f"unknown requirement ID {rid!r} (not in conformance/requirements.yaml)")
    needs: set[str] = set(doc.get("requires", ()))
    if "completion" in doc:
        needs.add("completion-control")
    if "expect_diagnostics" in doc:
        needs.add("misuse-detection")
    package = str(doc.get("package", "Sim"))
    steps = tuple(c.step(i, raw, package, needs) for i, raw in enumerate(doc["steps"]))
    line, column = locs.of(("id",))
    declared = tuple(doc.get("requires", ()))
    ordered = declared + tuple(sorted(needs - set(declared)))
    return m.Scenario(
        id=doc["id"], title=doc["title"], file=file, line=line, column=column,
        requirements=tuple(doc["requirements"]), steps=steps, level=doc.get("level", "must"),
        tags=tuple(doc.get("tags", ())), requires=declared, needs=ordered, package=package,
        completion=doc.get("completion"), timeout_ms=int(doc.get("timeout_ms", 10000)),
        description=str(doc.get("description", "")), expect_diagnostics=tuple(doc.get("expect_diagnostics", ())),
        uses_completes=any(s.completes is not None or s.outputs is not None for s in steps),
    )
