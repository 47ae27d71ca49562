"""A Qiniu xiaozhi management server that answers as seeds 000/001 and the vendor's API docs show.

Envelopes `{code, msg, data}` (devices answer with `message`), auth failure as HTTP 200 + code 401,
cursor pagination with limit clamping and cursor validation, the bare `preregister` reply with
per-MAC failures, 400/404/409 on bind, 403 on moving a device of another account, voice-clone states.
"""

from __future__ import annotations

import re
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from tests.peers.platform_http import Answer, Recorded, RecordingServer

CURSOR = re.compile(r"[a-f0-9]{32}")
CAPTCHA_TEXT = "ab12"


def tiny_png() -> bytes:
    """A valid 1x1 PNG (what the captcha endpoint sends is a PNG)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def ok(data: Any = None, msg: str = "success", **extra: Any) -> Answer:
    return Answer.json({"code": 0, "msg": msg, "data": data, **extra})


def fail(code: int, msg: str, data: Any = None) -> Answer:
    return Answer.json({"code": code, "msg": msg, "data": data})


@dataclass
class QiniuState:
    """Everything the platform knows; two peers (management host, login host) may share one."""

    users: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch s)
    api_keys: set[str] = field(default_factory=set)
    captchas: dict[str, str] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion order = list order
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # mac -> device
    foreign_macs: set[str] = field(default_factory=set)  # bound to another account
    codes: dict[str, str] = field(default_factory=dict)  # activation code -> mac
    prereg: dict[str, dict[str, Any]] = field(default_factory=dict)  # mac -> record
    sessions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    clones: dict[str, dict[str, Any]] = field(default_factory=dict)
    clone_polls: dict[str, int] = field(default_factory=dict)
    train_polls: int = 2  # GETs of a Training clone before it turns Success
    token_lifetime_s: int = 43200


# The calls seeds 000 and 001 name, and nothing else (`seed_only`): (method, path with {} for a segment).
SEED_CALLS = frozenset(
    {
        ("GET", "/xiaozhi/user/captcha"),
        ("POST", "/xiaozhi/user/register"),
        ("POST", "/xiaozhi/user/login"),
        ("POST", "/xiaozhi/agent"),
        ("GET", "/xiaozhi/agent/list"),
        ("PUT", "/xiaozhi/agent/{}"),
        ("DELETE", "/xiaozhi/agent/{}"),
        ("POST", "/xiaozhi/device/bind/{}/{}"),
        ("POST", "/xiaozhi/device/preregister"),
        ("POST", "/xiaozhi/device/unbind"),
    }
)
AGENT_ID = re.compile(r"[a-f0-9]{32}")


def call_shape(path: str) -> str:
    """`path` with its id segments (agent ids, activation codes) as {}, to compare with SEED_CALLS."""
    parts = path.rstrip("/").split("/")
    if parts[1:3] == ["xiaozhi", "agent"] and len(parts) == 4 and AGENT_ID.fullmatch(parts[3]):
        parts[3] = "{}"
    if parts[1:4] == ["xiaozhi", "device", "bind"]:
        parts[4:] = ["{}"] * len(parts[4:])
    return "/".join(parts)


class QiniuPeer(RecordingServer):
    """`seed_only`: answer only the calls the seeds name; any other (search, agent detail, device
    lists, /v1/...) gets HTTP 404, as from a server that does not have it."""

    def __init__(self, state: QiniuState | None = None, *, seed_only: bool = False) -> None:
        super().__init__()
        self.state = state or QiniuState()
        self.seed_only = seed_only

    # -- helpers for tests --------------------------------------------------------------------------

    def add_user(self, username: str = "maker", password: str = "s3cret") -> None:
        self.state.users[username] = password

    def issue_token(self, lifetime_s: float = 43200) -> str:
        token = uuid.uuid4().hex
        self.state.tokens[token] = time.time() + lifetime_s
        return token

    def add_agent(self, name: str, **fields: Any) -> str:
        agent_id = uuid.uuid4().hex
        self.state.agents[agent_id] = {
            "id": agent_id,
            "agentName": name,
            "assistantName": fields.pop("assistantName", "小智"),
            "ttsModelName": "",
            "ttsVoiceName": "豪放可爱女",
            "llmModelName": "qwen3极速版",
            "vllmModelName": "智谱视觉AI",
            "memModelId": "Memory_mem_local_short",
            "systemPrompt": "[角色设定]\n你是{{assistant_name}}",
            "summaryMemory": None,
            "lastConnectedAt": None,
            "deviceCount": 0,
            "extra": None,
            **fields,
        }
        return agent_id

    def offer_code(self, mac: str, code: str = "605192") -> str:
        """A device that ran OTA unbound and shows `code`."""
        self.state.codes[code] = mac.lower()
        return code

    # -- the document -------------------------------------------------------------------------------

    def handle(self, r: Recorded) -> Answer:
        path = r.path
        if self.seed_only and (r.method, call_shape(path)) not in SEED_CALLS:
            return Answer.json({"code": 404, "msg": f"no route {r.method} {path}"}, 404)
        if path == "/xiaozhi/user/captcha" and r.method == "GET":
            cid = r.q("uuid")
            if not cid:
                return fail(400, "UUID参数错误")
            self.state.captchas[cid] = CAPTCHA_TEXT
            return Answer(200, tiny_png(), "image/png")
        if path == "/xiaozhi/user/register" and r.method == "POST":
            return self._register(r.json())
        if path == "/xiaozhi/user/login" and r.method == "POST":
            return self._login(r.json())
        auth = r.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        valid = token in self.state.api_keys or self.state.tokens.get(token, 0) > time.time()
        if not valid:
            return Answer.json({"code": 401, "msg": "未登录", "data": []})
        return self._route(r)

    def _register(self, body: dict[str, Any]) -> Answer:
        if self.state.captchas.pop(body.get("captchaId", ""), None) != body.get("captcha"):
            return fail(403, "验证码错误")
        if body["username"] in self.state.users:
            return fail(409, "用户名已存在")
        self.state.users[body["username"]] = body["password"]
        return Answer.json({"code": 0, "msg": "注册成功", "data": {}})

    def _login(self, body: dict[str, Any]) -> Answer:
        if self.state.captchas.pop(body.get("captchaId", ""), None) != body.get("captcha"):
            return fail(403, "验证码错误")
        if self.state.users.get(body.get("username", "")) != body.get("password"):
            return fail(401, "用户名或密码错误")
        token = self.issue_token(self.state.token_lifetime_s)
        return ok({"token": token, "expire": self.state.token_lifetime_s, "clientHash": "h" * 8})

    def _route(self, r: Recorded) -> Answer:
        parts = [p for p in r.path.split("/") if p]
        m = r.method
        s = self.state
        if parts[:2] == ["xiaozhi", "agent"]:
            rest = parts[2:]
            if rest == ["list"] and m == "GET":
                return self._agent_list(r)
            if rest == ["search"] and m == "GET":
                return self._agent_search(r)
            if rest == [] and m == "POST":
                body = r.json()
                if not body.get("agentName"):
                    return fail(400, "agentName不能为空")
                fields = {k: v for k, v in body.items() if k != "agentName"}
                return ok(self.add_agent(body["agentName"], **fields))
            if len(rest) == 1:
                agent = s.agents.get(rest[0])
                if agent is None:
                    return fail(500, "智能体不存在")
                if m == "GET":
                    return ok({**agent, "datasetIds": [], "createdAt": "2026-07-01 12:00:00"})
                if m == "PUT":
                    # top-level fields are replaced, `extra` too: whole, never merged (the worst case
                    # the docs allow; a client must send back what it does not mean to change)
                    agent.update(r.json())
                    return ok(None)
                if m == "DELETE":
                    del s.agents[rest[0]]
                    return ok({}, msg="删除成功")
            if len(rest) == 2 and rest[1] == "sessions" and m == "GET":
                items = s.sessions.get(rest[0], [])
                page, limit = int(r.q("page") or 1), int(r.q("limit") or 20)
                return ok({"total": len(items), "list": items[(page - 1) * limit : page * limit]})
            if len(rest) == 3 and rest[1] == "chat-history" and m == "GET":
                return ok(s.history.get(rest[2], []))
        if parts[:3] == ["xiaozhi", "device", "bind"]:
            if len(parts) == 4 and m == "GET":
                if parts[3] not in s.agents:
                    return fail(404, "智能体不存在")
                devices = [d for d in s.devices.values() if d["agentId"] == parts[3]]
                return Answer.json({"code": 0, "message": "success", "data": devices})
            if len(parts) == 5 and m == "POST":
                return self._bind(parts[3], parts[4])
        if r.path == "/xiaozhi/device/preregister" and m == "POST":
            return self._preregister(r.json())
        if r.path == "/xiaozhi/device/unbind" and m == "POST":
            mac = str(r.json().get("deviceId", "")).lower()
            device = s.devices.pop(mac, None)
            if device is None:
                return Answer.json({"code": 404, "message": "设备不存在"})
            return Answer.json({"code": 0, "message": "设备解绑成功"})
        if parts[:2] == ["v1", "devices"] and len(parts) == 5 and parts[3] == "agent" and m == "PUT":
            mac, agent_id = parts[2].lower(), parts[4]
            if mac in s.foreign_macs or mac not in s.devices:
                return fail(403, "无权限操作该设备")
            s.devices[mac]["agentId"] = agent_id
            return ok({})
        if parts[:2] == ["v1", "pre-register"]:
            return self._prereg_routes(r, parts[2:])
        if parts[:2] == ["v1", "voice-clones"]:
            return self._clone_routes(r, parts[2:])
        return Answer.json({"code": 404, "msg": f"no route {m} {r.path}"}, 404)

    def _agent_list(self, r: Recorded) -> Answer:
        items = list(self.state.agents.values())
        limit_text, cursor = r.q("limit"), r.q("cursor")
        if limit_text is None and cursor is None:
            return Answer.json({"code": 0, "msg": "success", "data": items, "nextCursor": None})
        limit = int(limit_text) if limit_text else 20
        limit = 20 if limit <= 0 else min(limit, 100)
        start = 0
        if cursor:
            ids = [a["id"] for a in items]
            if not CURSOR.fullmatch(cursor) or cursor not in ids:
                return fail(500, "无效的游标参数")
            start = ids.index(cursor) + 1
        page = items[start : start + limit]
        more = start + limit < len(items)
        return Answer.json(
            {"code": 0, "msg": "success", "data": page, "nextCursor": page[-1]["id"] if more else None}
        )

    def _agent_search(self, r: Recorded) -> Answer:
        q, kind = r.q("q") or "", r.q("type") or "name"
        agents = list(self.state.agents.values())
        if kind == "name":
            found = [a for a in agents if str(a["agentName"]).startswith(q)]
        elif kind == "agent_id":
            found = [a for a in agents if a["id"] == q]
        elif kind == "mac":
            ids = {d["agentId"] for mac, d in self.state.devices.items() if mac == q.lower()}
            found = [a for a in agents if a["id"] in ids]
        else:
            return fail(400, "无效的搜索类型")
        return Answer.json({"code": 0, "msg": "success", "data": found, "nextCursor": None})

    def _bind(self, agent_id: str, code: str) -> Answer:
        if agent_id not in self.state.agents:
            return fail(404, "智能体不存在")
        mac = self.state.codes.get(code)
        if mac is None:
            return fail(400, "激活码无效或已使用")
        if mac in self.state.devices:
            return fail(409, "设备已被绑定")
        del self.state.codes[code]
        self.state.devices[mac] = {
            "id": mac,
            "userId": "user123",
            "macAddress": mac,
            "lastConnectedAt": None,
            "autoUpdate": 1,
            "board": "companion-pi",
            "alias": None,
            "agentId": agent_id,
            "appVersion": "1.2.3",
        }
        self.state.agents[agent_id]["deviceCount"] = sum(
            1 for d in self.state.devices.values() if d["agentId"] == agent_id
        )
        return ok({"macAddress": mac})

    def _preregister(self, body: dict[str, Any]) -> Answer:
        agent_id = body.get("agent_id")
        if agent_id not in self.state.agents:
            return Answer.json({"code": 404, "msg": "智能体不存在", "data": None})
        success, failed = 0, []
        for mac in body.get("mac_addresses", []):
            key = str(mac).lower()
            if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", key):
                failed.append({"value": mac, "reason": "MAC格式错误"})
            elif key in self.state.prereg or key in self.state.devices:
                failed.append({"value": mac, "reason": "已存在"})
            else:
                self.state.prereg[key] = {
                    "id": uuid.uuid4().hex[:12],
                    "agent_id": agent_id,
                    "mac_address": key.upper(),
                    "serial_number": "",
                    "status": 0,
                    "created_at": "2026-04-03 10:00:00",
                }
                success += 1
        return Answer.json({"success_count": success, "failed": failed})

    def _prereg_routes(self, r: Recorded, rest: list[str]) -> Answer:
        s = self.state
        if len(rest) == 3 and rest[0] == "agents" and rest[2] == "devices" and r.method == "GET":
            items = sorted((d for d in s.prereg.values() if d["agent_id"] == rest[1]), key=lambda d: d["id"])
            limit = int(r.q("limit") or 100)
            cursor = r.q("cursor")
            if cursor:
                items = [d for d in items if d["id"] > cursor]
            page = items[:limit]
            nxt = page[-1]["id"] if len(items) > limit else None
            return ok({"devices": page, "next_cursor": nxt})
        if len(rest) == 3 and rest[:2] == ["devices", "mac-address"]:
            mac = rest[2].lower()
            if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac):
                return fail(400, "MAC 地址格式不正确")
            if mac not in s.prereg:
                return fail(404, "设备未找到")
            if r.method == "GET":
                return ok(s.prereg[mac])
            if r.method == "DELETE":
                del s.prereg[mac]
                return ok({})
        return fail(404, "no route")

    def _clone_routes(self, r: Recorded, rest: list[str]) -> Answer:
        s = self.state
        reqid = {"reqid": uuid.uuid4().hex[:16]}
        if not rest and r.method == "POST":
            body = r.json()
            cid = uuid.uuid4().hex
            s.clones[cid] = {
                "id": cid,
                "name": f"复刻音色-{cid[-5:]}",
                "language": body.get("language", "zh"),
                "demo_url": "",
                "state": "Init",
                "tier": body.get("tier", "free"),
            }
            return Answer.json({"code": 0, **reqid, "data": s.clones[cid]})  # no msg, as documented
        if not rest and r.method == "GET":
            return Answer.json({"code": 0, "msg": "", **reqid, "data": {"voices": list(s.clones.values())}})
        clone = s.clones.get(rest[0]) if rest else None
        if clone is None:
            return Answer.json({"code": 404, "msg": "音色不存在", **reqid, "data": None})
        if r.method == "PUT":
            body = r.json()
            if len(body.get("name", "")) > 20:
                return Answer.json({"code": 400, "msg": "名称过长", **reqid, "data": None})
            clone["name"] = body["name"]
            if body.get("key"):
                clone["state"] = "Training"
                s.clone_polls[clone["id"]] = 0
            return Answer.json({"code": 0, **reqid, "data": clone})
        if r.method == "GET":
            if clone["state"] == "Training":
                s.clone_polls[clone["id"]] += 1
                if s.clone_polls[clone["id"]] >= s.train_polls:
                    clone["state"] = "Success"
                    clone["demo_url"] = "https://example.com/demo.wav"
            return Answer.json({"code": 0, "msg": "", **reqid, "data": clone})
        if r.method == "DELETE":
            if clone["tier"] == "pro":
                return Answer.json({"code": 403, "msg": "付费音色栏位不可删除", **reqid, "data": None})
            del s.clones[clone["id"]]
            return Answer.json({"code": 0, "msg": "", **reqid, "data": {}})
        return fail(404, "no route")
