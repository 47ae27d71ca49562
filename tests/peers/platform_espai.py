"""An ESP-AI open-platform server answering as seed 003 (超体管理接口) and the device-list document show.

`authorization` must be the raw open API key (no Bearer); every body field must be a string; `config`
is stored and returned as a JSON string; errors are `success: false` + `message`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.peers.platform_http import Answer, Recorded, RecordingServer

SEED_CONFIG = {
    "iat_server": "esp-ai-asr-volcengine",
    "iat_config": {"clusterId": "volcengine_streaming_common"},
    "tts_server": "esp-ai-tts-volcengine",
    "tts_config": {"voice_type": "ICL_zh_female_jiaoruoluoli_tob"},
    "llm_server": "esp-ai-llm",
    "llm_config": {"model": "qwen2.5:7b", "api_key": "7b131bi418f94c788033i225dc00i1d0"},
    "llm_init_messages": [{"role": "system", "content": "你是东星帮的乌鸦哥,你要用乌鸦哥的语气和用户聊天。"}],
    "connected_reply": "服务连接成功。",
}


@dataclass
class EspAiState:
    key: str = "0123456789abcdef0123456789abcdef"
    cdkeys: set[str] = field(default_factory=lambda: {"772868ead56c48d68fd1924aa5ec3aac"})
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)


class EspAiPeer(RecordingServer):
    def __init__(self, state: EspAiState | None = None) -> None:
        super().__init__()
        self.state = state or EspAiState()

    def add_agent(self, name: str, config: Any = None, **fields: Any) -> str:
        agent_id = uuid.uuid4().hex
        raw_config = json.dumps(SEED_CONFIG if config is None else config, ensure_ascii=False)
        self.state.agents[agent_id] = {
            "id": agent_id,
            "sort": 99,
            "create_time": 1744180100787,
            "update_time": 1744189426664,
            "ext1": None,
            "ext2": None,
            "ext3": None,
            "name": name,
            "type": "0",
            "user_id": "87215a4192654cea8781a1a596d23cae",
            "server_id": "0aadd1d790cf410892fb9459d5d5cb74",
            "config": raw_config if not isinstance(config, str) else config,
            "api_key": "devkey" + agent_id[:26],
            "cdkey_id": "772868ead56c48d68fd1924aa5ec3aac",
            "enable": "1",
            "model_id": "001",
            "cdkey_name": "wNaa1GDw",
            "api_limit": 61,
            "cdkey_type": "0",
            "server_ip": "10.0.0.1",
            "server_port": 8080,
            "model_name": "艾米",
            "model_path": "/models/amy/",
            "file_name": "model.glb",
            **fields,
        }
        return agent_id

    def add_device(self, agent_id: str, mac: str, online: bool = True) -> None:
        agent = self.state.agents[agent_id]
        self.state.devices.append(
            {
                "id": uuid.uuid4().hex,
                "name": f"dev-{mac[-5:]}",
                "user_id": agent["user_id"],
                "equipment_id": agent_id,
                "api_key": agent["api_key"],
                "enable": "1",
                "is_online": "1" if online else "0",
                "device_id": mac,
                "version": "2.1.0",
            }
        )

    @staticmethod
    def fail(message: str, code: int | None = None) -> Answer:
        body: dict[str, Any] = {"success": False, "message": message}
        if code is not None:
            body["code"] = code
        return Answer.json(body)

    def handle(self, r: Recorded) -> Answer:
        if r.method != "POST":
            return Answer.json({"success": False, "message": "method not allowed"}, 405)
        if r.headers.get("authorization") != self.state.key:
            return self.fail("open_api_key 无效")
        try:
            body = r.json()
        except ValueError:
            return self.fail("系统错误:参数不是 JSON", 500)
        if r.path == "/equipment/del":
            return self._delete(body)
        if not isinstance(body, dict) or any(not isinstance(v, str) for v in body.values()):
            return self.fail("系统错误:参数必须是字符串", 500)
        if r.path == "/equipment/list":
            return self._list(body)
        if r.path == "/equipment/add":
            return self._add(body)
        if r.path == "/equipment/update":
            return self._update(body)
        if r.path == "/devices/list":
            return self._devices(body)
        return Answer.json({"success": False, "message": "not found"}, 404)

    def _list(self, body: dict[str, str]) -> Answer:
        items = list(self.state.agents.values())
        for key in ("name", "type", "enable"):
            if key in body:
                items = [a for a in items if str(a.get(key)) == body[key]]
        page, limit = int(body.get("page", "1")), int(body.get("limit", "9999"))
        return Answer.json(
            {"success": True, "message": "请求成功", "data": items[(page - 1) * limit : page * limit]}
        )

    def _add(self, body: dict[str, str]) -> Answer:
        if body.get("cdkey_id") not in self.state.cdkeys:
            return self.fail("额度卡不存在")
        copy = self.state.agents.get(body.get("copy", ""))
        config = json.loads(copy["config"]) if copy else SEED_CONFIG
        agent_id = self.add_agent(
            body["name"], config, enable=body.get("enable", "0"), sort=body.get("sort", "99")
        )
        return Answer.json({"success": True, "message": "新增成功", "data": self.state.agents[agent_id]})

    def _update(self, body: dict[str, str]) -> Answer:
        agent = self.state.agents.get(body.get("id", ""))
        if agent is None:
            return self.fail("超体不存在")
        if "config" in body:
            try:
                if not isinstance(json.loads(body["config"]), dict):
                    raise ValueError
            except ValueError:
                return self.fail("系统错误:config 格式错误", 500)
        if "cdkey_id" in body and body["cdkey_id"] not in self.state.cdkeys:
            return self.fail("额度卡不存在")
        changed = {k: v for k, v in body.items() if k != "id"}
        agent.update(changed)
        agent["update_time"] = int(time.time() * 1000)
        return Answer.json(
            {"success": True, "message": "修改成功", "data": {**changed, "update_time": agent["update_time"]}}
        )

    def _delete(self, body: Any) -> Answer:
        if not isinstance(body, list) or not all(isinstance(item, dict) and "id" in item for item in body):
            return self.fail("系统错误:参数格式错误", 500)
        for item in body:
            self.state.agents.pop(item["id"], None)
        return Answer.json({"success": True, "message": "删除成功"})

    def _devices(self, body: dict[str, str]) -> Answer:
        items = list(self.state.devices)
        for key in ("name", "api_key", "device_id", "bin_id", "version", "enable", "is_online", "type"):
            if key in body:
                items = [d for d in items if str(d.get(key)) == body[key]]
        return Answer.json({"success": True, "totalNumber": len(items), "message": "请求成功", "data": items})
