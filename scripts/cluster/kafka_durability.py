#!/usr/bin/env python3
"""Kafka durability with three KRaft brokers (scripts/cluster-services), measured with
Kafka's own tools (scripts/cluster/kafka-cli): a topic with replication factor 3 and
min.insync.replicas=2, an idempotent producer with acks=all at a steady rate
(VerifiableProducer, which prints every acknowledgement), and these faults:

  1. SIGKILL of a broker that leads a partition but is not the active controller
  2. SIGKILL of the broker that is the active KRaft controller (and leads a partition)
  3. SIGKILL of two brokers at once (the controller quorum is lost too: combined roles)

For each it reports the longest gap between acknowledgements of the partitions the dead
broker led (what a producer waits for a new leader), the errors the producer saw, how long
the restarted broker took to start and to be back in every ISR; at the end it reads the
whole topic back and checks that every acknowledged record is there, once.

    scripts/cluster/kafka_durability.py [--rate 200] [--outage-s 20] [--two-down-s 40]

Restarts every broker it kills. Reads .cluster-services.env.
"""

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CLI = str(ROOT / "scripts" / "cluster" / "kafka-cli")
SERVICES = str(ROOT / "scripts" / "cluster-services")
ENV = dict(l.split("=", 1) for l in (ROOT / ".cluster-services.env").read_text().splitlines() if "=" in l)
BROKERS = ENV["KAFKA_BROKERS"]
PORTS = [int(b.rsplit(":", 1)[1]) for b in BROKERS.split(",")]


def cli(*args, timeout=60):
    out = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)
    return out.stdout + out.stderr


def describe(topic):
    """{partition: (leader, [isr])} from TopicCommand --describe."""
    parts = {}
    for line in cli("TopicCommand", "--bootstrap-server", BROKERS, "--describe", "--topic", topic).splitlines():
        m = re.search(r"Partition: (\d+)\s+Leader: (-?\d+)\s+Replicas: [\d,]+\s+Isr: ([\d,]*)", line)
        if m:
            parts[int(m[1])] = (int(m[2]), [int(x) for x in m[3].split(",") if x])
    return parts


def active_controller():
    m = re.search(r"LeaderId:\s+(\d+)", cli("MetadataQuorumCommand", "--bootstrap-server", BROKERS, "describe", "--status"))
    return int(m[1]) if m else None


def services(*args):
    t = time.time()
    subprocess.run([SERVICES, *args], check=True, capture_output=True)
    return time.time() - t


class Producer:
    """VerifiableProducer in the background; every acknowledgement and error recorded."""

    def __init__(self, topic, rate, config):
        self.acks, self.errors, self.lock = [], [], threading.Lock()
        self.proc = subprocess.Popen(
            [CLI, "VerifiableProducer", "--bootstrap-server", BROKERS, "--topic", topic, "--acks", "-1",
             "--throughput", str(rate), "--repeating-keys", "60", "--producer.config", config],
            stdout=subprocess.PIPE, stderr=open(str(config) + ".log", "w"), text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if ev.get("name") == "producer_send_success":
                    self.acks.append((time.time(), ev["partition"], ev["offset"], ev["value"]))
                elif ev.get("name") == "producer_send_error":
                    self.errors.append((time.time(), ev.get("exception", ""), ev.get("message", "")[:120]))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def longest_gap(self, partitions, since, until):
        """Longest time without an acknowledgement on any of `partitions` in [since, until]."""
        with self.lock:
            times = sorted(t for t, p, _, _ in self.acks if p in partitions and since <= t <= until)
        points = [since] + times + [until]
        return max(b - a for a, b in zip(points, points[1:]))

    def errors_between(self, since, until):
        with self.lock:
            found = {}
            for t, exc, msg in self.errors:
                if since <= t <= until:
                    found[exc.rsplit(".", 1)[-1]] = found.get(exc.rsplit(".", 1)[-1], 0) + 1
            return found

    def acked_between(self, since, until):
        with self.lock:
            return sum(1 for t, *_ in self.acks if since <= t <= until)


def wait_isr_full(topic, deadline_s=120):
    start = time.time()
    while time.time() - start < deadline_s:
        d = describe(topic)
        if d and all(len(isr) == 3 for _, isr in d.values()):
            return time.time() - start
        time.sleep(0.5)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--outage-s", type=float, default=20)
    ap.add_argument("--two-down-s", type=float, default=40)
    a = ap.parse_args()
    topic = f"durability.t{int(time.time())}"
    config = ROOT / ".cluster-services" / "durability-producer.properties"
    # What the services use: idempotent, acks=all; timeouts short enough to see errors here.
    # (VerifiableProducer sets retries=0 unless told otherwise.)
    config.write_text("enable.idempotence=true\nacks=all\nretries=2147483647\nlinger.ms=0\nrequest.timeout.ms=10000\ndelivery.timeout.ms=30000\n")
    print(cli("TopicCommand", "--bootstrap-server", BROKERS, "--create", "--topic", topic, "--partitions", "3",
              "--replication-factor", "3", "--config", "min.insync.replicas=2").strip().splitlines()[-1])
    print(f"topic {topic}: {describe(topic)}  (partition: (leader, isr)); active controller: {active_controller()}")
    prod = Producer(topic, a.rate, str(config))
    time.sleep(5)
    if not prod.acks:
        print(f"the producer acknowledged nothing in 5 s: see {config}.log")
        return 1
    report = []

    def fault(title, victims):
        leaders = describe(topic)
        led = {p for p, (leader, _) in leaders.items() if leader in victims}
        controller = active_controller()
        t_kill = time.time()
        for v in victims:
            services("kill", f"kafka-{v}")
        outage = a.two_down_s if len(victims) > 1 else a.outage_s
        time.sleep(outage)
        t_up = time.time()
        after = describe(topic) if len(victims) == 1 else {}
        start_s = services("up", "kafka") if len(victims) > 1 else services("up", f"kafka-{victims[0]}")
        isr_s = wait_isr_full(topic)
        time.sleep(3)
        gap = prod.longest_gap(led, t_kill, t_up) if led else 0.0
        line = {
            "fault": title,
            "killed": victims,
            "active controller before": controller,
            "partitions led by the killed": sorted(led),
            "longest ack gap on those partitions (s)": round(gap, 1),
            "acks during the outage": prod.acked_between(t_kill, t_up),
            "producer errors during the outage": prod.errors_between(t_kill, t_up + 3),
            "leaders after": {p: l for p, (l, _) in after.items()},
            "active controller after": active_controller(),
            "restart until 'Kafka Server started' (s)": round(start_s, 1),
            "then until every ISR has 3 replicas (s)": None if isr_s is None else round(isr_s, 1),
        }
        report.append(line)
        print(json.dumps(line))
        time.sleep(5)

    d = describe(topic)
    controller = active_controller()
    follower_leader = next(l for l, _ in d.values() if l != controller)
    fault("SIGKILL one broker (not the controller)", [follower_leader])
    controller = active_controller()
    led_by_controller = any(l == controller for l, _ in describe(topic).values())
    fault(f"SIGKILL the active controller (leads a partition: {led_by_controller})", [controller])
    two = [b for b in (1, 2, 3) if b != active_controller()][:1] + [active_controller()]
    fault("SIGKILL two brokers at once", sorted(two))
    time.sleep(10)
    prod.stop()

    # Every acknowledged record is in the topic, once.
    out = subprocess.run(
        [CLI, "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", BROKERS, "--topic", topic,
         "--from-beginning", "--timeout-ms", "15000", "--property", "print.partition=true",
         "--property", "print.offset=true", "--property", "print.key=false"],
        capture_output=True, text=True, timeout=180).stdout
    stored = {}
    for line in out.splitlines():
        m = re.match(r"Partition:(\d+)\s+Offset:(\d+)\s+(\S+)", line)
        if m:
            stored[(int(m[1]), int(m[2]))] = m[3]
    acked = {(p, o): v for _, p, o, v in prod.acks}
    lost = [k for k, v in acked.items() if stored.get(k) != v]
    values = list(stored.values())
    print(json.dumps({
        "acknowledged": len(acked), "in the topic": len(stored), "acknowledged but missing": len(lost),
        "values stored twice": len(values) - len(set(values)),
        "errors in all": prod.errors_between(0, time.time()),
    }))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
