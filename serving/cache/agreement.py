"""The second check a semantic candidate must pass before it is served.

MiniLM's cosine similarity cannot tell "convert 5 km to miles" from "convert 5 miles to km"
(0.99) or "capital of France" from "capital of Spain", while it scores many true paraphrases
only 0.90-0.95. So a candidate above the threshold is served only if the two prompts also
agree on what usually carries the meaning of a short request:

- numbers, in order ("5 km" is not "6 km", "5 to 10" is not "10 to 5");
- names (capitalised words inside a sentence, acronyms): each must appear on the other side
  (in any case: "france" typed in lower case is France), in the same order where both sides
  write them as names ("Germany beat Brazil" is not "Brazil beat Germany");
- content words: after dropping function words and phrasing words ("please", "how do I",
  "tell me", "calculate"), light stemming, a few common synonyms ("tall" and "height") and
  turning "France's capital" into "capital of France", the two sets must be equal;
- and in order, when a relational word ("to", "from", "than", "divided", "vs") makes order
  matter: "5 km to miles" is not "5 miles to km", "a dog bigger than a cat" is not "a cat
  bigger than a dog".

It is deliberately strict: a false hit serves a wrong answer, a false miss only costs a call.
benchmarks/cache/ measures what it gives up in recall.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*|\d+(?:[.,]\d+)*")
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "twenty": "20", "hundred": "100", "thousand": "1000", "dozen": "12",
}  # fmt: skip
_STOPWORDS = """a an the of in on at for to from by with about into onto than as and or
    but if then so
    is are was were be been being am do does did done doing have has had having will would
    shall should can could may might must i me my mine we our ours you your yours he him his
    she her hers it its they them their theirs this that these those there here what which who
    whom whose when where why how whats what's how's hows whats i'm im it's please tell
    explain describe show give let know want need like just kindly quick quickly briefly simple
    simply some any way ways mean meaning definition define does doesn't isn't don't
    help really actually exactly also very much many lot lots get got thing things something
    anything someone anyone one ones word words someone say said question answer example
    examples list name exist exists possible way step steps calculate compute determine find
    provide summary summarize summarise overview located credited year number degree degrees
    main mainly"""
# Words that make the order of what surrounds them matter: "5 km to miles", "a dog bigger
# than a cat", "from Paris to London", "10 divided by 2".
_RELATIONAL = frozenset(
    [
        "to",
        "from",
        "into",
        "onto",
        "than",
        "vs",
        "versus",
        "over",
        "before",
        "after",
        "minus",
        "divided",
        "per",
        "times",
        "beat",
        "beats",
        "conquer",
        "conquered",
        "defeat",
        "defeated",
    ]
)
_STOP = frozenset(_STOPWORDS.split())
_SYNONYMS = {
    "automobile": "car", "cars": "car", "vehicle": "car", "film": "movie", "picture": "photo",
    "large": "size", "huge": "size", "small": "little", "tiny": "little", "begin": "start",
    "commence": "start", "finish": "end", "purchase": "buy", "acquire": "buy",
    "couch": "sofa", "physician": "doctor", "kid": "child", "children": "child",
    "kids": "child", "fix": "repair", "mend": "repair", "quick": "fast", "rapid": "fast",
    "speedy": "fast", "occupation": "job", "employment": "job", "happy": "glad",
    "sad": "unhappy",
    "create": "make", "build": "make", "construct": "make", "programme": "program",
    "america": "usa", "u.s.": "usa",
    "conversion": "convert", "transform": "convert",
    "recover": "reset", "restore": "reset", "delete": "remove",
    "erase": "remove", "eliminate": "remove", "cancel": "stop", "halt": "stop",
    "cost": "price", "costs": "price", "priced": "price", "expensive": "price",
    "rise": "increase", "grow": "increase", "boost": "increase",
    "method": "approach", "technique": "approach", "means": "meaning",
    "author": "write", "writer": "write", "wrote": "write", "written": "write",
    "writes": "write", "writing": "write", "invented": "invent", "inventor": "invent",
    "discovered": "discover", "discoverer": "discover", "km": "kilometer",
    "kilometre": "kilometer", "kilometres": "kilometer", "kilometers": "kilometer",
    "mi": "mile", "lbs": "pound", "lb": "pound", "kg": "kilogram", "kgs": "kilogram",
    "kilo": "kilogram", "kilos": "kilogram", "f": "fahrenheit", "c": "celsius",
    "centigrade": "celsius", "cm": "centimeter", "m": "meter", "metre": "meter",
    "metres": "meter", "ft": "foot", "feet": "foot", "inches": "inch", "in.": "inch",
    "hrs": "hour", "hr": "hour", "mins": "minute", "min": "minute", "secs": "second",
    "sec": "second", "painter": "paint", "founder": "found", "creator": "make",
    "tall": "height", "deep": "depth", "long": "length", "far": "distance", "old": "age",
    "big": "size", "hot": "temperature", "spoken": "speak", "colour": "color",
    "favourite": "favorite", "centre": "center", "litre": "liter", "grey": "gray",
    "causes": "cause", "caused": "cause", "differ": "difference", "different": "difference",
    "frequently": "often", "daily": "day", "inventing": "invent", "discovering": "discover",
}  # fmt: skip


@dataclass(frozen=True)
class Signature:
    numbers: tuple[str, ...]
    names: frozenset[str]
    content: tuple[str, ...]  # in order of first appearance
    ordered: bool  # a relational word makes the order of the content words matter
    name_order: tuple[str, ...]
    words: frozenset[str]  # every word, lower-cased: "france" typed in lower case


_CONTRACTION = re.compile(r"\b([A-Za-z]+)['’]s\b")
_POSSESSIVE = re.compile(r"\b([A-Za-z][\w-]*)['’]s\s+([A-Za-z][\w-]*)")


def _unpossess(text: str) -> str:
    """ "France's capital" → "capital of France", so word order compares like with like."""

    def swap(m: re.Match[str]) -> str:
        owner, owned = m.group(1), m.group(2)
        if owned.lower() in _STOP:
            return m.group(0)
        return f"{owned} of {owner}"

    # "what's", "it's", "let's": contractions, not possessives.
    text = _CONTRACTION.sub(
        lambda m: (
            m.group(1) + (" is" if m.group(1).lower() in _STOP else m.group(0)[len(m.group(1)) :])
        ),
        text,
    )
    return _POSSESSIVE.sub(swap, text)


def _stem(word: str) -> str:
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.strip("'-")
    if w in _SYNONYMS:
        return _SYNONYMS[w]
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 5 and w.endswith(("ing", "ed")):
        w = w[: -3 if w.endswith("ing") else -2]
    elif len(w) > 4 and w.endswith(("sses", "xes", "zes", "ches", "shes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return _SYNONYMS.get(w, w)


def _number(token: str) -> str | None:
    if token[0].isdigit():
        return token.replace(",", "")
    return _NUMBER_WORDS.get(token.lower())


def signature(text: str) -> Signature:
    """What :func:`prompts_agree` compares, for one prompt."""
    text = _unpossess(text)
    numbers: list[str] = []
    names: dict[str, None] = {}
    content: dict[str, None] = {}
    ordered = False
    sentence_start = True
    for match in _WORD.finditer(text):
        token = match.group(0)
        lower = token.lower()
        # A sentence starts again after . ? ! : or a newline before this token.
        before = text[max(0, match.start() - 2) : match.start()]
        if any(c in before for c in ".?!\n:"):
            sentence_start = True
        num = _number(token)
        if num is not None:
            numbers.append(num)
            sentence_start = False
            continue
        label = len(token) == 1 and token.isupper() and not sentence_start and token != "I"
        if label:  # "folder A", "plan B", "vitamin C": a name, not the article "a"
            names.setdefault(lower, None)
            content.setdefault(f"<{lower}>", None)
            sentence_start = False
            continue
        if (token[0].isupper() and not sentence_start and lower not in _STOP) or (
            len(token) >= 2 and token.isupper()
        ):
            names.setdefault(lower.replace("’", "'").removesuffix("'s"), None)
        sentence_start = False
        ordered = ordered or lower in _RELATIONAL
        if lower not in _STOP and lower not in _RELATIONAL:
            content.setdefault(_stem(token), None)
    words = frozenset(m.group(0).lower().replace("’", "'").removesuffix("'s")
                      for m in _WORD.finditer(text))  # fmt: skip
    return Signature(tuple(numbers), frozenset(names), tuple(content), ordered, tuple(names), words)


def prompts_agree(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` pass every check above (symmetric)."""
    sa, sb = signature(a), signature(b)
    if sa.numbers != sb.numbers:
        return False
    # A name on one side must be on the other, capitalised or not, and names written as names
    # on both sides must come in the same order.
    if not (sa.names <= sb.words and sb.names <= sa.words):
        return False
    if [n for n in sa.name_order if n in sb.names] != [n for n in sb.name_order if n in sa.names]:
        return False
    if sa.ordered or sb.ordered:
        return sa.content == sb.content
    return set(sa.content) == set(sb.content)
