"""Subscriptions as a tree of topic levels, matched in one walk per published topic.

A publish to ``ch/42`` visits the ``ch`` node, then its ``42`` and ``+`` children, collecting ``#``
subscribers on the way, so matching costs the depth of the topic, not the number of filters. A
client with several matching filters is delivered once, at the highest granted QoS (MQTT 3.1.1
§3.3.5 allows either). Topics starting with ``$`` are not matched by filters that start with a
wildcard [MQTT-4.7.2-1].
"""

from __future__ import annotations


class _Node:
    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, int] = {}  # client id → granted QoS


class TopicTree:
    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        """Number of (client, filter) subscriptions."""
        return self._count

    def add(self, topic_filter: str, client_id: str, qos: int) -> None:
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if client_id not in node.subscribers:
            self._count += 1
        node.subscribers[client_id] = qos

    def remove(self, topic_filter: str, client_id: str) -> bool:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.subscribers.pop(client_id, None) is None:
            return False
        self._count -= 1
        for parent, level in reversed(path):  # prune empty branches
            child = parent.children[level]
            if child.subscribers or child.children:
                break
            del parent.children[level]
        return True

    def match(self, topic: str) -> dict[str, int]:
        """Client id → QoS of every subscription matching ``topic`` (highest QoS per client)."""
        out: dict[str, int] = {}
        levels = topic.split("/")
        n = len(levels)
        dollar = topic.startswith("$")

        def collect(subs: dict[str, int]) -> None:
            for cid, qos in subs.items():
                if out.get(cid, -1) < qos:
                    out[cid] = qos

        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            children = node.children
            if not children:
                continue
            wild_ok = not (dollar and i == 0)
            if wild_ok:
                multi = children.get("#")
                if multi is not None:
                    collect(multi.subscribers)  # "#" also matches the parent level [MQTT-4.7.1-2]
            if i == n:
                continue
            exact = children.get(levels[i])
            if exact is not None:
                if i + 1 == n:
                    collect(exact.subscribers)
                    last_multi = exact.children.get("#")
                    if last_multi is not None:
                        collect(last_multi.subscribers)
                else:
                    stack.append((exact, i + 1))
            if wild_ok:
                single = children.get("+")
                if single is not None:
                    if i + 1 == n:
                        collect(single.subscribers)
                        last_multi = single.children.get("#")
                        if last_multi is not None:
                            collect(last_multi.subscribers)
                    else:
                        stack.append((single, i + 1))
        return out


def matches(topic: str, topic_filter: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (one pair; retained-message lookups use this)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t, f = topic.split("/"), topic_filter.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(t) == len(f)
