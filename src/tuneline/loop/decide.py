"""Roll out: the challenger as a canary, then promote, roll back or wait on the online A/B report.

    tuneline loop decide CONFIG

Canary: the challenger alias points at the new version, tagged ``tuneline.canary_weight`` =
``loop.canary_weight``; the server's alias watcher (serving/watcher.py) then sends it that percent of
users and the champion the rest, with no edit to ``serve.traffic`` (which must list both aliases). The
registered model's ``tuneline.loop_canary`` tag says which version and since when, so the report reads
only the canary's traffic. Promote or rollback deletes the weight tag: the configured split is back.

Decision, from ``tuneline serve report`` (serving/ab.py: feedback accuracy, error rate, latency with
bootstrap CIs per variant), in this order:
1. fewer than ``loop.decision.min_feedback`` feedback answers on either variant: wait;
2. the challenger's error rate above the champion's by more than ``max_error_rate_increase``, or its p95
   latency above ``max_latency_ratio`` times the champion's: roll back;
3. the 95% CI of feedback accuracy (challenger - champion) lies above -margin (``non_inferior``) or above 0
   (``superior``): promote (registry/aliases.py, so the champion history records it);
4. the CI lies below 0 (worse): roll back (challenger goes back to the champion's version, tagged rejected);
5. otherwise: wait, saying what the interval is.
Every decision (waits included) is appended to the registered model's ``tuneline.loop_history`` tag.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneline.config import Config

log = logging.getLogger("tuneline.loop")

LOOP_HISTORY_TAG = "tuneline.loop_history"
CANARY_TAG = "tuneline.loop_canary"
HISTORY_MAX_CHARS = 4500


@dataclass(frozen=True)
class Decision:
    action: str  # promote | rollback | wait
    reason: str
    version: str | None
    report: dict[str, Any]


def record(client, name: str, event: dict[str, Any]) -> None:
    """Append one loop event to the registered model's loop history (oldest events dropped at the cap)."""
    rm = client.get_registered_model(name)
    try:
        history = json.loads((rm.tags or {}).get(LOOP_HISTORY_TAG) or "[]")
    except ValueError:
        history = []
    history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **event})
    while len(history) > 2 and len(json.dumps(history)) > HISTORY_MAX_CHARS:
        history.pop(0)
    client.set_registered_model_tag(name, LOOP_HISTORY_TAG, json.dumps(history))


def loop_history(client, name: str) -> list[dict[str, Any]]:
    rm = client.get_registered_model(name)
    return json.loads((rm.tags or {}).get(LOOP_HISTORY_TAG) or "[]")


def _client(cfg: Config):
    from tuneline.registry import store

    uri = cfg.registry.tracking_uri or store.default_tracking_uri()
    return store.client(uri)


def canary(cfg: Config, version: str) -> dict[str, Any]:
    """Start the canary of ``version``: the challenger alias, the canary tag, a history entry."""
    from tuneline.registry.aliases import set_challenger

    c, name = _client(cfg), cfg.model_name
    set_challenger(c, name, version)
    from tuneline.serving.watcher import CANARY_WEIGHT_TAG

    info = {"version": version, "weight": cfg.loop.canary_weight, "since": time.time()}
    w = cfg.loop.canary_weight
    c.set_model_version_tag(name, version, CANARY_WEIGHT_TAG, f"{w:g}")  # the server applies it
    c.set_registered_model_tag(name, CANARY_TAG, json.dumps(info))
    record(
        c,
        name,
        {
            "action": "canary",
            "version": version,
            "weight": w,
            "traffic": {"champion": 100 - w, "challenger": w},
        },
    )
    return info


def current_canary(client, name: str) -> dict[str, Any] | None:
    tags = client.get_registered_model(name).tags or {}
    return json.loads(tags[CANARY_TAG]) if tags.get(CANARY_TAG) else None


def judge(report: dict[str, Any], rules) -> tuple[str, str]:
    """(action, reason) from an A/B report (serving/ab.report) and loop.decision."""
    v = report.get("variants", {})
    ch, cp = v.get("champion"), v.get("challenger")
    if not ch or not cp:
        who = "champion" if not ch else "challenger"
        return "wait", (
            f"no traffic on {who} yet since the canary began (serve.traffic must list champion and "
            "challenger, e.g. {champion: 90, challenger: 10} for loop.canary_weight 10)"
        )
    n_ch, n_cp = ch["accuracy"]["n"], cp["accuracy"]["n"]
    if min(n_ch, n_cp) < rules.min_feedback:
        return "wait", (
            f"feedback so far: champion {n_ch}, challenger {n_cp}; "
            f"need {rules.min_feedback} each "
            "(loop.decision.min_feedback)"
        )
    e_ch, e_cp = ch["error_rate"]["value"] or 0.0, cp["error_rate"]["value"] or 0.0
    if e_cp - e_ch > rules.max_error_rate_increase:
        return (
            "rollback",
            f"challenger error rate {e_cp:.3f} vs champion {e_ch:.3f} "
            f"(allowed +{rules.max_error_rate_increase:g})",
        )
    l_ch, l_cp = ch["latency_p95_s"]["value"], cp["latency_p95_s"]["value"]
    if l_ch and l_cp and l_cp > rules.max_latency_ratio * l_ch:
        return (
            "rollback",
            f"challenger p95 latency {l_cp:.3f}s vs champion {l_ch:.3f}s (> {rules.max_latency_ratio:g}x)",
        )
    a_ch, a_cp = ch["accuracy"]["value"], cp["accuracy"]["value"]
    ci = report.get("comparisons", {}).get("challenger - champion", {}).get("accuracy")
    if ci is None:
        return "wait", "no confidence interval of the accuracy difference yet"
    low, high = ci
    text = (
        f"feedback accuracy challenger {a_cp:.3f} vs champion {a_ch:.3f}, "
        f"difference 95% CI [{low:+.3f}, {high:+.3f}]"
    )
    bar = -rules.margin if rules.rule == "non_inferior" else 0.0
    if low > bar:
        what = (
            f"non-inferior (CI above -{rules.margin:g})"
            if rules.rule == "non_inferior"
            else "better (CI above 0)"
        )
        return "promote", f"{text}: {what}"
    if high < 0:
        return "rollback", f"{text}: worse (CI below 0)"
    return "wait", f"{text}: not yet conclusive for rule {rules.rule} (need CI low > {bar:+g})"


def decide(cfg: Config, *, apply: bool = True) -> Decision:
    from tuneline.registry.aliases import promote
    from tuneline.serving import ab

    c, name = _client(cfg), cfg.model_name
    info = current_canary(c, name)
    if info is None:
        d = Decision("wait", "no canary running (loop retrain + loop run start one)", None, {})
        return d
    report = ab.report(Path(cfg.serve.state_dir) / "ab.sqlite", since=info["since"], seed=cfg.run.seed)
    action, reason = judge(report, cfg.loop.decision)
    version = str(info["version"])
    d = Decision(action, reason, version, report)
    if not apply:
        return d
    if action == "promote":
        promote(c, name, version, reason=f"loop: {reason}")
    elif action == "rollback":
        champ = (c.get_registered_model(name).aliases or {}).get("champion")
        if champ is not None:
            c.set_registered_model_alias(name, "challenger", str(champ))
        c.set_model_version_tag(name, version, "tuneline.loop_rejected", reason[:4000])
    if action in ("promote", "rollback"):
        from tuneline.serving.watcher import CANARY_WEIGHT_TAG

        try:  # the server goes back to serve.traffic's split
            c.delete_model_version_tag(name, version, CANARY_WEIGHT_TAG)
        except Exception as exc:  # noqa: BLE001 - a canary started before the weight tag existed
            log.info("no canary weight tag on version %s (%s)", version, exc)
        c.delete_registered_model_tag(name, CANARY_TAG)
    last = (loop_history(c, name) or [{}])[-1]
    same_wait = action == "wait" and last.get("action") == "wait" and last.get("reason") == reason[:600]
    if not same_wait:  # a scheduler calling again with nothing new adds nothing
        record(c, name, {"action": action, "version": version, "reason": reason[:600]})
    log.info("loop decide: %s version %s: %s", action, version, reason)
    return d
