"""A Tuya Cloud OpenAPI server for the AI agent device chat service, checking every signature.

The signature check is this file's own implementation of the documented algorithm (spec C.3), written
from the text and independent of companion.platforms.tuya_signing. Tokens behave as documented: a grant
gives an access token and a single-use refresh token; refreshing rotates both and burns the old refresh
token. All 27 actions of the seed document are answered with its example shapes, at paths written here
from Tuya's cloud API pages (the six the pages do not show use the client's inferred ones). Parameters are
checked as documented: history, custom-role and voice pages hold at most 20, batch deletes take at most 20
ids (1101 otherwise), a role id needs its type, memory and summary calls need a type (1100).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.peers.platform_http import Answer, Recorded, RecordingServer

PREFIX = "/v1.0/cloud/agent/ai/chat/b/devices/"
VARIABLES_PREFIX = "/v1.0/cloud/agent/ai/b/devices/"  # agent-variables live outside /chat
MEMORY_KEYS = {
    "sys.memoryInterests": "兴趣爱好",
    "sys.memoryAge": "年龄",
    "sys.memoryBirthday": "生日",
    "sys.memoryUserFullName": "姓名",
}


def reference_string_to_sign(
    method: str, path: str, query: dict[str, str], body: bytes, headers: str = ""
) -> str:
    """METHOD \\n sha256(body) \\n headers \\n path[?sorted query] — written from the vendor's text."""
    lines = [method, hashlib.sha256(body).hexdigest().lower(), headers]
    url = path
    if query:
        url += "?" + "&".join(key + "=" + query[key] for key in sorted(query))
    lines.append(url)
    return "\n".join(lines)


def reference_sign(
    secret: str, client_id: str, t: str, string_to_sign: str, access_token: str = "", nonce: str = ""
) -> str:
    message = client_id + access_token + t + nonce + string_to_sign
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest().upper()


@dataclass
class Token:
    access: str
    refresh: str
    expires_at: float
    expired: bool = False


@dataclass
class TuyaState:
    client_id: str = "peerclientid0001"
    secret: str = "peersecret000000000000000000000a"
    lifetime_s: int = 7200
    max_skew_ms: int = 15 * 60 * 1000
    tokens: dict[str, Token] = field(default_factory=dict)  # access -> token
    refresh_tokens: dict[str, Token] = field(default_factory=dict)  # live refresh tokens
    used_refresh: set[str] = field(default_factory=set)
    grants: int = 0
    refreshes: int = 0
    refused_refreshes: int = 0
    refuse_refresh: bool = False
    reject_all_tokens: bool = False  # every business call answers 1010
    devices: set[str] = field(default_factory=lambda: {"dev1"})
    bound: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # device -> role_id -> role
    templates: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deleted_batches: list[list[str]] = field(default_factory=list)
    next_role: int = 163000100
    memory_open: bool = True
    summary_open: bool = True
    memories: dict[str, dict[str, str]] = field(default_factory=dict)  # "device|type|role" -> key -> value
    deleted_memory_batches: list[list[str]] = field(default_factory=list)
    summaries: dict[str, list[str]] = field(default_factory=dict)  # "device|type|role" -> items
    context_clears: list[str] = field(default_factory=list)  # "device|type|role" of each clear
    workflows: dict[str, str] = field(default_factory=dict)
    variables: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> key -> value
    avatars: list[str] = field(
        default_factory=lambda: [f"https://images.tuyacn.com/icon/{i}.png" for i in range(1, 7)]
    )
    languages: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"has_default": False, "lang_name": "湖南话", "lang_code": "zh_hn"},
            {"has_default": False, "lang_name": "英文", "lang_code": "en"},
            {"has_default": True, "lang_name": "中文", "lang_code": "zh"},
        ]
    )
    models: list[dict[str, Any]] = field(default_factory=lambda: [{"llm_name": "1.5 Pro", "llm_id": 85}])
    wake_words: str = "你好小智"
    timbres: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "demoUrl": f"https://images.tuyacn.com/timbre/timbre_{i}.mp3",
                "voiceId": f"{i}",
                "voiceName": f"音色{i}",
                "descTags": ["女", "中文"] if i % 2 else ["男", "英文"],
                "supportLangs": ["zh"] if i % 2 else ["en"],
                "speed": 30,
            }
            for i in range(1, 46)
        ]
    )


def _role(role_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "use_llm_id": "8*",
        "use_timbre_id": "6*",
        "role_introduce": "你是一名天文学家",
        "speed": "50.0",
        "llm_support_func_tag_list": ["functionCall", "text", "audio"],
        "use_llm_name": "1.5 Pro",
        "role_name": "天文学家",
        "use_lang_code": "zh",
        "role_id": role_id,
        "role_desc": "备注",
        "role_img_url": "https://images.tuyacn.com/icon/2.png",
        "use_lang_name": "中文",
        "use_timbre_name": "我的音色",
        **fields,
    }


class TuyaPeer(RecordingServer):
    def __init__(self, state: TuyaState | None = None) -> None:
        super().__init__()
        self.state = state or TuyaState()
        self.state.templates = self.state.templates or [
            _role("94300001", template_id="94300001", bind_status=False, role_name="模板一"),
            _role("94300002", template_id="94300002", bind_status=True, role_name="模板二"),
        ]
        self.state.bound.setdefault(
            "dev1", {**_role("94300002", template_id="94300002"), "bind_role_type": 1}
        )

    # -- helpers for tests --------------------------------------------------------------------------

    def expire_access_tokens(self) -> None:
        """The server now calls every live access token expired (what a 2 h gap does)."""
        with self.lock:
            for token in self.state.tokens.values():
                token.expired = True

    def add_history(self, device: str, entries: list[tuple[str, int]]) -> None:
        """History entries (request_id, gmt_create ms)."""
        with self.lock:
            items = self.state.history.setdefault(device, [])
            for request_id, gmt in entries:
                items.append(
                    {
                        "gmt_create": gmt,
                        "question": [{"type": "text", "context": f"q {request_id}"}],
                        "answer": [{"type": "text", "context": f"a {request_id}"}],
                        "request_id": request_id,
                    }
                )

    # -- envelope -----------------------------------------------------------------------------------

    @staticmethod
    def ok(result: Any) -> Answer:
        return Answer.json(
            {"result": result, "success": True, "t": int(time.time() * 1000), "tid": uuid.uuid4().hex}
        )

    @staticmethod
    def fail(code: int, msg: str) -> Answer:
        return Answer.json(
            {
                "code": code,
                "msg": msg,
                "success": False,
                "t": int(time.time() * 1000),
                "tid": uuid.uuid4().hex,
            }
        )

    # -- the document -------------------------------------------------------------------------------

    def _check_signature(self, r: Recorded, access_token: str) -> Answer | None:
        s = self.state
        h = r.headers
        if h.get("client_id") != s.client_id:
            return self.fail(1005, "clientId is invalid")
        if h.get("sign_method") != "HMAC-SHA256":
            return self.fail(1004, "sign invalid")
        t = h.get("t", "")
        if not t.isdigit() or len(t) != 13:
            return self.fail(1013, "request time is invalid")
        if abs(int(t) - int(time.time() * 1000)) > s.max_skew_ms:
            return self.fail(1013, "request time is invalid")
        query = {key: values[0] for key, values in r.query.items()}
        signed_names = [n for n in h.get("signature-headers", "").split(":") if n]
        header_block = "".join(f"{n}:{h.get(n.lower(), '')}\n" for n in signed_names)
        to_sign = reference_string_to_sign(r.method, r.path, query, r.body, header_block)
        expected = reference_sign(s.secret, s.client_id, t, to_sign, access_token, h.get("nonce", ""))
        if h.get("sign") != expected:
            return self.fail(1004, "sign invalid")
        return None

    def _issue(self) -> dict[str, Any]:
        s = self.state
        token = Token(uuid.uuid4().hex, uuid.uuid4().hex, time.time() + s.lifetime_s)
        s.tokens[token.access] = token
        s.refresh_tokens[token.refresh] = token
        return {
            "access_token": token.access,
            "expire_time": s.lifetime_s,
            "refresh_token": token.refresh,
            "uid": "bay1",
        }

    def handle(self, r: Recorded) -> Answer:
        s = self.state
        if r.path == "/v1.0/token" and r.method == "GET":
            bad = self._check_signature(r, "")
            if bad:
                return bad
            if r.q("grant_type") != "1":
                return self.fail(1109, "param is illegal")
            s.grants += 1
            return self.ok(self._issue())
        if r.path.startswith("/v1.0/token/") and r.method == "GET":
            bad = self._check_signature(r, "")
            if bad:
                return bad
            refresh = r.path.rsplit("/", 1)[1]
            old = s.refresh_tokens.pop(refresh, None)
            if old is None or s.refuse_refresh:
                s.refused_refreshes += 1
                return self.fail(1012, "token status is invalid")
            s.used_refresh.add(refresh)
            s.tokens.pop(old.access, None)
            s.refreshes += 1
            return self.ok(self._issue())
        access = r.headers.get("access_token", "")
        bad = self._check_signature(r, access)
        if bad:
            return bad
        token = s.tokens.get(access)
        if token is None:
            return self.fail(1011, "invalid token")
        if token.expired or time.time() > token.expires_at or s.reject_all_tokens:
            return self.fail(1010, "token invalid")
        prefix = next((p for p in (PREFIX, VARIABLES_PREFIX) if r.path.startswith(p)), None)
        if prefix is None:
            return self.fail(1108, "uri path invalid")
        device, _, rest = r.path[len(prefix) :].partition("/")
        if device not in s.devices:
            return self.fail(2010, "device not exist")
        if prefix == VARIABLES_PREFIX:
            return self._variables(r, device, rest)
        return self._agent(r, device, rest)

    def _agent(self, r: Recorded, device: str, rest: str) -> Answer:
        s = self.state
        m = r.method
        body = r.json() if r.body else {}
        roles = s.roles.setdefault(device, {})
        if rest == "agent-roles/initialization" and m == "POST":
            return self.ok(s.bound[device])
        if rest == "role-bindings" and m == "GET":
            return self.ok(s.bound[device])
        if rest == "role-bindings" and m == "POST":
            kind = body.get("bind_role_type")
            if kind not in (0, 1, 2):
                return self.fail(1109, "param is illegal")
            source = roles if kind == 0 else {t["template_id"]: t for t in s.templates}
            if kind != 2 and body.get("role_id") not in source:
                return self.fail(1109, "role not exist")
            base = source.get(str(body.get("role_id")), {}) if kind != 2 else {}
            s.bound[device] = {**base, "bind_role_type": kind}
            return self.ok(True)
        if rest == "custom-role" and m == "POST":
            return self._create_role(device, body)
        if rest == "custom-roles/from-template" and m == "POST":
            template = next((t for t in s.templates if t["template_id"] == body.get("template_id")), None)
            if template is None:
                return self.fail(1109, "template not exist")
            fields = {k: v for k, v in body.items() if k not in ("template_id", "need_bind")}
            role_id = self._new_role(device, {**template, **fields, "template_id": template["template_id"]})
            if body.get("need_bind"):
                s.bound[device] = {**roles[role_id], "bind_role_type": 0}
            return self.ok(role_id)
        if rest == "custom-roles" and m == "GET":
            page_no, size = int(r.q("page_no") or 1), int(r.q("page_size") or 10)
            if size > 20:
                return self.fail(1101, "param is out of range")
            items = list(roles.values())
            return self.ok({"total": len(items), "list": items[(page_no - 1) * size : page_no * size]})
        if rest.startswith("custom-roles/"):
            role_id = rest.split("/", 1)[1]
            if role_id not in roles:
                return self.fail(1109, "role not exist")
            if m == "GET":
                return self.ok(roles[role_id])
            if m == "PUT":
                roles[role_id].update(body)
                return self.ok(True)
            if m == "DELETE":
                del roles[role_id]
                return self.ok(True)
        if rest == "role-templates" and m == "GET":
            return self.ok(s.templates)
        if rest.startswith("role-templates/") and m == "GET":
            tid = rest.split("/", 1)[1]
            found = next((t for t in s.templates if t["template_id"] == tid), None)
            return self.ok(found) if found else self.fail(1109, "template not exist")
        if rest == "history" and m == "GET":
            if r.q("bind_role_type") is None or r.q("gmt_end") is None or r.q("page_size") is None:
                return self.fail(1100, "param is empty")
            size = int(r.q("page_size") or 0)
            if not 1 <= size <= 20:
                return self.fail(1101, "param is out of range")
            end = int(r.q("gmt_end") or 0)
            items = sorted(
                (e for e in s.history.get(device, []) if e["gmt_create"] < end),
                key=lambda e: -e["gmt_create"],
            )
            return self.ok(items[:size])
        if rest == "history" and m == "DELETE":
            clear = r.q("clear_all_history")
            if clear not in ("true", "false"):
                return self.fail(1100, "param is empty")
            if clear == "true":
                s.history[device] = []
                return self.ok(True)
            ids = [i for i in (r.q("request_ids") or "").split(",") if i]
            if not ids or len(ids) > 20:
                return self.fail(1101, "param is out of range")
            s.deleted_batches.append(ids)
            s.history[device] = [e for e in s.history.get(device, []) if e["request_id"] not in ids]
            return self.ok(True)
        if rest == "chat-context" and m == "DELETE":
            role, bad = self._role(dict(r.query_one()), required=False)
            if bad:
                return bad
            s.context_clears.append(f"{device}|{role}")
            return self.ok(True)
        if rest == "role-workflow" and m == "PUT":
            role, bad = self._role(body, required=True)
            if bad or not isinstance(body.get("workflow"), str):
                return bad or self.fail(1100, "param is empty")
            s.workflows[f"{device}|{role}"] = body["workflow"]
            return self.ok(True)
        if rest.startswith("memor") or rest == "summary":
            return self._memory(r, device, rest, body)
        return self._catalog(r, device, rest)

    # -- memory and summary (per role) --------------------------------------------------------------

    def _role(self, params: dict[str, Any], *, required: bool) -> tuple[str, Answer | None]:
        """The "type|role" key of the role a call names, or the refusal the document gives."""
        kind, role_id = params.get("bind_role_type"), params.get("role_id")
        if kind is None or kind == "":
            if required or role_id:
                return "", self.fail(1100, "param is empty")
            return "bound", None
        if str(kind) not in ("0", "1", "2"):
            return "", self.fail(1109, "param is illegal")
        if str(kind) in ("0", "1") and not role_id:
            return "", self.fail(1100, "param is empty")
        return f"{kind}|{role_id or ''}", None

    def _memory(self, r: Recorded, device: str, rest: str, body: dict[str, Any]) -> Answer:
        s = self.state
        m = r.method
        if rest == "memory/switch" and m == "GET":
            return self.ok({"memory_open": s.memory_open, "summary_open": s.summary_open})
        params = dict(r.query_one()) if m in ("GET", "DELETE") else body
        role, bad = self._role(params, required=True)
        if bad:
            return bad
        key = f"{device}|{role}"
        if rest == "memories" and m == "GET":
            values = s.memories.get(key, {})
            items = [
                {
                    "memory_value": value,
                    "memory_key": name,
                    "memory_name": MEMORY_KEYS.get(name, name),
                    "effective_scope_name": "角色的记忆",
                    "effective_scope": 3,
                }
                for name, value in values.items()
            ]
            return self.ok(
                [{"memory_list": items, "effective_scope_name": "角色的记忆", "effective_scope": 3}]
            )
        if rest == "memories" and m == "PUT":
            update = body.get("memory_map")
            if not isinstance(update, dict) or not update:
                return self.fail(1100, "param is empty")
            s.memories.setdefault(key, {}).update({str(k): str(v) for k, v in update.items()})
            return self.ok(True)
        if rest == "memories" and m == "DELETE":
            clear = r.q("clear_all_memory")
            if clear not in ("true", "false"):
                return self.fail(1100, "param is empty")
            if clear == "true":
                s.memories[key] = {}
                return self.ok(True)
            keys = [k for k in (r.q("memory_keys") or "").split(",") if k]
            if not keys:
                return self.fail(1100, "param is empty")
            if len(keys) > 20:
                return self.fail(1101, "param is out of range")
            s.deleted_memory_batches.append(keys)
            held = s.memories.get(key, {})
            for name in keys:
                held.pop(name, None)
            return self.ok(True)
        if rest == "summary" and m == "GET":
            return self.ok(s.summaries.get(key, []))
        if rest == "summary" and m == "PUT":
            summary_items = body.get("summary_items")
            if not isinstance(summary_items, list) or not all(isinstance(i, str) for i in summary_items):
                return self.fail(1100, "param is empty")
            s.summaries[key] = list(summary_items)
            return self.ok(True)
        return self.fail(1108, "uri path invalid")

    # -- what roles are made of ---------------------------------------------------------------------

    def _catalog(self, r: Recorded, device: str, rest: str) -> Answer:
        s = self.state
        if r.method != "GET":
            return self.fail(1108, "uri path invalid")
        if rest == "avatars":
            return self.ok([{"url": url} for url in s.avatars])
        if rest == "languages":
            return self.ok(s.languages)
        if rest == "large-models":
            return self.ok(s.models)
        if rest == "wake-up-words":
            return self.ok(s.wake_words)
        if rest == "timbres":
            page_no, size = int(r.q("page_no") or 1), int(r.q("page_size") or 10)
            if not 1 <= size <= 20 or page_no < 1:
                return self.fail(1101, "param is out of range")
            lang = r.q("lang")
            items = [t for t in s.timbres if not lang or lang in t["supportLangs"]]
            return self.ok({"total": len(items), "list": items[(page_no - 1) * size : page_no * size]})
        return self.fail(1108, "uri path invalid")

    # -- variables ----------------------------------------------------------------------------------

    def _variables(self, r: Recorded, device: str, rest: str) -> Answer:
        s = self.state
        if rest != "agent-variables":
            return self.fail(1108, "uri path invalid")
        values = s.variables.setdefault(
            device,
            {
                "sys.roleName": "天文学家",
                "sys.memoryAge": "九十九岁",
                "custom.familyName": "",
                "custom.userName": "张三",
            },
        )
        if r.method == "GET":
            _, bad = self._role(dict(r.query_one()), required=False)
            if bad:
                return bad
        elif r.method == "PUT":
            body = r.json() if r.body else {}
            _, bad = self._role(body, required=False)
            if bad:
                return bad
            update = body.get("variable_map")
            if not isinstance(update, dict) or not update:
                return self.fail(1100, "param is empty")
            values.update({str(k): str(v) for k, v in update.items()})
        else:
            return self.fail(1108, "uri path invalid")
        return self.ok([{"variable_key": k, "variable_value": v} for k, v in values.items()])

    def _new_role(self, device: str, fields: dict[str, Any]) -> str:
        self.state.next_role += 1
        role_id = str(self.state.next_role)
        fields = {k: v for k, v in fields.items() if k != "role_id"}
        self.state.roles.setdefault(device, {})[role_id] = _role(role_id, **fields)
        return role_id

    def _create_role(self, device: str, body: dict[str, Any]) -> Answer:
        required = (
            "role_name",
            "role_introduce",
            "role_img_url",
            "use_lang_code",
            "use_timbre_id",
            "use_llm_id",
        )
        if any(not body.get(name) for name in required):
            return self.fail(1100, "param is empty")
        return self.ok(self._new_role(device, body))
