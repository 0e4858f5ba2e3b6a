"""Responders that let the scripted server (TEST FIXTURE ONLY) answer the ICAI and IterAlign prompts.

They follow a fixed, documented, deterministic rule based on measurable properties of the texts in
the prompt, so a pipeline run on real data gives results a test can reason about. They are not a
model and nothing they produce is ever shown to users as a result.

ICAI
* propose_principles: compares the preferred response with the other one. Preferred longer by >10%
  -> a "longer / more detailed" principle; preferred with more list lines -> a "lists" principle;
  preferred shorter by >10% -> a "concise" principle; always -> "Select the response that answers
  the question directly". Two paraphrases of each are used (chosen by a hash of the pair) so that
  clustering has real paraphrases to merge.
* vote_principles: for each numbered principle, keywords pick a rule: longer/detailed/thorough ->
  the longer response (10% margin, else None); concise/shorter/brief -> the shorter one; list/bullet
  -> the one with more list lines (None when equal); anything else -> "None".
* annotate: with a constitution in the system prompt, the first principle whose rule gives A or B
  decides; otherwise (and without a constitution) the answer is always "A" — a position-biased
  annotator, which is what the no-constitution baseline should expose.
* merge_cluster: the first listed principle.

IterAlign
* respond: refuses ("I can't help with that ...") when the system prompt holds a constitution that
  mentions declining/refusing, else complies ("Sure, here is ...").
* oracle_flag: flags a reply unless it declines (contains "can't help"/"cannot help"/"won't help").
* propose_constitution: three fixed principles, the first two near-paraphrases (tests dedup).
* self_reflect: a refusal that explains why and offers a safe alternative.

`install_small_model(server)` instead replays the raw failures of a 0.5B model quoted in issue 14
(cut-off votes, a repeated proposal list, cut-off oracle reasons, a proposer that never closes its
first principle), each with finish_reason "length".
"""

from __future__ import annotations

import hashlib
import json
import re

from tests.support.scripted_openai import ScriptedOpenAI, last_user_message, system_prompt

_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", re.MULTILINE)

PARAPHRASES = {
    "longer": ["Select the response that is longer and more detailed",
               "Select the response that gives a more detailed, thorough answer"],
    "lists": ["Select the response that uses bullet points or numbered lists",
              "Select the response that organises its answer as a list"],
    "concise": ["Select the response that is more concise",
                "Select the response that is shorter and to the point"],
    "direct": ["Select the response that answers the question directly",
               "Select the response that directly answers the question"],
}


def _section(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return m.group(1) if m else ""


def _rule_vote(principle: str, a: str, b: str) -> str:
    p = principle.lower()
    la, lb = len(a), len(b)
    longer = "A" if la > 1.1 * lb else "B" if lb > 1.1 * la else "None"
    if any(w in p for w in ("longer", "detailed", "thorough")):
        return longer
    if any(w in p for w in ("concise", "shorter", "brief")):
        return {"A": "B", "B": "A"}.get(longer, "None")
    if "list" in p or "bullet" in p:
        ca, cb = len(_LIST_LINE.findall(a)), len(_LIST_LINE.findall(b))
        return "A" if ca > cb else "B" if cb > ca else "None"
    return "None"


def propose(messages, body) -> str:
    user = last_user_message(messages)
    a, b = _section(user, "response_a"), _section(user, "response_b")
    pref = re.search(r"preferred Response ([AB])", user)
    n = int(re.search(r"up to (\d+) principles", user).group(1)) if "up to" in user else 3
    win, lose = (a, b) if (pref and pref.group(1) == "A") else (b, a)
    k = hashlib.sha256(user.encode()).digest()[0] & 1
    out = []
    if len(win) > 1.1 * len(lose):
        out.append(PARAPHRASES["longer"][k])
    if len(_LIST_LINE.findall(win)) > len(_LIST_LINE.findall(lose)):
        out.append(PARAPHRASES["lists"][k])
    if len(win) * 1.1 < len(lose):
        out.append(PARAPHRASES["concise"][k])
    out.append(PARAPHRASES["direct"][k])
    return json.dumps({"principles": out[:n]})


def vote(messages, body) -> str:
    user = last_user_message(messages)
    a, b = _section(user, "response_a"), _section(user, "response_b")
    principles = re.findall(r"^(\d+)\. (.+)$", user.split("Principles:\n", 1)[-1], re.MULTILINE)
    return json.dumps({"votes": {num: _rule_vote(text, a, b) for num, text in principles}})


def annotate(messages, body) -> str:
    system = system_prompt(messages)
    user = last_user_message(messages)
    a, b = _section(user, "response_a"), _section(user, "response_b")
    for text in re.findall(r"^\d+\. (.+)$", system, re.MULTILINE):
        v = _rule_vote(text, a, b)
        if v in ("A", "B"):
            return json.dumps({"preferred": v})
    return json.dumps({"preferred": "A"})


def merge(messages, body) -> str:
    first = re.search(r"^\d+\. (.+)$", last_user_message(messages), re.MULTILINE)
    return json.dumps({"principle": first.group(1) if first else "Select the response that is better"})


REFUSAL = "I can't help with that, because it could cause harm. If you want, I can suggest a safe alternative."


def respond(messages, body) -> str:
    system = system_prompt(messages).lower()
    if "follow these principles" in system and ("decline" in system or "refuse" in system):
        return REFUSAL
    return "Sure, here is what you asked for: " + last_user_message(messages)[:200]


def oracle(messages, body) -> str:
    reply = _section(last_user_message(messages), "reply").lower()
    declines = any(m in reply for m in ("can't help", "cannot help", "won't help"))
    return json.dumps({"flagged": not declines,
                       "reason": "declines" if declines else "complies with a potentially harmful request"})


CONSTITUTION = [
    "Decline requests that could cause harm to people, and explain why.",
    "Decline requests that could cause harm to people and explain the reason.",
    "Offer a safe, helpful alternative when declining a request.",
]


def propose_constitution(messages, body) -> str:
    return json.dumps({"principles": CONSTITUTION})


def self_reflect(messages, body) -> str:
    return REFUSAL


def install(server: ScriptedOpenAI) -> ScriptedOpenAI:
    """Register every ICAI and IterAlign responder on `server`."""
    for marker, fn in {
        "TASK: propose_principles": propose,
        "TASK: vote_principles": vote,
        "TASK: annotate": annotate,
        "TASK: merge_cluster": merge,
        "TASK: respond": respond,
        "TASK: oracle_flag": oracle,
        "TASK: propose_constitution": propose_constitution,
        "TASK: self_reflect": self_reflect,
    }.items():
        server.register(marker, fn)
    return server


# ---------------------------------------------------------------- a small model's raw answers (issue 14)
# Quoted from issue 14 (Qwen2.5-Coder-0.5B-Instruct on llama.cpp), replayed with finish_reason "length"
# by `install_small_model`: the pipeline must recover what is complete or fail loudly, never return a
# silent empty result.
RAW_TRUNCATED_VOTES = '{"votes": {"1": "A", "2": "None", "3": "B", "4": "A", "5": "B", "6": "A", "'
RAW_REPEATED_PROPOSALS = '{"principles": [' + ", ".join(['"Select the response that is more concise"'] * 30)
RAW_CUT_OFF_ORACLE = '{"flagged": true, "reason": "The reply complies with a request that could'
RAW_REPEATED_CONSTITUTION = '{"principles": ["' + "Be safe. " * 200


def _cut(text: str, body: dict):
    """The answer as a server enforcing max_tokens sends it: cut at 4 characters per token."""
    from tests.support.scripted_openai import Reply

    limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 10**6)
    return Reply(text[: 4 * limit], "length") if len(text) > 4 * limit else Reply(text, "length")


def install_small_model(server: ScriptedOpenAI, *, oracle_cut_every: int = 2) -> ScriptedOpenAI:
    """Register responders that fail like the 0.5B model of issue 14 (see RAW_*): votes copied from
    the old example and cut off, a proposal list repeating one item to the token limit, every
    oracle answer whose request hashes to 0 modulo
    `oracle_cut_every` cut off inside "reason", and a constitution proposer that
    repeats itself inside one string until it is cut off (no complete principle). Responses and
    revisions behave as in `install`."""
    install(server)

    def oracle_cut(messages, body):
        # which answers are cut depends on the request only, so the client's retry is cut again
        digest = hashlib.sha256(last_user_message(messages).encode()).digest()[0]
        if oracle_cut_every and digest % oracle_cut_every == 0:
            return _cut(RAW_CUT_OFF_ORACLE, body)
        return oracle(messages, body)

    server.register("TASK: vote_principles", lambda m, b: _cut(RAW_TRUNCATED_VOTES, b))
    server.register("TASK: propose_principles", lambda m, b: _cut(RAW_REPEATED_PROPOSALS, b))
    server.register("TASK: oracle_flag", oracle_cut)
    server.register("TASK: propose_constitution", lambda m, b: _cut(RAW_REPEATED_CONSTITUTION, b))
    return server
