#!/usr/bin/env python3
"""Alerts and the Grafana dashboard proven through a real Prometheus (Debian's `prometheus` package).

Usage: monitoring-e2e.py PATH/TO/notifications

Starts redis-server, the MongoDB-wire server, two instances of the service and a Prometheus on
loopback that scrapes both every second and evaluates a copy of config/alerts.yml whose `for:`
durations are shortened (the expressions are the real ones). Then:
- `promtool check rules` on config/alerts.yml and `promtool check metrics` on a live scrape;
- Redis is killed: RedisDisconnected, then RedisCircuitBreakerOpen must fire for both instances
  (Prometheus's HTTP API);
- Redis comes back: both must resolve;
- every query of every dashboard under config/grafana/dashboards parses in Prometheus and names
  only metrics the service exports (checked against the live scrape), and the provisioning
  files agree with the dashboards and docker-compose.yml.
Prints the measured times. Standard library only; every wait is bounded, the whole run too
(DEADLINE), and the child processes are stopped however it ends (failure, deadline, SIGTERM,
SIGHUP, Ctrl-C; even SIGKILL: e2e.die_with_parent).
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (the servers and the service as child processes)

ROOT = e2e.ROOT
ALERT = "RedisCircuitBreakerOpen"
# The same condition without `for:`: fires first, on the same instances.
EARLY_ALERT = "RedisDisconnected"
# Short enough for a test, long enough that a scrape or two must agree before an alert fires.
SHORT_FOR = "3s"
# The whole run; it takes about 20 s.
DEADLINE = 120


def fail(message):
    raise SystemExit(f"monitoring-e2e: FAIL: {message}")


def wait_until(condition, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    fail(f"{what} within {timeout} s")


def stop_on_signal(number, _frame):
    raise SystemExit(f"monitoring-e2e: stopped by {signal.Signals(number).name}")


def on_deadline(_number, _frame):
    fail(f"the run took more than {DEADLINE} s")


def promtool(*arguments, stdin=None):
    result = subprocess.run(["promtool", *arguments], input=stdin, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        fail(f"promtool {' '.join(arguments)}: {result.stdout}{result.stderr}")
    return result.stdout


class Prometheus:
    def __init__(self, workdir, targets):
        self.port = e2e.free_port()
        with open(os.path.join(ROOT, "config/alerts.yml")) as handle:
            rules = re.sub(r"(?m)^(\s*for:\s*)\S+\s*$", rf"\g<1>{SHORT_FOR}", handle.read())
        rules_path = os.path.join(workdir, "alerts.yml")
        with open(rules_path, "w") as handle:
            handle.write(rules)
        config_path = os.path.join(workdir, "prometheus.yml")
        with open(config_path, "w") as handle:
            json.dump({  # JSON is YAML
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
                "rule_files": [rules_path],
                "scrape_configs": [{"job_name": "notifications", "static_configs": [{"targets": targets}]}],
            }, handle)
        promtool("check", "config", config_path)
        self.log = open(os.path.join(workdir, "prometheus.log"), "w")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={os.path.join(workdir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=e2e.die_with_parent)
        wait_until(lambda: self.ready(), 30, "Prometheus ready")

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}", timeout=5) as response:
            return json.load(response)["data"]

    def query_error(self, expression):
        """None when Prometheus evaluates `expression`, else its error text."""
        try:
            self.api("query?" + urllib.parse.urlencode({"query": expression}))
            return None
        except urllib.error.HTTPError as error:
            return json.load(error).get("error", str(error))

    def alerts(self, name):
        """{instance: state} of the alert's active instances (pending or firing)."""
        return {alert["labels"].get("instance"): alert["state"] for alert in self.api("alerts")["alerts"]
                if alert["labels"].get("alertname") == name}

    def targets_up(self, count):
        active = self.api("targets")["activeTargets"]
        return len(active) == count and all(target["health"] == "up" for target in active)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
}
# Series Prometheus makes itself (per target, and from alert rules): a query may read them.
PROMETHEUS_SERIES = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
    "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
}
# Grafana's interval variables, as Prometheus is asked to evaluate a panel's query.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def metric_names(expression):
    """The metric names a PromQL expression reads (functions, keywords, label names, numbers,
    durations and Grafana variables removed; a histogram is read through _bucket, _sum, _count)."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expression))  # {__name__="..."} selectors
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # groupings
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    # Durations (offset 1h30m), hexadecimal and decimal numbers (2e3, .5).
    text = re.sub(r"(?<![\w:.])(?:(?:\d+(?:ms|[smhdwy]))+|0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w:])", " ", text)
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()[:1]
        word = match.group(0)
        if following != "(" and word not in PROMQL_WORDS and not re.fullmatch(r"inf|nan", word, re.I):
            names.add(word)
    return names


def exported_names(scrape):
    return {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}


def check_rules(prometheus, scrape):
    """Every loaded alert rule reads only metrics the service exports (a typo would never fire)."""
    rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    with open(os.path.join(ROOT, "config/alerts.yml")) as handle:
        expected = len(re.findall(r"(?m)^\s*- alert:", handle.read()))
    if len(rules) != expected:
        fail(f"Prometheus loaded {len(rules)} rules, config/alerts.yml has {expected}")
    for rule in rules:
        missing = sorted(metric_names(rule["query"]) - exported_names(scrape) - PROMETHEUS_SERIES)
        if missing:
            fail(f"alert {rule['name']} reads {missing}, which the service does not export")
    print(f"alerts: {len(rules)} rules loaded by Prometheus, all reading exported metrics")


def yaml_value(relative_path, key):
    """The first `key: value` of a small YAML file (the provisioning files have one of each)."""
    with open(os.path.join(ROOT, relative_path)) as handle:
        match = re.search(rf"(?m)^[\s-]*{key}:\s*(\S+)", handle.read())
    if not match:
        fail(f"{relative_path} has no {key}")
    return match.group(1).strip("'\"")


def check_provisioning():
    """The provisioning files, docker-compose.yml and the dashboards agree; returns the datasource uid."""
    datasource_uid = yaml_value("config/grafana/provisioning/datasources/prometheus.yml", "uid")
    datasource_url = yaml_value("config/grafana/provisioning/datasources/prometheus.yml", "url")
    dashboards_path = yaml_value("config/grafana/provisioning/dashboards/dashboards.yml", "path")
    with open(os.path.join(ROOT, "docker-compose.yml")) as handle:
        compose = handle.read()
    host = urllib.parse.urlsplit(datasource_url).hostname
    if not re.search(rf"(?m)^  {re.escape(host)}:\s*$", compose):
        fail(f"the Grafana datasource points at {datasource_url}, but docker-compose.yml has no service {host!r}")
    for mount in ("./config/grafana/provisioning:/etc/grafana/provisioning", f"./config/grafana/dashboards:{dashboards_path}"):
        if not re.search(rf"- {re.escape(mount)}(:ro)?\s*$", compose, re.M):
            fail(f"docker-compose.yml does not mount {mount}")
    home = re.search(r"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH:\s*(\S+)", compose)
    if home and not (home.group(1).startswith(dashboards_path.rstrip("/") + "/") and os.path.isfile(
            os.path.join(ROOT, "config/grafana/dashboards", os.path.relpath(home.group(1), dashboards_path)))):
        fail(f"the home dashboard {home.group(1)} is not a file of config/grafana/dashboards")
    return datasource_uid


def dashboard_panels(panels):
    """Every panel that shows data (rows unfolded)."""
    for panel in panels:
        if panel.get("type") == "row":
            yield from dashboard_panels(panel.get("panels", []))
        else:
            yield panel


def check_dashboards(prometheus, scrape):
    datasource_uid = check_provisioning()
    known = exported_names(scrape) | PROMETHEUS_SERIES
    files = sorted(glob.glob(os.path.join(ROOT, "config/grafana/dashboards/*.json")))
    if not files:
        fail("no dashboard under config/grafana/dashboards")
    queries, uids = 0, set()
    for path in files:
        name = os.path.relpath(path, ROOT)
        with open(path) as handle:
            dashboard = json.load(handle)
        if not dashboard.get("uid") or not dashboard.get("title") or not dashboard.get("panels"):
            fail(f"{name}: a dashboard needs a uid, a title and panels")
        if dashboard["uid"] in uids:
            fail(f"{name}: uid {dashboard['uid']!r} is taken by another dashboard")
        uids.add(dashboard["uid"])
        for panel in dashboard_panels(dashboard["panels"]):
            title = panel.get("title")
            if not title or not panel.get("targets") or not panel.get("gridPos"):
                fail(f"{name}: panel {panel.get('id')} needs a title, a gridPos and targets")
            for target in [panel, *panel["targets"]]:
                if (target.get("datasource") or {}).get("uid", datasource_uid) != datasource_uid:
                    fail(f"{name}: panel {title!r} uses a datasource other than {datasource_uid!r}")
            for target in panel["targets"]:
                expression = target.get("expr", "")
                if not expression:
                    fail(f"{name}: panel {title!r} has a target without a query")
                missing = sorted(metric_names(expression) - known)
                if missing:
                    fail(f"{name}: panel {title!r} reads {missing}, which the service does not export")
                for variable, value in GRAFANA_INTERVALS.items():
                    expression = expression.replace(variable, value)
                error = prometheus.query_error(expression)
                if error:
                    fail(f"{name}: panel {title!r}: Prometheus rejects {expression!r}: {error}")
                queries += 1
    print(f"dashboards: {len(files)} file(s), {queries} queries parse in Prometheus and read only exported metrics; "
          "provisioning and docker-compose.yml agree with them")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: monitoring-e2e.py PATH/TO/notifications")
    e2e.BINARY = os.path.abspath(sys.argv[1])
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (scripts/bootstrap prometheus)")
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop_on_signal)
    signal.signal(signal.SIGALRM, on_deadline)
    signal.alarm(DEADLINE)
    promtool("check", "rules", os.path.join(ROOT, "config/alerts.yml"))

    workdir = tempfile.mkdtemp(prefix="notifications-alerts-")
    servers, services, prometheus = None, [], None
    try:
        servers = e2e.Servers()
        # The breaker stays open 8 s before probing, so "open" holds across scrapes.
        fast = {"REDIS_CIRCUIT_FAILURE_THRESHOLD": "2", "REDIS_CIRCUIT_RECOVERY_TIMEOUT": "8000", "REDIS_OPERATION_TIMEOUT_MS": "300"}
        services = [e2e.Service(servers, **fast), e2e.Service(servers, **fast)]
        for service in services:
            e2e.call(service.port, "GET", "/v1/users/alerts/notifications", headers=e2e.auth())
        scrape = e2e.call(services[0].port, "GET", "/metrics")[2]
        print(promtool("check", "metrics", stdin=scrape).strip() or "promtool check metrics: no problems on a live scrape")

        targets = [f"127.0.0.1:{service.port}" for service in services]
        prometheus = Prometheus(workdir, targets)
        wait_until(lambda: prometheus.targets_up(2), 30, "both instances scraped and up")
        for name in (EARLY_ALERT, ALERT):
            if prometheus.alerts(name):
                fail(f"{name} is active before any fault")
        check_rules(prometheus, scrape)
        check_dashboards(prometheus, scrape)

        killed = time.monotonic()
        servers.kill_redis()
        # Requests make the Redis calls that open each breaker (fail-open: they still succeed).
        for _ in range(4):
            for service in services:
                status = e2e.call(service.port, "GET", "/v1/users/alerts/notifications", headers=e2e.auth())[0]
                if status != 200:
                    fail(f"a read answered {status} with Redis down (fail-open)")
        firing = {(target, "firing") for target in targets}
        fired = {}

        def both_firing():
            for name in (EARLY_ALERT, ALERT):
                if name not in fired and set(prometheus.alerts(name).items()) == firing:
                    fired[name] = time.monotonic() - killed
            return len(fired) == 2

        wait_until(both_firing, 30, f"{EARLY_ALERT} and {ALERT} firing for both instances")
        if fired[EARLY_ALERT] > fired[ALERT]:
            fail(f"{EARLY_ALERT} (no for:) fired after {ALERT} (for: {SHORT_FOR})")
        for name in (EARLY_ALERT, ALERT):
            print(f"{name} firing for both instances {fired[name]:.1f} s after Redis was killed "
                  f"(scrape and evaluation every 1 s, breaker threshold 2 failures"
                  f"{f', for: {SHORT_FOR}' if name == ALERT else ', no for:'})")

        restarted = time.monotonic()
        servers.start_redis()
        wait_until(lambda: not prometheus.alerts(ALERT) and not prometheus.alerts(EARLY_ALERT), 40,
                   f"{ALERT} and {EARLY_ALERT} resolved after Redis came back")
        print(f"{ALERT} and {EARLY_ALERT} resolved {time.monotonic() - restarted:.1f} s after Redis came back "
              f"(REDIS_CIRCUIT_RECOVERY_TIMEOUT 8 s, then the breaker's probes)")
        print("monitoring-e2e: OK")
    finally:
        # Cleanup is bounded by itself (each stop waits at most 20 s); a second signal does not cut it short.
        signal.alarm(0)
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)
        if prometheus:
            prometheus.stop()
        for service in services:
            service.stop()
        if servers:
            servers.stop()
        e2e.remove_service_logs()
        shutil.rmtree(workdir, ignore_errors=True)

if __name__ == "__main__":
    main()
