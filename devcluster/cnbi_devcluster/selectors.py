"""Label and field selectors: parse once, match many (pure, no I/O).

Label selector grammar (as kube-apiserver accepts it in ``?labelSelector=``)::

    selector  := term ("," term)*        (empty selector matches everything)
    term      := key | "!" key | key ("=" | "==" | "!=") value
               | key ("in" | "notin") "(" value ("," value)* ")"

Field selectors support ``=``, ``==`` and ``!=`` on dotted paths
(``metadata.name``, ``status.phase``, ``involvedObject.kind`` ...). Which field paths a
resource accepts is the caller's decision (``FIELDS_BY_KIND``); unknown ones raise
``SelectorError`` like the real server's 400 "field label not supported".

Parsed selectors are tuples of small predicates, so matching 10 000 objects stays a
tight loop over dict lookups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_KEY = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")

#: field selectors every resource accepts, plus the extra ones per kind
COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
FIELDS_BY_KIND: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "Event": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "Secret": frozenset({"type"}),
    "Namespace": frozenset({"status.phase"}),
    "PersistentVolumeClaim": frozenset(),
}


class SelectorError(ValueError):
    """A selector the real API server would reject with 400 BadRequest."""


Predicate = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "=":
            return labels.get(self.key) in self.values
        if op == "!=":
            return labels.get(self.key) not in self.values
        if op == "in":
            return labels.get(self.key) in self.values
        if op == "notin":
            return labels.get(self.key) not in self.values
        if op == "exists":
            return self.key in labels
        return self.key not in labels  # !exists


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {text!r}")
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unbalanced '(' in selector {text!r}")
    terms.append(text[start:])
    return terms


def _check_key(key: str, text: str) -> str:
    if not key or len(key) > 317 or not _KEY.match(key):
        raise SelectorError(f"invalid label key {key!r} in selector {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r} in selector {text!r}")
    return value


_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*(?P<key>[^\s!=()]+)\s*(?P<op>==|=|!=)\s*(?P<val>[^\s!=()]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=()]+)\s*$")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse ``text``; empty or None selects everything. Raises ``SelectorError``."""
    if not text or not text.strip():
        return ()
    reqs: list[Requirement] = []
    for term in _split_terms(text):
        if not term.strip():
            raise SelectorError(f"empty term in selector {text!r}")
        if m := _SET_TERM.match(term):
            values = [v.strip() for v in m["vals"].split(",")]
            if not values or any(v == "" for v in values) and len(values) > 1:
                raise SelectorError(f"invalid value list in selector {text!r}")
            key = _check_key(m["key"], text)
            vals = frozenset(_check_value(v, text) for v in values)
            reqs.append(Requirement(key, m["op"], vals))
        elif m := _EQ_TERM.match(term):
            key = _check_key(m["key"], text)
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(Requirement(key, op, frozenset({_check_value(m["val"], text)})))
        elif m := _EXISTS_TERM.match(term):
            key = _check_key(m["key"], text)
            reqs.append(Requirement(key, "!exists" if m["neg"] else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement {term.strip()!r}")
    return tuple(reqs)


def labels_match(reqs: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for r in reqs:
        if not r.matches(labels):
            return False
    return True


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    equal: bool
    value: str

    def matches(self, obj: Mapping) -> bool:
        cur: object = obj
        for part in self.path:
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        if isinstance(cur, Mapping) and self.path == ("source",):
            cur = cur.get("component")
        actual = "" if cur is None else str(cur)
        return (actual == self.value) == self.equal


def parse_field_selector(text: str | None, kind: str = "") -> tuple[FieldRequirement, ...]:
    """Parse a field selector for objects of ``kind``; raises ``SelectorError``."""
    if not text or not text.strip():
        return ()
    allowed = COMMON_FIELDS | FIELDS_BY_KIND.get(kind, frozenset())
    reqs = []
    for term in text.split(","):
        m = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise SelectorError(f"invalid field selector term {term.strip()!r}")
        field, op, value = m.groups()
        if field not in allowed:
            raise SelectorError(f'field label not supported: "{field}"')
        reqs.append(FieldRequirement(tuple(field.split(".")), op != "!=", value))
    return tuple(reqs)


def fields_match(reqs: tuple[FieldRequirement, ...], obj: Mapping) -> bool:
    for r in reqs:
        if not r.matches(obj):
            return False
    return True


@dataclass(frozen=True)
class Selector:
    """A label selector and a field selector together."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, label: str | None, field: str | None, kind: str = "") -> Selector:
        return cls(parse_label_selector(label), parse_field_selector(field, kind))

    @property
    def empty(self) -> bool:
        return not self.labels and not self.fields

    def matches(self, obj: Mapping) -> bool:
        if self.labels and not labels_match(self.labels, obj["metadata"].get("labels")):
            return False
        return not self.fields or fields_match(self.fields, obj)
