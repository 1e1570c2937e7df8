"""A clone's drain ends when the source owes no client an answer (``ss -Htin`` read in its namespace)."""

from __future__ import annotations

from podhop.net.netns import owes_answer, parse_ss

SS = """ESTAB 0      0      10.200.1.2:80 10.200.0.3:33168
\t bbr wscale:10,10 rto:200 rtt:0.037/0.018 mss:1448 cwnd:10 segs_in:2 bbr:(bw:0bps,mrtt:0.037) lastsnd:220
ESTAB 0      0      10.200.1.2:80 10.200.0.3:33176
\t bbr rto:204 bytes_sent:853 bytes_acked:853 bytes_received:27 segs_out:2 snd_wnd:65536
ESTAB 78     0      10.200.1.2:80 10.200.0.3:33180
\t bbr rto:204 segs_in:2
CLOSE-WAIT 0      0      10.200.1.2:80 10.200.0.3:33190
\t bbr bytes_received:80
FIN-WAIT-1 0      853    10.200.1.2:80 10.200.0.3:33200
\t bbr bytes_sent:853 bytes_received:27
LAST-ACK 0      0      10.200.1.2:80 10.200.0.3:33210
\t bbr bytes_sent:853 bytes_acked:853 bytes_received:27
"""


def test_parse_reads_queues_and_counters() -> None:
    conns = parse_ss(SS)
    assert [c["state"] for c in conns] == ["estab", "estab", "estab", "close-wait", "fin-wait-1", "last-ack"]
    assert conns[1]["bytes_received"] == "27" and conns[2]["recv_q"] == "78"
    assert "bytes_received" not in conns[0]


def test_only_connections_that_may_carry_an_answer_hold_the_drain() -> None:
    owes = [owes_answer(c) for c in parse_ss(SS)]
    assert owes == [
        False,  # dialled and never used by its client: nothing was asked
        True,  # asked before (an idle keep-alive the server closes itself, or a request in progress)
        True,  # a request waiting to be read
        True,  # the client is done sending; the answer may not be
        True,  # closing with 853 bytes not yet acknowledged
        False,  # everything sent and acknowledged, the FIN too
    ]
    assert parse_ss("") == []
