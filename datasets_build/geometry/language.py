"""The object noun phrases named in a robot instruction, by rule (no NLP model).

"put the red spoon on the blue towel" -> ["red spoon", "blue towel"]. The estimated-geometry path
detects exactly these phrases, so a phrase must be what a detector can look for: adjectives kept,
determiners, prepositions, pronouns, conjunctions and adverbs dropped.

Rules, over lowercased word tokens:
- a phrase is a maximal run of words that are none of the stop words below;
- an action verb at the start of a clause (sentence start, after "and"/"then"/","/"to"/"please", or
  after another clause-initial verb: "go push ...") is a stop word, so "open the drawer" yields
  "drawer" while "light switch" or "the open drawer" keep their words;
- spatial words (left, right, top, front, ...) at the end of a phrase are dropped, and a phrase made
  only of them is not an object ("on top of", "to the left"), while "top drawer" stays;
- phrases are deduplicated, in order of first mention.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    """The set of space-separated words of `text`."""
    return frozenset(text.split())


DETERMINERS = _words(
    "the a an this that these those some any its their his her my your our each every both all either neither "
    "other another one two three four five six seven eight nine ten"
)
PREPOSITIONS = _words(
    "on onto in into to from of at with inside within under underneath over above below behind beside besides "
    "near next off out up down toward towards across along by between around through against upon beneath "
    "atop via past like"
)
PRONOUNS = _words(
    "it them they itself themselves something anything everything which who whom whose where what there here "
    "you i we he she him"
)
CONJUNCTIONS = _words("and or then but so while until before after than if once as")
AUXILIARIES = _words("is are was were be been being has have had do does did could should would will must")
ADVERBS = _words(
    "slightly gently carefully slowly quickly please again also just only upright fully halfway partially "
    "completely now away apart forward forwards backward backwards sideways clockwise counterclockwise "
    "anticlockwise together very more less not no"
)
SPATIAL = _words(
    "left right top bottom front middle center centre side sides edge edges corner corners end ends "
    "back rear upper lower far close closer nearer farther further leftmost rightmost topmost"
)
VERBS = _words(
    "put place move pick picks lift grasp grab take bring get set push pull slide open close shut stack unstack "
    "rotate turn twist flip knock drop release insert remove wipe sweep fold unfold lay hang pour press toggle "
    "switch go reach hold carry transfer relocate position arrange align tilt raise lower store retrieve "
    "collect fetch hand give try use make let"
)
CLAUSE_BREAKS = frozenset({"and", "then", ",", ";", "to", "please", "."})
STOP = DETERMINERS | PREPOSITIONS | PRONOUNS | CONJUNCTIONS | AUXILIARIES | ADVERBS

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[,;.]")


def _tokens(instruction: str) -> list[str]:
    """Lowercased words and clause punctuation of `instruction`."""
    return _TOKEN.findall(instruction.lower())


def _chunks(tokens: list[str]) -> list[list[str]]:
    """Runs of non-stop words; clause-initial verbs and punctuation end a run."""
    chunks: list[list[str]] = []
    current: list[str] = []
    clause_start = True
    for token in tokens:
        is_verb = clause_start and token in VERBS
        if is_verb or token in STOP or token in CLAUSE_BREAKS:
            if current:
                chunks.append(current)
                current = []
            # a verb keeps the clause open for a second verb ("go push"); "pick up" and "turn on" too
            clause_start = is_verb or token in CLAUSE_BREAKS or (clause_start and token in PREPOSITIONS)
            continue
        current.append(token)
        clause_start = False
    if current:
        chunks.append(current)
    return chunks


def _strip_spatial(words: list[str]) -> list[str]:
    """`words` without trailing spatial words ("blue block right" -> "blue block", "top left" -> [])."""
    end = len(words)
    while end and words[end - 1] in SPATIAL:
        end -= 1
    return words[:end]


def object_phrases(instruction: str) -> list[str]:
    """The object noun phrases named in `instruction`, deduplicated, in order of first mention."""
    phrases: list[str] = []
    for chunk in _chunks(_tokens(instruction)):
        words = _strip_spatial(chunk)
        phrase = " ".join(words)
        if words and phrase not in phrases:
            phrases.append(phrase)
    return phrases
