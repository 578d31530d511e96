"""What passes between a widget and the page in the widget tests: recorded updates and faked browser messages."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from tscope_widgets.widgets._codec import array_from_json


class Wire:
    """Records the comm update messages a widget sends (what the browser would receive).

    ``messages`` holds ``(data, buffers)`` pairs in order; ``threads(key)`` and ``times(key)`` say which thread
    sent each update carrying ``key`` and when (``time.monotonic()``).
    """

    def __init__(self, widget):
        self.messages: list[tuple[dict, list]] = []
        self._sent: dict[int, tuple[str, float]] = {}  # id(data) -> (thread, time); survives messages.clear()
        widget.comm.publish_msg = self._publish

    def _publish(self, msg_type, data=None, metadata=None, buffers=None, **_):
        if msg_type == "comm_msg" and data.get("method") == "update":
            json.dumps(data["state"], allow_nan=False)  # Jupyter's serializer refuses NaN
            self.messages.append((data, list(buffers or [])))
            self._sent[id(data)] = (threading.current_thread().name, time.monotonic())

    def _with(self, key: str) -> list[tuple[dict, list]]:
        return [(d, b) for d, b in self.messages if key in d["state"]]

    def updates(self, key: str) -> list:
        """Decoded values of ``key`` in the recorded update messages, oldest first."""
        return [put_back(d, b)[key] for d, b in self._with(key)]

    def threads(self, key: str) -> list[str]:
        return [self._sent[id(d)][0] for d, _ in self._with(key)]

    def times(self, key: str) -> list[float]:
        return [self._sent[id(d)][1] for d, _ in self._with(key)]


def put_back(data: dict, buffers: list) -> dict:
    """The state with buffers put back at their paths and arrays decoded (as the JS does)."""
    state = json.loads(json.dumps(data["state"]))
    for path, buf in zip(data["buffer_paths"], buffers, strict=True):
        node = state
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bytes(buf)

    def decode(value):
        if isinstance(value, dict) and {"view", "dtype", "shape"} <= value.keys():
            if value["dtype"] == "float16":  # a large map (_codec.map_to_json): float16 times its scale
                half = np.frombuffer(value["view"], dtype="<f2").reshape(value["shape"])
                return (half.astype(np.float32) * np.float32(value["scale"])).astype(np.float32)
            return array_from_json(value)
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        return value

    return {k: decode(v) for k, v in state.items()}


def browser_update(widget, **state) -> None:
    """Deliver a state update as the front end's comm message would."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}}, "buffers": []})


def browser_command(widget, content) -> None:
    """Deliver a custom message (a button press) as the front end would."""
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})
