"""dlm-client.js in chromium against a scripted fake WebSocket: no server, exact frames.

The protocol client is the one place that does hello, resume, backoff, dedupe and resend for
all three pages, so its promises are checked frame by frame here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

# A WebSocket stand-in the test plays the server through: sockets[i].serve(frame), .hangUp(code).
FAKE_SOCKET = """
window.sockets = [];
window.WebSocket = class {
  constructor(url) {
    this.url = url; this.sent = []; this.closed = false;
    window.sockets.push(this);
    setTimeout(() => this.onopen && this.onopen(), 0);
  }
  send(data) { if (this.closed) throw new Error('closed'); this.sent.push(JSON.parse(data)); }
  close(code) {
    if (this.closed) return;
    this.closed = true;
    setTimeout(() => this.onclose && this.onclose({code: code || 1000}), 0);
  }
  serve(frame) { this.onmessage({data: JSON.stringify(frame)}); }
  hangUp(code) { this.closed = true; this.onclose({code: code}); }
};
window.sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
window.waitFor = async (check) => {
  for (let i = 0; i < 200; i++) { if (check()) return; await sleep(10); }
  throw new Error('timed out waiting for ' + check);
};
window.record = () => {
  const log = {events: [], errors: [], statuses: [], acks: [], rejected: [], lost: 0};
  return log;
};
"""


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """A blank page with dlm-client.js loaded and WebSocket replaced by the fake."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content("<!doctype html><html><body><div id=out></div></body></html>")
    page.add_script_tag(content=FAKE_SOCKET)
    page.add_script_tag(path=str(STATIC / "dlm-client.js"))
    yield page
    context.close()


@pytest.fixture(autouse=True)
def fresh_sockets(page: Any) -> None:
    page.evaluate("() => { window.sockets = []; }")


def test_backoff_doubles_from_half_a_second_to_ten_with_jitter(page: Any) -> None:
    """Attempt n waits between half and all of min(10 s, 0.5 s * 2^n)."""
    ranges = page.evaluate(
        """() => [0, 1, 2, 3, 4, 5, 6, 10].map((n) => {
          const samples = Array.from({length: 300}, () => DlmClient.backoffDelay(n));
          return [n, Math.min(...samples), Math.max(...samples)];
        })"""
    )
    for attempt, low, high in ranges:
        base = min(10_000, 500 * 2**attempt)
        assert base / 2 <= low <= high <= base
        assert high > low  # jitter


def test_draft_rendering_marks_masks_and_revised_spans_by_code_point(page: Any) -> None:
    """Masked runs become aria-hidden placeholders; revised spans count code points."""
    parts = page.evaluate(
        """() => {
          const out = document.getElementById('out');
          // H i _ M M _ t h e r e (emoji) x <b>  : the emoji is one code point, two UTF-16 units
          DlmClient.renderDraft(out, 'Hi \\u2591\\u2591 there\\u{1F600}x<b>', [[11, 13]]);
          return [out.textContent, out.children.length,
                  Array.from(out.childNodes).map((n) => [n.nodeName, n.className || '',
                    n.textContent, n.getAttribute ? n.getAttribute('aria-hidden') : null])];
        }"""
    )
    text, elements, nodes = parts
    assert text == "Hi \u2591\u2591 there\U0001f600x<b>"
    assert elements == 2  # <b> stayed text
    assert nodes == [
        ["#text", "", "Hi ", None],
        ["SPAN", "dlm-mask", "\u2591\u2591", "true"],
        ["#text", "", " there", None],
        ["SPAN", "dlm-revised", "\U0001f600x", None],
        ["#text", "", "<b>", None],
    ]


CONNECT = """(helloExtra) => {
  const log = record();
  window.log = log;
  const conn = new DlmClient.Connection({
    url: 'ws://example.test/ws',
    hello: () => Object.assign({type: 'hello', v: 1, key: 'pk_x', channel: 'widget'},
                               helloExtra ? helloExtra(conn) : {}),
    onReady: (frame, n) => log.statuses.push('ready#' + n),
    onEvent: (frame) => log.events.push([frame.type, frame.seq === undefined ? null : frame.seq]),
    onError: (frame) => log.errors.push(frame.code),
    onStatus: (state) => log.statuses.push(state),
    onAck: (id) => log.acks.push(id),
    onRejected: (id, frame) => log.rejected.push([id, frame.code]),
    onConversationLost: () => { log.lost += 1; },
  });
  window.conn = conn;
  conn.start();
  return true;
}"""


def _start(page: Any, resume: bool = True) -> None:
    page.evaluate(
        "(resume) => (" + CONNECT + ")(resume ? (c) => ({conversation_id: 'c1',"
        " conversation_token: 't', resume_from: c.lastSeq('c1')}) : null)",
        resume,
    )
    page.evaluate("() => waitFor(() => sockets.length === 1 && sockets[0].sent.length === 1)")


def test_resume_drops_seen_events_and_resends_unacknowledged_messages(page: Any) -> None:
    """After a drop: hello resumes from the last seq, replays are dropped, m2 is resent once."""
    _start(page)
    result = page.evaluate(
        """async () => {
          const s0 = sockets[0];
          s0.serve({type: 'ready', conversation_id: 'c1', last_seq: 0, messages: []});
          conn.sendTracked({type: 'user_message', id: 'm1', text: 'hi'});
          s0.serve({type: 'user_message', conversation_id: 'c1', seq: 1, client_id: 'm1',
                    turn_id: 't1'});
          s0.serve({type: 'draft', conversation_id: 'c1', seq: 2, turn_id: 't1', text: 'a'});
          s0.serve({type: 'draft', conversation_id: 'c1', seq: 2, turn_id: 't1', text: 'a'});
          conn.sendTracked({type: 'user_message', id: 'm2', text: 'again'});
          s0.hangUp(1012);
          await waitFor(() => sockets.length === 2 && sockets[1].sent.length === 1);
          const s1 = sockets[1];
          const hello = s1.sent[0];
          s1.serve({type: 'ready', conversation_id: 'c1', last_seq: 3, messages: []});
          const resent = s1.sent.slice(1);
          s1.serve({type: 'draft', conversation_id: 'c1', seq: 2, turn_id: 't1', text: 'a'});
          s1.serve({type: 'user_message', conversation_id: 'c1', seq: 3, client_id: 'm2',
                    turn_id: 't2'});
          s1.serve({type: 'final', conversation_id: 'c1', seq: 4, turn_id: 't2'});
          return {s0: s0.sent, hello, resent, log, pending: conn.pending.length};
        }"""
    )
    assert result["s0"][0] == {
        "type": "hello",
        "v": 1,
        "key": "pk_x",
        "channel": "widget",
        "conversation_id": "c1",
        "conversation_token": "t",
        "resume_from": 0,
    }
    assert [f["id"] for f in result["s0"][1:]] == ["m1", "m2"]
    assert result["hello"]["resume_from"] == 2
    assert result["resent"] == [{"type": "user_message", "id": "m2", "text": "again"}]
    log = result["log"]
    assert log["events"] == [["user_message", 1], ["draft", 2], ["user_message", 3], ["final", 4]]
    assert log["acks"] == ["m1", "m2"]
    assert result["pending"] == 0
    assert log["statuses"][:3] == ["connecting", "ready", "ready#1"]
    assert "waiting" in log["statuses"] and log["statuses"][-1] == "ready#2"
    page.evaluate("() => conn.stop()")


def test_busy_is_retried_with_the_same_id_and_a_refusal_ends_it(page: Any) -> None:
    """busy/rate_limited with a ref: resent after retry_after; too_large: rejected for good."""
    _start(page, resume=False)
    result = page.evaluate(
        """async () => {
          const s0 = sockets[0];
          s0.serve({type: 'ready', conversation_id: 'c1', last_seq: 0, messages: []});
          conn.sendTracked({type: 'user_message', id: 'm1', text: 'hi'});
          s0.serve({type: 'error', code: 'busy', ref: 'm1', retry_after: 0.1});
          await waitFor(() => s0.sent.filter((f) => f.id === 'm1').length === 2);
          s0.serve({type: 'error', code: 'rate_limited', ref: 'm1', retry_after: 0.1});
          await waitFor(() => s0.sent.filter((f) => f.id === 'm1').length === 3);
          s0.serve({type: 'error', code: 'too_large', ref: 'm1'});
          await sleep(250);
          return {sent: s0.sent.map((f) => f.id || f.type), log, pending: conn.pending.length};
        }"""
    )
    assert result["sent"] == ["hello", "m1", "m1", "m1"]
    assert result["log"]["rejected"] == [["m1", "too_large"]]
    assert result["log"]["errors"] == ["busy", "rate_limited", "too_large"]
    assert result["pending"] == 0
    page.evaluate("() => conn.stop()")


def test_oversized_message_is_refused_before_sending(page: Any) -> None:
    """A text over 4000 code points, or a frame over 16 KiB, never leaves the page."""
    _start(page, resume=False)
    result = page.evaluate(
        """async () => {
          const s0 = sockets[0];
          s0.serve({type: 'ready', conversation_id: 'c1', last_seq: 0, messages: []});
          const long = conn.sendTracked({type: 'user_message', id: 'm1', text: 'x'.repeat(4001)});
          const wide = conn.sendTracked({type: 'user_message', id: 'm2',
                                         text: '\\u0001'.repeat(4000)});
          const fits = conn.sendTracked({type: 'user_message', id: 'm3',
                                         text: '\\u{1F600}'.repeat(4000)});
          return {long, wide, fits, sent: s0.sent.map((f) => f.id || f.type), log};
        }"""
    )
    assert (result["long"], result["wide"], result["fits"]) == (False, False, True)
    assert result["sent"] == ["hello", "m3"]
    assert result["log"]["rejected"] == [["m1", "too_large"], ["m2", "too_large"]]
    page.evaluate("() => conn.stop()")


def test_wrong_key_stops_reconnecting(page: Any) -> None:
    """auth_failed (then close 4401) is final: no second socket."""
    _start(page, resume=False)
    result = page.evaluate(
        """async () => {
          sockets[0].serve({type: 'error', code: 'auth_failed', message: 'no'});
          sockets[0].hangUp(4401);
          await sleep(800);
          return {sockets: sockets.length, log};
        }"""
    )
    assert result["sockets"] == 1
    assert result["log"]["statuses"][-1] == "failed"
    assert result["log"]["errors"] == ["auth_failed"]


def test_refused_conversation_is_dropped_and_a_new_one_started(page: Any) -> None:
    """bad_token for the stored conversation: the page forgets it and says hello afresh."""
    result = page.evaluate(
        """async () => {
          let stored = {conversation_id: 'c-old', conversation_token: 'forged'};
          const lost = [];
          const conn = new DlmClient.Connection({
            url: 'ws://example.test/ws',
            hello: () => Object.assign({type: 'hello', v: 1, key: 'pk_x'}, stored),
            onConversationLost: (code) => { lost.push(code); stored = {}; },
          });
          conn.start();
          await waitFor(() => sockets.length === 1 && sockets[0].sent.length === 1);
          sockets[0].serve({type: 'error', code: 'bad_token', message: 'no'});
          sockets[0].hangUp(4403);
          await waitFor(() => sockets.length === 2 && sockets[1].sent.length === 1);
          conn.stop();
          return {first: sockets[0].sent[0], second: sockets[1].sent[0], lost};
        }"""
    )
    assert result["first"]["conversation_id"] == "c-old"
    assert "conversation_id" not in result["second"]
    assert result["lost"] == ["bad_token"]
