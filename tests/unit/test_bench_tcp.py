"""Unit tests for the pure parts of the TCP benchmark family (bench/tcp_parse.py, bench/tcp_report.py).

The tool outputs below were captured on this machine (iperf3 3.12, sockperf 3.7, wrk 4.1.0) over
loopback in a scratch namespace; the iperf3 JSON is cut down to the keys the parser reads.
"""

from __future__ import annotations

import json

import pytest

from bench import tcp_parse, tcp_report

IPERF3_JSON = json.dumps(
    {
        "start": {"tcp_mss_default": 32768, "version": "iperf 3.12"},
        "end": {
            "sum_sent": {
                "start": 0,
                "end": 1.000506,
                "seconds": 1.000506,
                "bytes": 1911029760,
                "bits_per_second": 15280506143.891193,
                "retransmits": 0,
                "sender": True,
            },
            "sum_received": {
                "start": 0,
                "end": 1.00132,
                "seconds": 1.00132,
                "bytes": 1911029760,
                "bits_per_second": 15268084208.844326,
                "sender": True,
            },
            "cpu_utilization_percent": {
                "host_total": 69.1481657343048,
                "host_user": 1.2746490675051272,
                "host_system": 67.87331715998053,
                "remote_total": 55.8055437934919,
                "remote_user": 3.230583939856352,
                "remote_system": 52.57485998705729,
            },
        },
    }
)

SOCKPERF_TCP = "sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m\nsockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)\n\n[ 0] IP = 127.0.0.1       PORT = 11112 # TCP\nsockperf: Warmup stage (sending a few dummy messages)...\nsockperf: Starting test...\nsockperf: Test end (interrupted by timer)\nsockperf: Test ended\nsockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=12809; ReceivedMessages=12808\nsockperf: ========= Printing statistics for Server No: 0\nsockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=5564; ReceivedMessages=5564\nsockperf: \x1b[2;35m====> avg-rtt=98.834 (std-dev=76.055)\x1b[0m\nsockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\nsockperf: Summary: Round trip is 98.834 usec\nsockperf: \x1b[2;35mTotal 5564 observations\x1b[0m; each percentile contains 55.64 observations\nsockperf: ---> <MAX> observation = 3799.722\nsockperf: ---> percentile 99.999 = 3799.722\nsockperf: ---> percentile 99.990 = 2222.541\nsockperf: ---> percentile 99.900 =  744.325\nsockperf: ---> percentile 99.000 =  233.494\nsockperf: ---> percentile 90.000 =  116.020\nsockperf: ---> percentile 75.000 =  102.560\nsockperf: ---> percentile 50.000 =   91.885\nsockperf: ---> percentile 25.000 =   83.202\nsockperf: ---> <MIN> observation =   30.294\n"

WRK_CLOSE = "Running 1s test @ http://127.0.0.1:8080/\n  1 threads and 4 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   174.18us  203.24us   2.93ms   93.35%\n    Req/Sec    12.77k     0.93k   13.79k    72.73%\n  Latency Distribution\n     50%  122.00us\n     75%  189.00us\n     90%  289.00us\n     99%    1.20ms\n  13985 requests in 1.10s, 805.78KB read\nRequests/sec:  12709.23\nTransfer/sec:    732.27KB\n"

WRK_CLOSE_ONE_CONN = "Running 1s test @ http://127.0.0.1:8080/\n  1 threads and 1 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   142.03us  298.00us   2.39ms   92.61%\n    Req/Sec     5.01k   735.26     6.51k    70.00%\n  Latency Distribution\n     50%   58.00us\n     75%   68.00us\n     90%  242.00us\n     99%    1.65ms\n  4982 requests in 1.00s, 287.05KB read\nRequests/sec:   4980.86\nTransfer/sec:    286.98KB\n"

IPERF3_REFUSED = '{\n\t"start":\t{\n\t\t"connected":\t[],\n\t\t"version":\t"iperf 3.12",\n\t\t"system_info":\t"Linux vm 6.18.44-fc-v595 #1 SMP PREEMPT_DYNAMIC @0 x86_64"\n\t},\n\t"intervals":\t[],\n\t"end":\t{\n\t},\n\t"error":\t"unable to connect to server: Connection refused"\n}\n'

WRK_REFUSED = "unable to connect to 127.0.0.1:8081 Connection refused\n"


# -- parsers -------------------------------------------------------------------------------------------
def test_iperf3_figures():
    r = tcp_parse.iperf3(IPERF3_JSON)
    assert r["bytes"] == 1911029760
    assert r["gbit_s"] == 15.268  # the receiver's bits_per_second
    assert r["seconds"] == 1.00132
    assert r["retransmits"] == 0
    assert r["iperf3_cpu_client_pct"] == 69.1
    assert r["iperf3_cpu_server_pct"] == 55.8
    assert r["mss"] == 32768


def test_iperf3_error_is_raised_with_its_text():
    with pytest.raises(RuntimeError, match="Connection refused"):
        tcp_parse.iperf3(IPERF3_REFUSED)


def test_sockperf_tcp_ping_pong():
    r = tcp_parse.sockperf(SOCKPERF_TCP)
    assert r["round_trips"] == 5564  # the valid window's
    assert r["round_trips_total"] == 12808  # warm-up included (what the CPU figure covers)
    assert r["valid_seconds"] == 0.55
    assert r["tx_s"] == pytest.approx(5564 / 0.55, abs=0.1)
    assert (r["p50_us"], r["p90_us"], r["p99_us"], r["p99_9_us"]) == (91.885, 116.02, 233.494, 744.325)
    assert r["avg_us"] == 98.834  # read through the colour escapes
    assert r["max_us"] == 3799.722


def test_sockperf_without_statistics_raises():
    with pytest.raises(RuntimeError, match="no statistics"):
        tcp_parse.sockperf(SOCKPERF_TCP.split("========= Printing statistics")[0])


def test_wrk_connection_close():
    r = tcp_parse.wrk(WRK_CLOSE)
    assert r["tx_s"] == 12709.23
    assert r["requests"] == 13985
    assert r["seconds"] == 1.1
    assert (r["p50_us"], r["p75_us"], r["p90_us"], r["p99_us"]) == (122.0, 189.0, 289.0, 1200.0)
    assert r["socket_errors"] == {}
    assert r["non_2xx"] == 0


def test_wrk_one_connection_units():
    r = tcp_parse.wrk(WRK_CLOSE_ONE_CONN)
    assert r["tx_s"] == 4980.86
    assert r["requests"] == 4982
    assert r["seconds"] == 1.0
    assert r["p50_us"] == 58.0
    assert r["p99_us"] == 1650.0  # "1.65ms"


def test_wrk_socket_errors_line():
    text = WRK_CLOSE.replace(
        "Requests/sec:", "  Socket errors: connect 0, read 3, write 0, timeout 2\nRequests/sec:"
    )
    assert tcp_parse.wrk(text)["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 2}


def test_wrk_refused_raises():
    with pytest.raises(RuntimeError, match="no summary"):
        tcp_parse.wrk(WRK_REFUSED)


def test_cpu_per_unit():
    assert tcp_parse.per_gb(2.0, 4_000_000_000) == 0.5
    assert tcp_parse.per_gb(1.0, 0) is None
    assert tcp_parse.per_tx_us(0.5, 10_000) == 50.0
    assert tcp_parse.per_tx_us(0.5, 0) is None


# -- report ----------------------------------------------------------------------------------------------
def _run(kind, path, test, rep, **fig):
    return {"kind": kind, "path": path, "test": test, "rep": rep, **fig}


def _results():
    runs = []
    for rep, (ptp_cpu, tc_cpu, base) in enumerate(((4.0, 3.0, 2.0), (4.4, 3.4, 2.2))):
        runs += [
            _run("ptp", "wire-pod", "stream1", rep, gbit_s=2.0, cpu_s_per_gb=ptp_cpu),
            _run("tc", "wire-pod", "stream1", rep, gbit_s=2.5, cpu_s_per_gb=tc_cpu),
            _run("ptp", "wire-wire", "stream1", rep, gbit_s=3.0, cpu_s_per_gb=base),
            _run("ptp", "wire-pod", "rr", rep, tx_s=10000.0, p50_us=80.0, p90_us=100.0, p99_us=200.0),
            _run("tc", "wire-pod", "rr", rep, tx_s=11000.0, p50_us=75.0, p90_us=90.0, p99_us=150.0),
            _run("ptp", "svc-same", "crr", rep, tx_s=5000.0, cpu_us_per_tx=300.0),
            _run("tc", "svc-same", "crr", rep, tx_s=4500.0, cpu_us_per_tx=330.0),
        ]
    return {"runs": runs}


def _row(rows, path, figure):
    return next(r for r in rows if r["path"] == path and r["figure"] == figure)


def test_rows_are_medians_with_ratios_to_ptp():
    rows, _ = tcp_report.build(_results())
    r = _row(rows, "wire-pod", "stream1_cpu")
    assert r["values"] == {"tc": 3.2, "ptp": 4.2}
    assert r["vs_ptp"] == {"tc": round(3.2 / 4.2, 3), "ptp": 1.0}
    assert _row(rows, "wire-pod", "rr_p99")["vs_ptp"]["tc"] == 0.75


def test_node_side_subtracts_the_no_node_baseline_of_the_same_repetition():
    rows, _ = tcp_report.build(_results())
    r = _row(rows, "wire-pod", "stream1_node")
    # per repetition: tc 3.0 - 2.0, 3.4 - 2.2; ptp 4.0 - 2.0, 4.4 - 2.2
    assert tcp_report.node_sides(_results(), "tc", "wire-pod", "stream1") == [1.0, 1.2]
    assert r["values"] == {"tc": 1.1, "ptp": 2.1}
    assert r["noise"] == {"tc": 0.2, "ptp": 0.2}
    assert r["vs_ptp"]["tc"] == round(1.1 / 2.1, 3)
    # a row without a baseline gets no node-side figure; the baseline rows stand on their own
    assert not [x for x in rows if x["path"] == "wire-wire" and x["figure"] == "stream1_node"]
    assert _row(rows, "wire-wire", "stream1_cpu")["values"] == {"tc": None, "ptp": 2.1}


def test_targets_met_missed_and_missing():
    _, tgts = tcp_report.build(_results())
    by = {(t["figure"], t["path"], t["kind"]): t for t in tgts}
    node = by[("stream1_node", "wire-pod", "tc")]
    assert node["met"] is True and node["goal"] == "<= 0.8x"  # 0.524x
    assert by[("rr_p99", "wire-pod", "tc")]["met"] is True  # 0.75x
    crr = by[("crr_tx", "svc-same", "tc")]
    assert crr["measured"] == 0.9 and crr["met"] is False  # fewer connections/s than ptp
    assert by[("rr_p99", "pod-pod-same", "tc")]["met"] is None  # not measured: n/a, never "met"
    assert by[("stream1_node", "wire-pod", "xdp")]["met"] is None


def test_table_text_and_markdown():
    rows, tgts = tcp_report.build(_results())
    text = tcp_report.table(rows, tgts)
    assert "xdpcni TC" in text and "ptp" in text
    assert "3.20 (0.76x)" in text
    assert "[MISSED] TCP_CRR tx/s vs ptp, pod -> ClusterIP, backend same node, xdpcni TC: 0.90x" in text
    md = tcp_report.table(rows, tgts, markdown=True)
    assert md.splitlines()[0] == "| path | figure | xdpcni TC | ptp |"
    assert "| wire host -> pod | TCP_STREAM 1 CPU [Gbit/s] | 2.50 (1.25x) | 2.00 |" in md


def test_node_side_within_its_noise_is_not_judged():
    res = _results()
    # ptp's same-node GSO row: node sides 0.1 and 0.3 (spread 0.2) against a median of 0.2
    for rep, (ppp, base, tc) in enumerate(((0.80, 0.70, 0.70), (1.10, 0.80, 0.75))):
        res["runs"] += [
            _run("ptp", "pod-pod-same", "stream1", rep, cpu_s_per_gb=ppp),
            _run("ptp", "veth-pair", "stream1", rep, cpu_s_per_gb=base),
            _run("tc", "pod-pod-same", "stream1", rep, cpu_s_per_gb=tc),
        ]
    rows, tgts = tcp_report.build(res)
    r = _row(rows, "pod-pod-same", "stream1_node")
    assert r["values"] == {"tc": -0.025, "ptp": 0.2}
    assert r["noise"] == {"tc": 0.05, "ptp": 0.2}
    t = next(
        t for t in tgts if t["figure"] == "stream1_node" and t["path"] == "pod-pod-same" and t["kind"] == "tc"
    )
    assert t["met"] is None and "within the spread" in t["note"]
    # the wire -> pod row (spread 0.2 against ptp's 2.1) is judged
    assert next(t for t in tgts if t["figure"] == "stream1_node" and t["path"] == "wire-pod")["met"] is True
    # no targets on the baselines
    assert not [t for t in tgts if t["path"] in tcp_report.BASELINE_PATHS]
