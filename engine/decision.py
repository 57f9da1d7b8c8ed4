"""A routing decision: which chain of the ladder runs and how many tokens its first level drafts.

One spelling, parsed by `Decision.parse` and printed by `str(decision)` (= `decision.label`):

    plain                     plain decoding (K = 0, or a chain of the target alone)
    ngram>int4>target@k4      levels cheapest first, ending at the target, then K
    int4>target@k8p0.5        ... then p_min: the first level stops drafting at the first token
                              whose top-1 probability is below 0.5 (llama.cpp's --draft-p-min)

The parser also takes `@4` for `@k4`. p_min = 0 (no `p` part) drafts all K tokens, as before
the threshold existed, so every label without one prints as it always has. A threshold needs a
model first level: a model-free drafter has no probabilities and already proposes only as far
as its match goes (engine/drafters). The comma chain `ngram,target` is the old spelling: it
is still read for one release, with a FutureWarning (the deprecation warning Python shows
users of a command by default).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Real

TARGET = "target"
PLAIN = "plain"
FORMAT = ("'plain' or levels cheapest first ending at the target, then K and an optional p_min: "
          "'ngram>int4>target@k4', 'int4>target@k8p0.5'")
_DRAFT = re.compile(r"k?(\d+)(?:p(\d*\.?\d+(?:e-?\d+)?))?")     # "k8", "8", "k8p0.5"


def parse_chain(text: str) -> tuple[str, ...]:
    """Levels of `ngram>int4>target` (the old `ngram,int4,target` warns), cheapest first."""
    if "," in text:
        warnings.warn(f"the comma chain {text!r} is deprecated; write {text.replace(',', '>')!r}",
                      FutureWarning, stacklevel=3)
        text = text.replace(",", ">")
    return tuple(part.strip() for part in text.split(">") if part.strip())


@dataclass(frozen=True)
class Decision:
    """`chain` is ordered from the cheapest level to the target; K = 0 means plain decoding.
    A string chain is read by `parse_chain`. `p_min` in [0, 1): the first level stops drafting a
    row at the first token whose top-1 probability under it is below p_min, and does not propose
    that token (0: always K tokens); only a model first level takes one."""

    chain: tuple[str, ...] = (TARGET,)
    k: int = 0
    p_min: float = 0.0

    def __post_init__(self) -> None:
        chain = parse_chain(self.chain) if isinstance(self.chain, str) else tuple(self.chain)
        object.__setattr__(self, "chain", chain)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ValueError(f"draft length K must be an integer >= 0, got {self.k!r}")
        if not self.chain or self.chain[-1] != TARGET:
            raise ValueError(f"a chain must end at '{TARGET}', got {'>'.join(self.chain) or 'nothing'}")
        if len(set(self.chain)) != len(self.chain):
            raise ValueError(f"a chain may use each level once, got {'>'.join(self.chain)}")
        if isinstance(self.p_min, bool) or not isinstance(self.p_min, Real) or not 0 <= self.p_min < 1:
            raise ValueError(f"p_min must be a number in [0, 1), got {self.p_min!r}")
        object.__setattr__(self, "p_min", float(self.p_min))
        if self.p_min and self.is_plain:
            raise ValueError(f"p_min {self.p_min} needs a draft: plain decoding drafts nothing")
        if self.p_min and self.chain[0] in _model_free_names():
            raise ValueError(f"p_min needs a model first level; {self.chain[0]!r} is model-free and "
                             f"proposes only as far as its match goes")

    @classmethod
    def parse(cls, text: str) -> Decision:
        """The decision `text` spells (see the module docstring); ValueError naming the form otherwise."""
        if not isinstance(text, str):
            raise ValueError(f"a decision is spelled as a string, {FORMAT}; got {text!r}")
        if text.strip() == PLAIN:
            return cls()
        chain, sep, draft = text.strip().partition("@")
        match = _DRAFT.fullmatch(draft.strip())
        if not sep or not match or not chain.strip():
            raise ValueError(f"decision {text!r} must be {FORMAT}")
        try:
            return cls(parse_chain(chain), int(match[1]), float(match[2] or 0.0))
        except ValueError as exc:
            raise ValueError(f"decision {text!r}: {exc}") from None

    @property
    def is_plain(self) -> bool:
        return self.k == 0 or len(self.chain) == 1

    @property
    def label(self) -> str:
        """The decision's one printed form: 'plain', 'ngram>target@k4' or 'int4>target@k8p0.5'
        (`Decision.parse` reads it back to an equal Decision)."""
        if self.is_plain:
            return PLAIN
        return f"{self.chain_label}@k{self.k}" + (f"p{self.p_min!r}" if self.p_min else "")

    @property
    def chain_label(self) -> str:
        """The chain that runs, 'ngram>target', or 'target' for plain decoding (metrics' chain label)."""
        return TARGET if self.is_plain else ">".join(self.chain)

    def __str__(self) -> str:
        return self.label


def _model_free_names():
    from engine.drafters import MODEL_FREE_DRAFTERS     # the registry imports nothing of ours back
    return MODEL_FREE_DRAFTERS


def decision_grid(chains: Iterable[Iterable[str] | str], ks: Iterable[int] = (1, 2, 4, 8),
                  p_mins: Iterable[float] = ()) -> list[Decision]:
    """Plain decoding first, then every chain with every K (chains given as tuples or "a>b>target"),
    and, for a chain whose first level is a model, every K again with each threshold of `p_mins`."""
    ks, p_mins = list(ks), list(p_mins)
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"draft lengths must be integers >= 1, got {ks}")
    decisions = [Decision((TARGET,), 0)]
    for chain in chains:
        chain = Decision(chain if isinstance(chain, str) else tuple(chain)).chain
        if len(chain) > 1:
            decisions += [Decision(chain, k) for k in ks]
            if chain[0] not in _model_free_names():
                decisions += [Decision(chain, k, p) for p in p_mins for k in ks]
    return list(dict.fromkeys(decisions))


def as_decision(action: str | Decision | tuple) -> Decision:
    """An action as configs list it: a Decision, its spelling (`Decision.parse`) or (chain, K)."""
    if isinstance(action, Decision):
        return action
    if isinstance(action, str):
        return Decision.parse(action)
    if isinstance(action, tuple) and len(action) == 2:
        return Decision(action[0] if isinstance(action[0], str) else tuple(action[0]), action[1])
    raise ValueError(f"action {action!r} must be a Decision, (chain, K) or {FORMAT}")


def validate_decision(decision: Decision, level_names, drafters) -> None:
    """Raise ValueError unless every level of the chain is known (`level_names`) and only its
    first level is a model-free drafter (`drafters`)."""
    known = set(level_names)
    for name in decision.chain:
        if name not in known:
            raise ValueError(f"unknown drafter {name!r}; available: {', '.join(sorted(known))}")
    for name in decision.chain[1:]:
        if name in drafters:
            raise ValueError(f"model-free drafter {name!r} cannot verify; it may only start a chain")
    if decision.p_min and decision.chain[0] in drafters:
        raise ValueError(f"p_min needs a model first level; {decision.chain[0]!r} is model-free")


def invalid_reasons(decisions: list, level_names, drafters) -> list[str | None]:
    """Per row, why its decision cannot run (None when it can); each distinct decision is checked once."""
    reasons: dict[Decision, str | None] = {}
    for decision in decisions:
        if isinstance(decision, Decision) and decision not in reasons:
            try:
                validate_decision(decision, level_names, drafters)
                reasons[decision] = None
            except ValueError as exc:
                reasons[decision] = str(exc)
    return [reasons[d] if isinstance(d, Decision) else f"the router returned {d!r}, not a Decision"
            for d in decisions]


def per_row(decisions, num_rows: int) -> list:
    """A router's or caller's decisions as one per row: a lone Decision applies to every row."""
    rows = [decisions] * num_rows if isinstance(decisions, Decision) else list(decisions)
    if len(rows) != num_rows:
        raise ValueError(f"the router returned {len(rows)} decisions for a batch of {num_rows}")
    return rows


def capped_draft_length(request, decision: Decision, max_model_len: int) -> int:
    """K capped so that no level runs past the context or past max_tokens.

    Every verifying level adds one token, so a chain of n levels outputs up to K + n - 1
    tokens and the target feeds up to K + n - 2 proposals after the last committed token.
    """
    if decision.is_plain:
        return 0
    extra = len(decision.chain) - 2
    remaining = request.params.max_tokens - len(request.output_token_ids) - 1 - extra
    room = max_model_len - request.num_tokens - extra
    return max(0, min(decision.k, remaining, room))


class StaticRouter:
    """Always the same decision for every row (a baseline, and the engine's default)."""

    def __init__(self, decision: Decision):
        self.decision = decision

    def decide(self, view) -> list[Decision]:
        return [self.decision] * len(view.rows)
