"""Schedules: a setting that changes with the frame, written as the peers write it.

Three forms, one grammar:

- a number: ``"1.05"``;
- keyframes (Disco Diffusion's form): ``"0: (1.0), 50: (1.05)"``, linear between keys, held
  before the first and after the last; a key's value may be any expression (Deforum's form:
  ``"0: (10*sin(2*3.14*t/10))"``), evaluated at the frame, so values may hold commas and
  nested parentheses;
- an expression of ``t`` (the frame), ``max_f`` (the frame count) and ``s`` (the seed):
  ``"1 + 0.05*sin(t/5)"``.

Expressions are read by this module's own tokenizer and parser into a small tree and evaluated
by walking it: only numbers, the three names, ``pi`` and ``e``, arithmetic, comparisons and the
functions of :data:`FUNCTIONS`. Nothing is handed to Python's ``eval`` or ``compile`` (which
``ast.parse`` calls), nor to numexpr. Text, nesting and exponents are bounded before any work,
and a value that is not finite is one line naming the setting and the frame.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Schedule",
    "parse_schedule",
    "parse_step_list",
    "step_value",
    "FUNCTIONS",
    "MAX_TEXT",
    "MAX_DEPTH",
    "MAX_HEIGHT",
]

MAX_TEXT = 4096  # characters in one schedule
MAX_DEPTH = 32  # nested parentheses and calls
MAX_KEYS = 1000  # keyframes in one schedule
MAX_FRAME = 10**6  # the largest key frame
MAX_EXPONENT = 64.0  # |b| in a ** b
MAX_HEIGHT = 200  # levels of the parsed tree (the walk's recursion)


def _where(condition: float, a: float, b: float) -> float:
    return a if condition else b


def _round(x: float, digits: float = 0) -> float:
    return float(round(x, int(_bounded(digits, 0, 15))))


def _bounded(x: float, low: float, high: float) -> float:
    if not low <= x <= high:
        raise ValueError(f"{x!r} out of [{low}, {high}]")
    return x


FUNCTIONS: dict[str, tuple[Callable[..., float], tuple[int, ...]]] = {
    # name: (function, the argument counts it takes)
    "sin": (math.sin, (1,)), "cos": (math.cos, (1,)), "tan": (math.tan, (1,)),
    "asin": (math.asin, (1,)), "acos": (math.acos, (1,)), "atan": (math.atan, (1,)),
    "atan2": (math.atan2, (2,)), "sinh": (math.sinh, (1,)), "cosh": (math.cosh, (1,)),
    "tanh": (math.tanh, (1,)), "sqrt": (math.sqrt, (1,)), "exp": (math.exp, (1,)),
    "log": (math.log, (1,)), "log10": (math.log10, (1,)), "log2": (math.log2, (1,)),
    "abs": (abs, (1,)), "floor": (lambda x: float(math.floor(x)), (1,)),
    "ceil": (lambda x: float(math.ceil(x)), (1,)), "round": (_round, (1, 2)),
    "min": (min, (2, 3, 4)), "max": (max, (2, 3, 4)), "where": (_where, (3,)),
    "clip": (lambda x, a, b: min(max(x, a), b), (3,)), "sign": (lambda x: float((x > 0) - (x < 0)), (1,)),
    "fmod": (math.fmod, (2,)), "pow": (lambda a, b: _power(a, b), (2,)),
}  # fmt: skip
CONSTANTS = {"pi": math.pi, "e": math.e}
VARIABLES = ("t", "max_f", "s")

_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|<=|>=|==|!=|[-+*/%(),<>^]))"
)
# Binding power of each binary operator; ** (and ^, numexpr's spelling) binds right.
_BINARY = {"<": 1, "<=": 1, ">": 1, ">=": 1, "==": 1, "!=": 1, "+": 2, "-": 2, "*": 3, "/": 3,
           "%": 3, "**": 5, "^": 5}  # fmt: skip


def _power(a: float, b: float) -> float:
    if abs(b) > MAX_EXPONENT:
        raise ValueError(f"exponent {b!r} beyond ±{MAX_EXPONENT:g}")
    return math.pow(a, b)


_APPLY: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "%": math.fmod, "**": _power, "^": _power,
    "<": lambda a, b: float(a < b), "<=": lambda a, b: float(a <= b),
    ">": lambda a, b: float(a > b), ">=": lambda a, b: float(a >= b),
    "==": lambda a, b: float(a == b), "!=": lambda a, b: float(a != b),
}  # fmt: skip

# A parsed expression: a number, a variable name, or (operator or function, operands...).
Node = float | str | tuple


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if not match:
            raise ValueError(f"unexpected {text[at:].strip()[:12]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        at = match.end()
    return tokens


class _Parser:
    """A Pratt parser over the tokens; depth bounded before it recurses further."""

    def __init__(self, text: str) -> None:
        self.tokens, self.at = _tokens(text), 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ValueError(f"expected {value!r}" if value else "the expression ends too soon")
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.expression(0, 0)
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()[1]!r}")
        if _height(node) > MAX_HEIGHT:  # the walk recurses once per level
            raise ValueError(f"more than {MAX_HEIGHT} operations deep; split it into keyframes")
        return node

    def expression(self, power: int, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} deep")
        left = self.operand(depth)
        while (token := self.peek()) and token[0] == "op" and token[1] in _BINARY:
            strength = _BINARY[token[1]]
            if strength < power or (strength == power and token[1] not in ("**", "^")):
                break
            self.take()
            right = self.expression(strength, depth + 1)
            left = (token[1], left, right)
        return left

    def operand(self, depth: int) -> Node:
        kind, value = self.take()
        if kind == "number":
            return float(value)
        if kind == "op" and value in "+-":
            return ("neg" if value == "-" else "pos", self.expression(4, depth + 1))
        if kind == "op" and value == "(":
            inner = self.expression(0, depth + 1)
            self.take(")")
            return inner
        if kind == "name":
            if self.peek() == ("op", "("):
                return self.call(value, depth)
            if value in CONSTANTS:
                return CONSTANTS[value]
            if value in VARIABLES:
                return value
            raise ValueError(f"unknown name {value!r}; expected t, max_f, s, pi, e or a function")
        raise ValueError(f"unexpected {value!r}")

    def call(self, name: str, depth: int) -> Node:
        if name not in FUNCTIONS:
            raise ValueError(f"unknown function {name!r}; expected one of {sorted(FUNCTIONS)}")
        self.take("(")
        arguments = [self.expression(0, depth + 1)]
        while self.peek() == ("op", ","):
            self.take()
            arguments.append(self.expression(0, depth + 1))
        self.take(")")
        if len(arguments) not in FUNCTIONS[name][1]:
            raise ValueError(f"{name}() takes {' or '.join(map(str, FUNCTIONS[name][1]))} arguments, got {len(arguments)}")  # fmt: skip
        return (name, *arguments)


def _height(node: Node) -> int:
    """The tree's height, found without recursion (a chain of sums is left-deep)."""
    tallest, stack = 0, [(node, 1)]
    while stack:
        node, level = stack.pop()
        tallest = max(tallest, level)
        if isinstance(node, tuple):
            stack.extend((child, level + 1) for child in node[1:])
    return tallest


def _evaluate(node: Node, names: dict[str, float]) -> float:
    if isinstance(node, float):
        return node
    if isinstance(node, str):
        return names[node]
    head, *rest = node
    values = [_evaluate(child, names) for child in rest]
    if head == "neg":
        return -values[0]
    if head == "pos":
        return values[0]
    if head in _APPLY:
        return _APPLY[head](*values)
    return float(FUNCTIONS[head][0](*values))


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: ``keys`` (frame, expression tree), sorted; one key at frame 0 for a
    number or a bare expression."""

    name: str
    text: str
    keys: tuple[tuple[int, Node], ...]

    def at(self, frame: int, frames: int = 0, seed: int = 0) -> float:
        """The value at ``frame`` of ``frames`` (``max_f``), for the run's ``seed`` (``s``)."""
        names = {"t": float(frame), "max_f": float(frames), "s": float(seed)}
        keys = self.keys
        try:
            if frame <= keys[0][0]:
                value = _evaluate(keys[0][1], names)
            elif frame >= keys[-1][0]:
                value = _evaluate(keys[-1][1], names)
            else:
                index = next(i for i, (k, _) in enumerate(keys) if k > frame)
                (k0, e0), (k1, e1) = keys[index - 1], keys[index]
                v0, v1 = _evaluate(e0, names), _evaluate(e1, names)
                value = v0 + (v1 - v0) * (frame - k0) / (k1 - k0)
        except (ArithmeticError, ValueError) as error:
            raise ValueError(
                f"{self.name}: {_shown(self.text)} at frame {frame}: {error}"
            ) from None
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: {_shown(self.text)} is {value} at frame {frame}; expected a finite number")  # fmt: skip
        return value

    @property
    def constant(self) -> bool:
        """Whether the value is the same at every frame (a number, or keys of one number)."""
        return all(isinstance(e, float) for _, e in self.keys) and len({e for _, e in self.keys}) == 1  # fmt: skip


_KEY = re.compile(r"\s*(\d+)\s*:\s*")


@functools.lru_cache(maxsize=256, typed=True)  # values are read frame by frame: parse once
def parse_schedule(text: str | float | int, name: str) -> Schedule:
    """Read a schedule (see the module's doc); ``ValueError`` naming ``name`` if it is not one."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{name}: expected a number or a schedule string, got {text!r}")
    text = str(text)
    if len(text) > MAX_TEXT:
        raise ValueError(f"{name}: {len(text)} characters; expected at most {MAX_TEXT}")
    try:
        keys = _keyframes(text) if _KEY.match(text) else ((0, _Parser(text).parse()),)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{name}: {_shown(text)}: {error}; expected a number, \"0: (1.0), 50: (1.05)\" or an expression of t, max_f and s") from None  # fmt: skip
    return Schedule(name, text, keys)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _keyframes(text: str) -> tuple[tuple[int, Node], ...]:
    """``"0: (1.0), 50: (x)"`` -> ((0, tree), (50, tree)): a key's value runs to the comma
    that closes it at parenthesis depth 0."""
    keys: dict[int, Node] = {}
    at = 0
    while at < len(text):
        match = _KEY.match(text, at)
        if not match:
            raise ValueError(f"expected FRAME: (VALUE) at {text[at : at + 12]!r}")
        frame = int(match.group(1)[:8])
        if frame > MAX_FRAME or len(match.group(1)) > 8:
            raise ValueError(f"key frame {match.group(1)} beyond {MAX_FRAME}")
        at, depth, start = match.end(), 0, match.end()
        while at < len(text) and not (text[at] == "," and depth == 0):
            depth += {"(": 1, ")": -1}.get(text[at], 0)
            if depth < 0:
                raise ValueError("unbalanced ')'")
            at += 1
        if frame in keys:
            raise ValueError(f"frame {frame} keyed twice")
        keys[frame] = _Parser(text[start:at]).parse()
        if len(keys) > MAX_KEYS:
            raise ValueError(f"more than {MAX_KEYS} keyframes")
        at += 1  # the comma
    if not keys:
        raise ValueError("no keyframes")
    return tuple(sorted(keys.items(), key=lambda item: item[0]))


MAX_STEPS_LISTED = 10_000  # entries of a step list (Disco's lists have 1000)
_LIST_TERM = re.compile(r"\s*\[\s*([^\[\]]*)\]\s*(?:\*\s*(\d{1,6}))?\s*")


@functools.lru_cache(maxsize=64)  # a config reads its lists at every change of the cuts
def parse_step_list(text: str, name: str) -> tuple[float, ...]:
    """Disco Diffusion's per-step lists, such as ``cut_overview``'s ``"[12]*400+[4]*600"``:
    ``+``-joined terms, each a bracketed list of numbers, optionally repeated ``* N``; or one
    number, held throughout. Read by a pattern, never evaluated; at most
    :data:`MAX_STEPS_LISTED` entries, counted before any list is built."""
    text = str(text).strip()
    if len(text) > MAX_TEXT:
        raise ValueError(f"{name}: {len(text)} characters; expected at most {MAX_TEXT}")
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{name}: {text!r} is not a finite number")
        return (value,)
    terms, count = [], 0
    for part in text.split("+"):
        match = _LIST_TERM.fullmatch(part)
        if match is None:
            raise ValueError(f'{name}: {part.strip()!r} is not a list term; expected Disco\'s form, such as "[12]*400+[4]*600"')  # fmt: skip
        items = [item.strip() for item in match[1].split(",")]
        try:
            numbers = [float(item) for item in items]
        except ValueError:
            raise ValueError(f"{name}: {match[1].strip()!r} holds something other than numbers") from None  # fmt: skip
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"{name}: {match[1].strip()!r} holds a number that is not finite")
        times = int(match[2]) if match[2] else 1
        count += len(numbers) * times
        if count > MAX_STEPS_LISTED:
            raise ValueError(f"{name}: over {MAX_STEPS_LISTED} entries; expected a shorter list")
        terms.append((numbers, times))
    values = tuple(x for numbers, times in terms for _ in range(times) for x in numbers)
    if not values:
        raise ValueError(f"{name}: an empty list; expected at least one number")
    return values


def step_value(values: tuple[float, ...], step: int, steps: int) -> float:
    """The entry of a step list in force at ``step`` of ``steps``: the list spread evenly over
    the run (Disco's lists are read at the fraction of the schedule done)."""
    index = len(values) * step // max(1, steps)
    return values[min(max(index, 0), len(values) - 1)]
