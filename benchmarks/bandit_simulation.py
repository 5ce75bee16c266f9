"""The learning loop on a synthetic site: does the served bandit learn as well as VW alone?

A site with five homepage banners whose click probability depends on the
visitor's device and the page (`click_probability`, a known optimum in each
of the nine contexts, the best arm at least 0.10 above the next). The
bandit of `benchmarks/rules/sim.rules` chooses among them. For each run the
same stream of visitors (contexts, and one uniform number per visitor that
decides whether the shown banner is clicked) is played by four policies:

(a) uniform random;
(b) the served learning loop: ``arbiter serve --workers 2`` on 127.0.0.1, one
    ``POST /v1/decide`` per visitor, then ``POST /v1/feedback`` with reward 1
    (click) or 0 (shown, not clicked); the in-process learner publishes new
    versions and both workers hot-swap them;
(c) the same ruleset and VW decided in this process (`engine.decision.decide` over a
    `BanditModel`), learning after every decision: the loop without a
    server, a stream, a learner or publishing lag;
(d) the optimum: the best banner of every context;
(e) with ``--events-window W``: the served loop again, on a second server
    with its own Redis, the site sending **no feedback at all**: a click is a
    purchase, sent as a ``purchase`` event with its ``amount``, and the
    bandit declares ``reward purchase within W value amount``; decisions
    without a purchase are rewarded 0 when their window closes. (b) and (e)
    run at the same time, visitor by visitor (each client thread plays
    visitor i on both servers, in alternating order), so the machine's load
    hits both alike; the reward (b) sends as feedback and the amount (e)'s
    purchase event carries are the same number.

Using the same visitors and click draws for every policy (common random
numbers) removes most of the noise from the comparison. "expected" is the
mean true click probability of the banners shown, which removes the rest of
the click noise. Per-run ratios are printed as well as the means, since one
VW run differs from another by a few percent by chance.

    python -m benchmarks.bandit_simulation [--decisions 8000] [--runs 8] [--threads 4]
    python -m benchmarks.bandit_simulation --events-window 200ms --runs 8 --decisions 4000

Load goes to 127.0.0.1 only and is bounded by ``--decisions`` and
``--max-seconds``. An embedded Redis is started unless ``ARBITER_REDIS_URL``
is set, in which case ``--flush-external`` must be given, because each run
starts from an empty Redis (FLUSHDB; (e) uses database 1 of it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy import stats as scipy_stats

from arbiter import dsl
from arbiter.engine.codegen.compiler import compile_plan
from arbiter.engine.decision.decide import decide
from arbiter.engine.decision.oracle import LiveOracle
from arbiter.engine.learning.bandit import BanditModel
from arbiter.engine.learning.bandit_store import bandit_keys, exploration_of
from arbiter.engine.plan import Plan
from arbiter.engine.records import RECORD_DECODER, DecideRequest, Inputs
from arbiter.engine.store import keys
from arbiter.engine.store.client import connect_sync
from arbiter.engine.store.compression import plain_records_sync
from arbiter.engine.store.embedded import EmbeddedRedis
from benchmarks._harness import Client, arbiter_argv, free_port, server

RULES = Path(__file__).resolve().parent / "rules" / "sim.rules"
ADMIN_KEY = "bandit-simulation"
RULESET, BANDIT = "sim", "hero"
DEVICES = ("mobile", "desktop", "tablet")
PAGES = ("home", "product", "cart")
ARMS = (
    "hero_sale",
    "hero_new_arrivals",
    "hero_app_download",
    "hero_free_shipping",
    "hero_bestsellers",
)

# Click probability = base + device effect + page effect: additive, so a
# linear model over (device x arm) and (page x arm), which is what the
# bandit's features and VW's shared x action interaction give, can represent
# it exactly. The optimum still depends on both: the app banner wins on every
# mobile page, elsewhere the page decides, and the device breaks the tie on
# the home page of a tablet.
_BASE = {a: 0.05 for a in ARMS} | {"hero_sale": 0.10}
_DEVICE = {
    "mobile": {"hero_app_download": 0.55},
    "desktop": {"hero_new_arrivals": 0.10},
    "tablet": {"hero_sale": 0.10},
}
_PAGE = {
    "home": {"hero_new_arrivals": 0.30},
    "product": {"hero_bestsellers": 0.35},
    "cart": {"hero_free_shipping": 0.35},
}
CONTEXTS = tuple(itertools.product(DEVICES, PAGES))


def click_probability(device: str, page: str, arm: str) -> float:
    """The true probability that a visitor on ``device`` and ``page`` clicks ``arm``."""
    return _BASE[arm] + _DEVICE[device].get(arm, 0.0) + _PAGE[page].get(arm, 0.0)


def best_arm(device: str, page: str) -> str:
    """The arm with the highest click probability in this context."""
    return max(ARMS, key=lambda arm: click_probability(device, page, arm))


@dataclass(frozen=True)
class Stream:
    """The visitors of one run: a context each, the uniform number that decides a click
    (a purchase), and what the visitor spends if they buy."""

    contexts: list[tuple[str, str]]
    uniforms: list[float]
    amounts: list[float]

    def reward(self, i: int, arm: str) -> float:
        """Visitor ``i``'s amount if they buy after seeing ``arm``, else 0.

        Common random numbers across policies: the same visitor buys the same
        banner in every policy, for the same amount.
        """
        device, page = self.contexts[i]
        return self.amounts[i] if self.uniforms[i] < click_probability(device, page, arm) else 0.0


def make_stream(n: int, seed: int, *, amounts: bool = False) -> Stream:
    """``n`` visitors, uniform over the nine contexts, from one seeded RNG.

    Every purchase is worth 1 unless ``amounts``: then each visitor's amount is
    uniform in [0.5, 1.5] (mean 1, so "expected" stays a click probability),
    drawn after the rest so the contexts and clicks are the same either way.
    """
    rng = random.Random(seed)
    contexts = [rng.choice(CONTEXTS) for _ in range(n)]
    uniforms = [rng.random() for _ in range(n)]
    values = [rng.uniform(0.5, 1.5) if amounts else 1.0 for _ in range(n)]
    return Stream(contexts, uniforms, values)


@dataclass
class Outcome:
    """What one policy earned on one stream."""

    reward: float = 0.0  # clicks (purchases), or their amounts
    expected: float = 0.0  # sum of the shown arms' true click probabilities
    n: int = 0
    hits: int = 0  # visitors who bought

    def add(self, stream: Stream, i: int, arm: str) -> float:
        """Count visitor ``i`` shown ``arm``; returns the reward."""
        reward = stream.reward(i, arm)
        self.reward += reward
        self.expected += click_probability(*stream.contexts[i], arm)
        self.n += 1
        self.hits += reward > 0
        return reward

    @property
    def mean(self) -> float:
        """Average reward per decision."""
        return self.reward / self.n if self.n else float("nan")

    @property
    def mean_expected(self) -> float:
        """Average true click probability of the arms shown."""
        return self.expected / self.n if self.n else float("nan")


# --- (a), (c), (d): no server --------------------------------------------------


def play_uniform(stream: Stream, seed: int) -> Outcome:
    """(a): a uniformly random banner for every visitor."""
    rng = random.Random(seed)
    out = Outcome()
    for i in range(len(stream.contexts)):
        out.add(stream, i, rng.choice(ARMS))
    return out


def play_optimum(stream: Stream) -> Outcome:
    """(d): the best banner of every context."""
    out = Outcome()
    for i, (device, page) in enumerate(stream.contexts):
        out.add(stream, i, best_arm(device, page))
    return out


def load_plan() -> Plan:
    """The compiled simulation ruleset."""
    return compile_plan(dsl.load_checked(RULES))


def play_in_process_avg(stream: Stream, plan: Plan, run: int, repeats: int) -> Outcome:
    """(c) averaged over ``repeats`` exploration seeds on the same stream.

    One VW run on a stream differs from another by a few percent, depending
    on which arms its first explorations happened to find; averaging several
    makes (c) a steadier yardstick for the single served run.
    """
    total = Outcome()
    for k in range(repeats):
        one = play_in_process(stream, plan, run * 1000 + k)
        total.reward += one.reward / repeats
        total.expected += one.expected / repeats
    total.n = len(stream.contexts)
    return total


def play_in_process(stream: Stream, plan: Plan, run: int) -> Outcome:
    """(c): `engine.decision.decide` with a local `BanditModel` that learns after every decision.

    The same plan, features, exploration and seeded sampling as the server;
    what is missing is only the distance: HTTP, the decision log, the reward
    stream, the learner and the publish/hot-swap lag.
    """
    model = BanditModel(BANDIT, exploration_of(plan.checked.bandits[BANDIT]))
    oracle = LiveOracle({}, {BANDIT: model})
    out = Outcome()
    for i, (device, page) in enumerate(stream.contexts):
        request = DecideRequest(f"v{i}", {"device": device, "page": page})
        decision, record = decide(
            plan, request, Inputs(), decision_id=f"inproc-{run}-{i}", now=1.7e9 + i, oracle=oracle
        )
        arm = decision.actions[0].action
        reward = out.add(stream, i, arm)
        choice = record.bandits[0]
        model.learn(
            choice.shared, choice.arm_features, choice.arms.index(arm), reward, choice.probability
        )
    return out


# --- (b): the served loop ------------------------------------------------------


@dataclass
class Served:
    """(b) and what the loop did: decision ids in stream order, timings."""

    outcome: Outcome
    decision_ids: list[str | None]
    seconds: float


def play_served(
    stream: Stream, targets: Sequence[tuple[int, bool]], threads: int, deadline: float
) -> list[Served]:
    """(b), and (e), over HTTP: ``threads`` keep-alive connections to each server.

    ``targets`` are (port, events) pairs. A server with ``events`` false gets
    ``POST /v1/feedback`` with the visitor's reward after every decision (b);
    one with ``events`` true gets no feedback at all (e): only a ``purchase``
    event, with its ``amount`` and the time the visitor bought (as the
    decision's answer arrived), through ``POST /v1/events``; its bandit's ``reward purchase within ... value amount`` attributes
    it, and a decision without a purchase is rewarded 0 when its window closes.

    Visitors are taken in stream order from a shared counter, so the stream is
    the same as for (c) up to the interleaving of at most ``threads`` requests.
    Each thread plays its visitor on every target before taking the next, the
    order alternating with the visitor, so the servers progress through the
    stream together and under the same load. Several connections let the
    kernel spread them over both workers.
    """
    n = len(stream.contexts)
    ids: list[list[str | None]] = [[None] * n for _ in targets]
    arms: list[list[str | None]] = [[None] * n for _ in targets]
    counter = itertools.count()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def visit(client: Client, i: int, events: bool) -> tuple[str, str]:
        device, page = stream.contexts[i]
        status, body = client.call(
            "POST",
            "/v1/decide",
            {"customer_id": f"v{i}", "context": {"device": device, "page": page}},
        )
        if status != 200:
            raise RuntimeError(f"decide answered {status}: {body[:200]!r}")
        seen_at = time.time()  # when the visitor saw the banner (and bought, if they did)
        decision = json.loads(body)
        arm = decision["actions"][0]["action"]
        reward = stream.reward(i, arm)
        if events:
            if reward:
                # The site stamps the purchase with the time it happened, as a site's
                # event feed does; the server's queue before it is handled does not move it.
                purchase = {
                    "customer_id": f"v{i}",
                    "type": "purchase",
                    "ts": seen_at,
                    "properties": {"amount": reward},
                }
                status, body = client.call("POST", "/v1/events", {"events": [purchase]})
                if status != 202:
                    raise RuntimeError(f"events answered {status}: {body[:200]!r}")
            return decision["decision_id"], arm
        feedback = {
            "decision_id": decision["decision_id"],
            "action": arm,
            # The failures are sent too: the learner drops decisions
            # without feedback, and a model fed only clicks cannot
            # tell the banners apart.
            "reward": reward,
        }
        status, body = client.call("POST", "/v1/feedback", feedback)
        if status != 202:
            raise RuntimeError(f"feedback answered {status}: {body[:200]!r}")
        return decision["decision_id"], arm

    def client_loop() -> None:
        clients = [Client(port, {"authorization": f"Bearer {ADMIN_KEY}"}) for port, _ in targets]
        order = list(range(len(targets)))
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                for t in order if i % 2 == 0 else order[::-1]:
                    ids[t][i], arms[t][i] = visit(clients[t], i, targets[t][1])
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    pool = [threading.Thread(target=client_loop, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    served: list[Served] = []
    for target_ids, target_arms in zip(ids, arms, strict=True):
        out = Outcome()
        for i, arm in enumerate(target_arms):
            if arm is not None:
                out.add(stream, i, arm)
        served.append(Served(out, target_ids, seconds))
    return served


@dataclass
class LoopStats:
    """What the learner did with the run's feedback, read back from Redis."""

    published: int  # model versions published
    learned: int  # rewards learned into the latest published model
    lag_median: float  # rewards sent but not yet in the model a decision used
    lag_p90: float
    lag_max: float


def wait_for_learner(redis_url: str, expected: int, timeout: float = 20.0) -> tuple[int, int]:
    """Wait until the published model has learned ``expected`` rewards; (version, learned)."""
    client = connect_sync(redis_url)
    key = bandit_keys(RULESET, BANDIT).model
    deadline = time.monotonic() + timeout
    try:
        while True:
            version, learned = client.hmget(key, ["version", "examples"])
            version_n, learned_n = int(version or 0), int(learned or 0)
            if learned_n >= expected or time.monotonic() > deadline:
                return version_n, learned_n
            time.sleep(0.1)
    finally:
        client.close()


def loop_stats(redis_url: str, served: Served, threads: int) -> LoopStats:
    """Publish count, rewards learned, and how stale each decision's model was.

    A decision's record holds the version of the model that chose (rewards
    learned into it). Visitor ``i`` was decided once the feedback of about
    ``i - threads`` earlier visitors had been sent, so ``i - threads -
    version`` is the number of rewards not yet in that worker's model: the
    cost of streaming, learning, publishing and hot-swapping, in visitors.
    """
    done = [i for i, d in enumerate(served.decision_ids) if d is not None]
    version, learned = wait_for_learner(redis_url, len(done))
    client = connect_sync(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for i in done:
            pipe.get(keys.decision(str(served.decision_ids[i])))
        raw = plain_records_sync(client, pipe.execute())
    finally:
        client.close()
    lags: list[float] = []
    for i, blob in zip(done, raw, strict=True):
        if blob is None:
            continue
        record = RECORD_DECODER.decode(blob)
        lags.append(max(0, i - threads - record.bandits[0].version))
    lags.sort()
    if not lags:
        lags = [float("nan")]
    return LoopStats(
        published=version,
        learned=learned,
        lag_median=statistics.median(lags),
        lag_p90=lags[int(0.9 * (len(lags) - 1))],
        lag_max=lags[-1],
    )


# --- reporting -----------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def print_table(results: Sequence[dict[str, Outcome]]) -> None:
    """Mean over runs of each policy's average reward, with ratios to (c) and (d)."""

    def mean(policy: str, attr: str) -> float:
        return statistics.fmean(getattr(r[policy], attr) for r in results)

    names = {
        "uniform": "(a) uniform random",
        "served": "(b) served loop (HTTP, 2 workers)",
        "inproc": "(c) VW in-process, learn each",
        "optimum": "(d) optimum",
    }
    c, d = mean("inproc", "mean"), mean("optimum", "mean")
    ce, de = mean("inproc", "mean_expected"), mean("optimum", "mean_expected")
    print(f"\nmean of {len(results)} run(s), {results[0]['served'].n} decisions each")
    print(
        f"{'policy':36}{'reward':>8}{'/ (c)':>8}{'/ (d)':>8}{'expected':>10}{'/ (c)':>8}{'/ (d)':>8}"
    )
    for key, label in names.items():
        m, e = mean(key, "mean"), mean(key, "mean_expected")
        print(
            f"{label:36}{m:>8.4f}{_ratio(m, c):>8}{_ratio(m, d):>8}"
            f"{e:>10.4f}{_ratio(e, ce):>8}{_ratio(e, de):>8}"
        )
    per_run = [r["served"].mean / r["inproc"].mean for r in results]
    if len(per_run) > 1:
        spread = statistics.stdev(per_run)
        print(
            f"(b)/(c) per run: {' '.join(f'{x:.3f}' for x in per_run)}; "
            f"sd {spread:.3f}, so the mean's standard error is {spread / len(per_run) ** 0.5:.3f}"
        )
    if all("events" in r for r in results):
        print_events(results)
    b = mean("served", "mean")
    a = mean("uniform", "mean")
    verdict = "PASS" if b >= 0.98 * c and b > 1.5 * a else "FAIL"
    print(
        f"target (b) >= 0.98 x (c) and well above (a): (b)/(c) = {b / c:.3f}, (b)/(a) = {b / a:.2f}: {verdict}"
    )


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student t interval (runs are independent streams)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = float(scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1)) * statistics.stdev(values)
    half /= len(values) ** 0.5
    return m, m - half, m + half


def print_events(results: Sequence[dict[str, Outcome]]) -> None:
    """(e) against (b): per-run ratios, their mean with a 95% interval, the ratio of means."""
    per = [r["events"].mean / r["served"].mean for r in results]
    per_exp = [r["events"].mean_expected / r["served"].mean_expected for r in results]
    m, lo, hi = mean_interval(per)
    me, loe, hie = mean_interval(per_exp)
    e, b = (statistics.fmean(r[k].mean for r in results) for k in ("events", "served"))
    print(f"(e) served, purchase events only (no feedback): {e:.4f} against (b) {b:.4f}")
    print(f"  (e)/(b) reward per run:   {' '.join(f'{x:.3f}' for x in per)}")
    print(f"  (e)/(b) expected per run: {' '.join(f'{x:.3f}' for x in per_exp)}")
    print(
        f"  (e)/(b) reward: mean of runs {m:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]; ratio of means {e / b:.3f}"
    )
    print(f"  (e)/(b) expected: mean of runs {me:.3f}, 95% CI [{loe:.3f}, {hie:.3f}]")
    print(f"  target (e) >= 0.95 x (b): {'PASS' if e >= 0.95 * b else 'FAIL'}")


# --- main ----------------------------------------------------------------------


def main() -> int:
    """Run the simulation; exit 1 if the served loop misses its target."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--decisions", type=int, default=8000, help="visitors per run (max 20000)")
    ap.add_argument("--runs", type=int, default=8, help="paired runs, each on a new stream")
    ap.add_argument("--threads", type=int, default=4, help="concurrent keep-alive connections")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reload-ms", type=int, default=50, help="ARBITER_RELOAD_INTERVAL_MS")
    ap.add_argument("--max-seconds", type=float, default=900, help="bound on the whole run")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--inproc-repeats", type=int, default=3, help="(c) runs averaged per stream")
    ap.add_argument(
        "--flush-external",
        action="store_true",
        help="allow FLUSHDB of ARBITER_REDIS_URL (and its database 1)",
    )
    ap.add_argument(
        "--events-window",
        default="",
        help="also play (e), at the same time as (b): the site sends only purchase events, "
        "the bandit declares `reward purchase within WINDOW value amount` (e.g. 200ms); "
        "empty: skip (e)",
    )
    ap.add_argument(
        "--grace-ms", type=int, default=100, help="ARBITER_ATTRIBUTION_GRACE_MS for (e)"
    )
    ap.add_argument(
        "--amounts",
        action="store_true",
        help="purchases worth a visitor's amount, uniform in [0.5, 1.5], not 1",
    )
    args = ap.parse_args()
    # A stop signal ends the run through the `finally`s, which stop the servers and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not 100 <= args.decisions <= 20_000:
        ap.error("--decisions must be between 100 and 20000")
    external = os.environ.get("ARBITER_REDIS_URL")
    if external and not args.flush_external:
        ap.error("ARBITER_REDIS_URL is set: pass --flush-external to let every run FLUSHDB it")
    deadline = time.monotonic() + args.max_seconds

    print("contexts (device, page): best arm, its click probability, gap to the next")
    for device, page in CONTEXTS:
        ranked = sorted((click_probability(device, page, a) for a in ARMS), reverse=True)
        print(
            f"  {device:8}{page:8} {best_arm(device, page):20}{ranked[0]:.2f}  +{ranked[0] - ranked[1]:.2f}"
        )

    plan = load_plan()
    results: list[dict[str, Outcome]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        events_rules: Path | None = None
        if args.events_window:
            # The same ruleset, its bandit rewarded by `purchase` events instead of feedback.
            events_rules = Path(tmp) / "sim.rules"
            events_rules.write_text(
                RULES.read_text()
                .replace("\naction ", "\nevent purchase { amount: number }\n\naction ", 1)
                .replace(
                    "  explore epsilon 0.05\n",
                    "  explore epsilon 0.05\n"
                    f"  reward purchase within {args.events_window} value amount\n",
                )
            )
        # (b) and (e) each have a Redis of their own: they run at the same time.
        urls: list[str] = []
        for k in range(2 if events_rules is not None else 1):
            if external:
                urls.append(external.rstrip("/") + f"/{k}" if k else external)
                continue
            embedded = EmbeddedRedis(Path(tmp) / f"redis{k}", persistent=False)
            embedded.start()
            stack.callback(embedded.stop)
            urls.append(embedded.url)
        for run in range(args.runs):
            if time.monotonic() > deadline:
                print(f"time bound reached after {run} run(s)")
                break
            stream = make_stream(args.decisions, args.seed + run, amounts=args.amounts)
            plays = [(RULES, False)] + ([(events_rules, True)] if events_rules else [])
            with contextlib.ExitStack() as servers:
                targets: list[tuple[int, bool]] = []
                for (rules, events), url in zip(plays, urls, strict=True):
                    flush = connect_sync(url)
                    flush.flushdb()
                    flush.close()
                    port = free_port()
                    env = {
                        "ARBITER_REDIS_URL": url,
                        "ARBITER_DATA_DIR": str(Path(tmp) / f"data{len(targets)}"),
                        "ARBITER_RELOAD_INTERVAL_MS": str(args.reload_ms),
                        "ARBITER_LEARNER": "inproc",
                        "ARBITER_ADMIN_KEY": ADMIN_KEY,
                        "ARBITER_ATTRIBUTION_GRACE_MS": str(args.grace_ms),
                    }
                    servers.enter_context(
                        server(arbiter_argv(str(rules), port, workers=args.workers), port, env)
                    )
                    targets.append((port, events))
                played = play_served(stream, targets, args.threads, deadline)
                stats = [
                    loop_stats(url, out, args.threads)
                    for url, out in zip(urls, played, strict=True)
                ]
            served = played[0]
            by_events = played[1] if len(played) > 1 else None
            if served.outcome.n < args.decisions:
                print(f"time bound reached in run {run}: its {served.outcome.n} visitors left out")
                break
            if by_events is not None:
                # Every purchase must come back as an event-attributed reward.
                check = connect_sync(urls[1])
                sources = [f.get(b"source") for _, f in check.xrange(keys.REWARD_STREAM)]
                check.close()
                print(
                    f"       (e) purchases sent {by_events.outcome.hits}, rewarded by event "
                    f"{sources.count(b'event')}, windows closed with 0 "
                    f"{sources.count(b'window')}"
                )
            t0 = time.perf_counter()
            inproc = play_in_process_avg(stream, plan, run, args.inproc_repeats)
            inproc_s = time.perf_counter() - t0
            result = {
                "uniform": play_uniform(stream, args.seed + 1000 + run),
                "served": served.outcome,
                "inproc": inproc,
                "optimum": play_optimum(stream),
            }
            if by_events is not None:
                result["events"] = by_events.outcome
            results.append(result)
            rate = served.outcome.n / served.seconds
            print(
                f"run {run}: (a) {result['uniform'].mean:.4f}  (b) {served.outcome.mean:.4f}  "
                f"(c) {inproc.mean:.4f}  (d) {result['optimum'].mean:.4f}  "
                f"(b)/(c) {_ratio(served.outcome.mean, inproc.mean)}  "
                f"[served {served.outcome.n} in {served.seconds:.1f}s = {rate:.0f} visitors/s; "
                f"in-process {inproc_s:.1f}s]"
            )
            print(
                f"       learner: {stats[0].published} versions published, {stats[0].learned} of "
                f"{served.outcome.n} rewards learned; rewards not yet in the deciding model: "
                f"median {stats[0].lag_median:.0f}, p90 {stats[0].lag_p90:.0f}, "
                f"max {stats[0].lag_max:.0f} (median {1000 * stats[0].lag_median / rate:.0f} ms "
                "at this rate)"
            )
            if by_events is not None:
                print(
                    f"       (e) events only: {by_events.outcome.mean:.4f}, (e)/(b) "
                    f"{_ratio(by_events.outcome.mean, served.outcome.mean)}, expected "
                    f"{_ratio(by_events.outcome.mean_expected, served.outcome.mean_expected)}; "
                    f"{stats[1].learned} of {by_events.outcome.n} rewards learned"
                )
    if not results:
        return 1
    print_table(results)
    c = statistics.fmean(r["inproc"].mean for r in results)
    b = statistics.fmean(r["served"].mean for r in results)
    a = statistics.fmean(r["uniform"].mean for r in results)
    return 0 if b >= 0.98 * c and b > 1.5 * a else 1


if __name__ == "__main__":
    sys.exit(main())
