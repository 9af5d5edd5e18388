"""Which reasoning-gym data sets may be scored, and how, so that a model's answer never runs as code.

Several reasoning-gym data sets score an answer by evaluating it: ``eval(answer)`` (string_insertion,
spiral_matrix, binary_matrix, n_queens) or ``sympy.parse_expr(answer)``, which evaluates its input
(countdown, puzzle24, polynomial_multiplication, simple_integration, intermediate_integration). A policy
that answers ``__import__('os').system(...)`` would run it in the scoring process. This module is the one
table of what is admitted, audited against reasoning-gym 0.1.25 (``score_answer`` and the helpers it
calls, looking for eval, exec, compile, sympify / parse_expr / parse_latex, pickle, subprocess):

* :data:`AUDITED`: data sets whose own ``score_answer`` only compares, splits, regex-matches and converts
  the answer with ``int`` / ``float`` / ``Decimal`` / ``Fraction`` / ``json.loads`` (each with what it does).
* :data:`COMPARATORS`: data sets whose own scorer evaluates text, scored instead by an exact comparator of
  this module that parses the answer with :func:`parse_literal` or :func:`evaluate_arithmetic` (an AST
  walk that admits only literals, or only numbers, ``+ - * /``, signs and parentheses) and gives the
  scores the data set's own scorer gives. Where they differ (a non-literal answer such as ``[1]*3``,
  an arithmetic answer using ``**``; puzzle24's numbers must be the puzzle's and the value exactly 24)
  the comparator's docstring says so.
* :data:`REFUSED`: the data sets refused, with the reason. Any name in none of the three tables is
  refused as well (a data set added by a later reasoning-gym release is refused until audited).
  :func:`check_admitted` is called when a config names a data set.

Defence in depth: every score (comparator or own scorer) runs inside :func:`code_blocked`, a Python audit
hook that, while active, refuses to compile or execute text (``eval``, ``exec``, ``compile`` of a string,
which is what ``sympy.parse_expr`` does), to start processes and to unpickle; a scorer that tries is a
failure (:class:`UntrustedCodeError`), so a mistake in the tables still cannot run an answer. The guard
holds only for the thread that scores and does not confine code that is already running (it is not a
sandbox); the worker processes of :mod:`knapsack_rl.tasks.scoring` add the resource limits.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import json
import math
import operator
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np

MAX_LITERAL_CHARS = 20_000
"""Longest answer :func:`parse_literal` parses (a longer one does not parse, and scores as unparsable)."""
MAX_EXPRESSION_CHARS = 1_000
"""Longest answer :func:`evaluate_arithmetic` evaluates."""

_PARSE_ONLY = "<knapsack-rl: parse only>"
"""File name of the ASTs this module parses: the one text compile the guard lets through (never executed)."""

_DEFAULT = "the default score_answer: string equality and containment"
_EQUAL = "string equality after case / whitespace normalisation"

AUDITED: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            [
                "acre",
                "aiw",
                "arc_1d",
                "base_conversion",
                "basic_arithmetic",
                "bf",
                "binary_alternation",
                "caesar_cipher",
                "count_bits",
                "count_primes",
                "course_schedule",
                "gcd",
                "isomorphic_strings",
                "largest_island",
                "lcm",
                "leg_counting",
                "letter_counting",
                "list_functions",
                "mahjong_puzzle",
                "maze",
                "modulo_grid",
                "number_filtering",
                "number_sequence",
                "ransom_note",
                "rotate_matrix",
                "rotten_oranges",
                "simple_equations",
                "simple_geometry",
                "string_manipulation",
                "string_splitting",
                "string_synthesis",
                "syllogism",
                "word_sequence_reversal",
            ],
            _DEFAULT,
        ),
        **dict.fromkeys(
            [
                "ab",
                "circuit_logic",
                "color_cube_rotation",
                "dice",
                "family_relationships",
                "needle_haystack",
                "self_reference",
                "zebra_puzzles",
                "path_star",
            ],
            _EQUAL,
        ),
        "advanced_geometry": "float() of the answer or of its comma-separated parts",
        "arc_agi": "parse_board: splits rows and cells, looks cells up in an alphabet",
        "boxnet": "json.loads, then regex and float() over the moves it lists",
        "calendar_arithmetic": "string equality, int()",
        "chain_sum": "Decimal comparison (compute_decimal_reward)",
        "coin_flip": "Fraction() of the answer, float comparison",
        "complex_arithmetic": "complex() / float() of the normalised answer",
        "cryptarithm": "split on ',' and '=', int() of the digits, checks the sum",
        "decimal_arithmetic": "Decimal comparison within the precision",
        "decimal_chain_sum": "Decimal comparison",
        "emoji_mystery": "string equality, character match",
        "figlet_font": "character match",
        "fraction_simplification": "regex, int() of numerator and denominator",
        "futoshiki": "digits of each line",
        "game_of_life": "json.loads, cell comparison",
        "game_of_life_halting": "bool() of the answer text",
        "graph_color": "json.loads, checks the colouring",
        "group_anagrams": "json.loads, sorted comparison",
        "gsm_symbolic": "regex, float()",
        "jugs": "json.loads, simulates the moves",
        "kakurasu": "0/1 digits of each line",
        "knight_swap": "json.loads, simulates the moves",
        "knights_knaves": "splits words into (name, role) pairs",
        "letter_jumble": "word comparison",
        "manipulate_matrix": "split, string comparison",
        "mini_sudoku": "digits of each line",
        "number_format": "float()",
        "palindrome_generation": "string comparison",
        "palindrome_partitioning": "json.loads, set comparison",
        "polynomial_equations": "split on ',', float()",
        "pool_matrix": "numpy.loadtxt as float32",
        "power_function": "Decimal, significant figures",
        "prime_factorization": "split on 'x', int()",
        "products": "Decimal comparison (compute_decimal_reward)",
        "propositional_logic": "its own recursive-descent parser of the connectives, truth tables",
        "quantum_lock": "regex A-C, simulates the button presses",
        "rearc": "parse_board: splits rows and cells, looks cells up in an alphabet",
        "rectangle_count": "int()",
        "rubiks_cube": "splits moves (regex, int repeat counts), magiccube rotations",
        "rush_hour": "regex moves, simulates the board",
        "sentence_reordering": "word comparison",
        "shortest_path": "split, walks the grid",
        "sokoban": "one move per character, simulates the game",
        "spell_backward": "character match",
        "sudoku": "digits of each line",
        "survo": "split, int()",
        "time_intervals": "split, int()",
        "tower_of_hanoi": "regex moves, simulates the pegs",
        "tsumego": "string equality, regex",
        "word_ladder": "split, word-list lookups",
        "word_sorting": "regex split, list comparison",
    }
)
"""Data sets scored by their own ``score_answer``, audited safe: name -> what it does with the answer."""

REFUSED: Mapping[str, str] = MappingProxyType(
    {
        "polynomial_multiplication": "its score_answer evaluates the model's answer (sympy.parse_expr)",
        "simple_integration": "its score_answer evaluates the model's answer (sympy.parse_expr)",
        "intermediate_integration": "its score_answer evaluates the model's answer (sympy.parse_expr)",
        "codeio": "generating its entries executes code snippets from its data file",
        "composite": "it mixes data sets its own config names; list them in the mix instead",
    }
)
"""Data sets that are never admitted, and why."""


class UntrustedCodeError(RuntimeError):
    """A scorer tried to compile or execute text, or to start a process, while scoring an answer."""


# ------------------------------------------------------------------ the guard
_BLOCKED: ContextVar[list[str] | None] = ContextVar("knapsack_rl_code_blocked", default=None)
_SPAWN_EVENTS = frozenset(
    {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn"}
)
_LOAD_EVENTS = frozenset({"pickle.find_class", "marshal.loads", "marshal.load"})


def _from_text(filename: object) -> bool:
    """True for the file name of code compiled from a string (``<string>``, ``<unknown>``...)."""
    name = filename.decode(errors="replace") if isinstance(filename, bytes) else str(filename)
    return name.startswith("<")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The audit hook: inside :func:`code_blocked`, refuse text compiled or executed, processes, unpickling."""
    blocked = _BLOCKED.get()
    if blocked is None:
        return
    if event == "compile":
        refuse = _from_text(args[1]) and args[1] != _PARSE_ONLY
    elif event == "exec":
        refuse = _from_text(getattr(args[0], "co_filename", "<?>"))
    else:
        refuse = event in _SPAWN_EVENTS or event in _LOAD_EVENTS
    if refuse:
        blocked.append(event)
        raise UntrustedCodeError(f"{event} is blocked while an untrusted answer is scored")


@functools.lru_cache(maxsize=1)
def _install_hook() -> None:
    """Add :func:`_audit` to this process once (audit hooks cannot be removed; it is idle outside the guard)."""
    sys.addaudithook(_audit)


@contextlib.contextmanager
def code_blocked(what: str) -> Iterator[None]:
    """Run the block with text compilation / execution and process starts refused (this thread only).

    Raises:
        UntrustedCodeError: after the block, if it tried any of them (even if it caught the refusal).
    """
    _install_hook()
    events: list[str] = []
    token = _BLOCKED.set(events)
    try:
        yield
    except Exception as exc:
        if events:
            raise _blocked(what, events) from exc
        raise
    finally:
        _BLOCKED.reset(token)
    if events:
        raise _blocked(what, events)


def _blocked(what: str, events: list[str]) -> UntrustedCodeError:
    return UntrustedCodeError(f"{what} tried to run text as code or start a process ({', '.join(events)}); blocked")


# ------------------------------------------------------------------- parsers
def _parse(text: str, limit: int) -> ast.expr:
    if len(text) > limit:
        raise ValueError(f"answer longer than {limit} characters")
    try:
        return ast.parse(text.strip(), filename=_PARSE_ONLY, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ValueError(f"answer does not parse ({type(exc).__name__})") from None


def parse_literal(text: str) -> Any:
    """The Python literal ``text``: lists, tuples, str / int / float / bool / None constants, signed numbers.

    Nothing is evaluated: the text is parsed to an AST and only those nodes are accepted.

    Raises:
        ValueError: anything else (a name, a call, an operator, ``**``), or longer than
            :data:`MAX_LITERAL_CHARS`.
    """
    return _literal(_parse(text, MAX_LITERAL_CHARS))


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = node.operand.value if isinstance(node.operand, ast.Constant) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"not a literal: {type(node).__name__}")


_ARITH: Mapping[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = MappingProxyType(
    {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
)


def evaluate_arithmetic(text: str) -> Fraction:
    """The exact value of ``text``: int / float literals, ``+ - * /``, unary signs and parentheses only.

    Raises:
        ValueError: any other node (names, calls, ``**``, ``%``, ``^``), a literal too large for a float
            (``1e999``), or longer than :data:`MAX_EXPRESSION_CHARS`.
        ZeroDivisionError: a division by zero.
    """
    return _arith(_parse(text, MAX_EXPRESSION_CHARS))


def _arith(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if not math.isfinite(node.value):
            raise ValueError(f"not a finite number: {node.value!r}")
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"not + - * / arithmetic: {type(node).__name__}")


# --------------------------------------------------------------- comparators
Comparator = Callable[[str, Mapping[str, Any]], float]
_INTS = re.compile(r"\b\d+\b")


def _string_insertion(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for the answer; 0.1 for a literal list (or tuple, or string) of strings that joins to it."""
    if answer == entry["answer"]:
        return 1.0
    with contextlib.suppress(ValueError, TypeError):
        return 0.1 if "".join(parse_literal(answer)) == entry["answer"] else 0.0
    return 0.0


def _spiral_matrix(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for the answer (stripped); 0.1 for a literal list whose items, space-joined, are the answer."""
    oracle, answer = str(entry["answer"]).strip(), answer.strip()
    if not answer:
        return 0.0
    if answer == oracle:
        return 1.0
    with contextlib.suppress(ValueError, TypeError):
        return 0.1 if " ".join(str(item) for item in parse_literal(answer)) == oracle else 0.0
    return 0.0


def _binary_matrix(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for the answer; 0.1 for a literal list of rows that prints as the answer."""
    if answer == entry["answer"]:
        return 1.0
    with contextlib.suppress(ValueError, TypeError):
        rows = parse_literal(answer)
        return 0.1 if "\n".join(" ".join(str(x) for x in row) for row in rows) == entry["answer"] else 0.0
    return 0.0


def _n_queens(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for a valid board; 0.5 for a literal list of rows of cells that prints as one."""
    valid = entry["metadata"]["valid_answers"]
    if answer in valid:
        return 1.0
    with contextlib.suppress(ValueError, TypeError):
        rows = parse_literal(answer)
        return 0.5 if "\n".join(" ".join(x for x in row) for row in rows) in valid else 0.0
    return 0.0


def _number_sorting(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for a JSON list (single quotes allowed) sorted in the asked direction, each within 1 of the
    sorted numbers (the data set's own rule; it reads them with eval, this reads its metadata)."""
    try:
        given = json.loads(answer.replace("'", '"'))
        if not isinstance(given, list):
            return 0.0
        expected = [float(x) for x in entry["metadata"]["sorted_numbers"]]
        values = [float(x) for x in given]
    except (ValueError, TypeError, RecursionError):
        return 0.0
    ascending = entry["metadata"]["direction"] == "ascending"
    if len(values) != len(expected) or values != sorted(values, reverse=not ascending):
        return 0.0
    return float(all(abs(a - b) <= 1 for a, b in zip(values, expected, strict=True)))


def _bitwise_arithmetic(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 when ``int(answer, 0)`` (decimal, 0x, 0o, 0b) is the result, else 0.0 (the data set evals the
    problem; its answer is that result in hex)."""
    try:
        return float(int(answer, 0) == int(entry["answer"], 0))
    except ValueError:
        return 0.0


def _countdown(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for + - * / arithmetic of exactly the given numbers that makes the target (within 1e-6); 0.05
    for a parsable expression that does not; 0.01 for an unparsable one (e.g. one using ``**``)."""
    if not answer.strip():
        return 0.01
    try:
        value = evaluate_arithmetic(answer)
    except (ValueError, ZeroDivisionError):
        return 0.01
    meta = entry["metadata"]
    if sorted(int(m) for m in _INTS.findall(answer)) != sorted(meta["numbers"]):
        return 0.05
    try:
        close = bool(np.isclose(float(value), meta["target"], atol=1e-6))
    except OverflowError:
        close = False
    return 1.0 if close else 0.05


def _puzzle24(answer: str, entry: Mapping[str, Any]) -> float:
    """1.0 for + - * / arithmetic of exactly the puzzle's four numbers whose value is exactly 24, else 0.01.

    Stricter than the data set's own scorer, which accepts any four numbers in its value range and
    truncates the value to an int (49/2 counts as 24); correct and wrong answers score the same.
    """
    text = answer.strip()
    try:
        value = evaluate_arithmetic(text)
    except (ValueError, ZeroDivisionError):
        return 0.01
    if sorted(int(m) for m in _INTS.findall(text)) != sorted(entry["metadata"]["numbers"]):
        return 0.01
    return 1.0 if value == 24 else 0.01


COMPARATORS: Mapping[str, Comparator] = MappingProxyType(
    {
        "string_insertion": _string_insertion,
        "spiral_matrix": _spiral_matrix,
        "binary_matrix": _binary_matrix,
        "n_queens": _n_queens,
        "number_sorting": _number_sorting,
        "bitwise_arithmetic": _bitwise_arithmetic,
        "countdown": _countdown,
        "puzzle24": _puzzle24,
    }
)
"""Data sets whose own scorer evaluates text, scored by this module's comparator: name -> comparator."""


# ------------------------------------------------------------------ admission
def refusal(name: str) -> str | None:
    """Why data set ``name`` is refused, or None when it is admitted."""
    if name in AUDITED or name in COMPARATORS:
        return None
    return REFUSED.get(name, "it is not in knapsack-rl's audited table of reasoning-gym data sets")


def check_admitted(name: str) -> None:
    """Raise a one-line ValueError naming ``name`` and the reason when it is refused."""
    reason = refusal(name)
    if reason is not None:
        raise ValueError(f"reasoning-gym data set {name!r} is refused: {reason}")


@functools.lru_cache(maxsize=64)
def _dataset(name: str, config_json: str) -> Any:
    """A data set instance whose ``score_answer`` scores entries of (name, config); cached per process."""
    import reasoning_gym  # type: ignore[import-untyped]

    return reasoning_gym.create_dataset(name, **json.loads(config_json), seed=0, size=1)


def score_answer(name: str, config: Mapping[str, Any], answer: str, entry: Mapping[str, Any]) -> float:
    """The score of ``answer`` for ``entry`` of data set ``name`` (with ``config``), under :func:`code_blocked`.

    Raises:
        ValueError: ``name`` is refused.
        UntrustedCodeError: the scorer tried to run text as code or start a process.
    """
    check_admitted(name)
    comparator = COMPARATORS.get(name)
    if comparator is None:
        own = _dataset(name, json.dumps(config, sort_keys=True)).score_answer
        comparator = lambda a, e: own(a, copy.deepcopy(dict(e)))  # noqa: E731
    with code_blocked(f"reasoning-gym data set {name!r}'s scorer"):
        value = comparator(answer, entry)
    return float(value)


__all__ = [
    "AUDITED",
    "COMPARATORS",
    "MAX_EXPRESSION_CHARS",
    "MAX_LITERAL_CHARS",
    "REFUSED",
    "UntrustedCodeError",
    "check_admitted",
    "code_blocked",
    "evaluate_arithmetic",
    "parse_literal",
    "refusal",
    "score_answer",
]
