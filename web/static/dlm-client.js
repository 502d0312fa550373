/*
 * dlm-client.js: the one protocol v1 client (docs/protocol.md) shared by the support widget,
 * the tutor page and the agent console. A classic script: it defines window.DlmClient once.
 *
 * One way to do each thing:
 *  - Connection: connect, hello, resume_from, reconnect with backoff (0.5 s doubling to 10 s,
 *    with jitter), drop events already seen (per-conversation seq), resend unacknowledged
 *    messages with the same client id after a reconnect (the echo with that client_id is the
 *    acknowledgement), retry after busy / rate_limited.
 *  - renderDraft / renderText: draw a whole-reply snapshot into an element with textContent
 *    only (masked positions as placeholders, revised spans highlighted).
 * Nothing here ever uses innerHTML.
 */
(function () {
  "use strict";
  if (window.DlmClient) return;

  var MASK = "\u2591";
  var BACKOFF_START_MS = 500;
  var BACKOFF_MAX_MS = 10000;
  var MAX_TEXT_CHARS = 4000;
  var MAX_FRAME_BYTES = 16 * 1024;
  var RETRYABLE = { busy: true, rate_limited: true };
  var CONVERSATION_LOST = { bad_token: true, not_found: true };

  function newId(prefix) {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    var hex = "";
    for (var i = 0; i < bytes.length; i++) hex += (bytes[i] + 256).toString(16).slice(1);
    return (prefix || "c") + "_" + hex;
  }

  /** Delay before reconnect attempt n (0-based): 0.5 s doubling to 10 s, half of it jitter. */
  function backoffDelay(attempt) {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * Math.pow(2, attempt));
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  /** ws:// or wss:// URL of path on the origin of an http(s) URL. */
  function wsUrlFor(httpUrl, path) {
    var u = new URL(path || "/ws", httpUrl);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.toString();
  }

  /**
   * A protocol v1 connection that keeps itself up.
   *
   * options:
   *   url                  ws URL
   *   hello()              returns the hello frame to send (called on every connect)
   *   onReady(frame, n)    after each ready; n counts readies on this page (1 = first)
   *   onEvent(frame)       every other frame, conversation events at most once each
   *   onError(frame)       error frames (after the client handled retries itself)
   *   onStatus(state, info) "connecting" | "ready" | "waiting" (info.delay ms) | "failed"
   *   onConversationLost(code) the hello named a conversation the gateway refused
   *   onAck(clientId, frame)  a tracked message was acknowledged
   *   onRejected(clientId, frame) a tracked message was refused for good (error with ref)
   *   onPendingChange(list)   the unacknowledged frames changed (for persistence)
   *   pending              unacknowledged frames restored from storage
   *   lastSeq              {conversation_id: seq} restored from storage
   *   onSeq(conversationId, seq)  the last seen seq of a conversation moved
   */
  function Connection(options) {
    this.options = options;
    this.socket = null;
    this.state = "idle";
    this.attempt = 0;
    this.readyCount = 0;
    this.stopped = false;
    this.timer = null;
    this.queue = [];
    this.pending = (options.pending || []).slice();
    this.lastSeqs = Object.assign({}, options.lastSeq || {});
    this.retryTimers = {};
  }

  Connection.prototype.start = function () {
    this.stopped = false;
    this._connect();
  };

  Connection.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this.timer);
    this._clearRetries();
    if (this.socket) this.socket.close(1000);
    this._status("failed", { reason: "stopped" });
  };

  /** Close the socket as if the network dropped; the connection reconnects and resumes. */
  Connection.prototype.drop = function () {
    if (this.socket) this.socket.close(4000, "dropped by client");
  };

  Connection.prototype.isReady = function () {
    return this.state === "ready";
  };

  Connection.prototype.lastSeq = function (conversationId) {
    return this.lastSeqs[conversationId] || 0;
  };

  Connection.prototype.setLastSeq = function (conversationId, seq) {
    this.lastSeqs[conversationId] = seq;
    if (this.options.onSeq) this.options.onSeq(conversationId, seq);
  };

  Connection.prototype.forget = function (conversationId) {
    delete this.lastSeqs[conversationId];
  };

  /** Send now when ready, else once the next ready arrives (fire and forget). */
  Connection.prototype.send = function (frame) {
    if (this.state === "ready") this._raw(frame);
    else this.queue.push(frame);
  };

  /** Send a frame with a client id until the gateway acknowledges it (echo with client_id). */
  Connection.prototype.sendTracked = function (frame) {
    // Refused here, not resent forever: the gateway closes the socket on a frame over 16 KiB.
    var problem = frameProblem(frame);
    if (problem) {
      // Reported as the gateway would: the rejection of this id, then the error.
      var error = { type: "error", code: "too_large", message: problem, ref: frame.id };
      if (this.options.onRejected) this.options.onRejected(frame.id, error);
      if (this.options.onError) this.options.onError(error);
      return false;
    }
    this.pending.push(frame);
    this._pendingChanged();
    if (this.state === "ready") this._raw(frame);
    return true;
  };

  /** Treat a tracked frame as acknowledged (when the echo carries no client_id). */
  Connection.prototype.acknowledge = function (clientId) {
    if (!this.isPending(clientId)) return;
    this.pending = this.pending.filter(function (f) { return f.id !== clientId; });
    this._pendingChanged();
  };

  Connection.prototype.isPending = function (clientId) {
    return this.pending.some(function (f) { return f.id === clientId; });
  };

  /** Why a frame cannot be sent (text over MAX_TEXT_CHARS, frame over MAX_FRAME_BYTES). */
  function frameProblem(frame) {
    if (typeof frame.text === "string" && Array.from(frame.text).length > MAX_TEXT_CHARS) {
      return "The message is longer than " + MAX_TEXT_CHARS + " characters.";
    }
    if (new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      return "The message is too large to send.";
    }
    return null;
  }

  Connection.prototype._raw = function (frame) {
    try {
      this.socket.send(JSON.stringify(frame));
    } catch (e) {
      /* the close handler reconnects and resends what is still pending */
    }
  };

  Connection.prototype._status = function (state, info) {
    this.state = state;
    if (this.options.onStatus) this.options.onStatus(state, info || {});
  };

  Connection.prototype._pendingChanged = function () {
    if (this.options.onPendingChange) this.options.onPendingChange(this.pending.slice());
  };

  Connection.prototype._clearRetries = function () {
    for (var key in this.retryTimers) clearTimeout(this.retryTimers[key]);
    this.retryTimers = {};
  };

  Connection.prototype._connect = function () {
    var self = this;
    clearTimeout(this.timer);
    this._status("connecting");
    var socket;
    try {
      socket = new WebSocket(this.options.url);
    } catch (e) {
      this._scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = function () {
      if (self.socket !== socket) return;
      self._raw(self.options.hello());
    };
    socket.onmessage = function (message) {
      if (self.socket !== socket) return;
      var frame;
      try {
        frame = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame === "object") self._handle(frame, socket);
    };
    socket.onclose = function (event) {
      if (self.socket !== socket) return;
      self.socket = null;
      self._clearRetries();
      if (self.stopped) return;
      if (event.code === 4401) {
        self.stopped = true;
        self._status("failed", { reason: "auth_failed" });
        return;
      }
      self._scheduleReconnect();
    };
  };

  Connection.prototype._scheduleReconnect = function () {
    var self = this;
    if (this.stopped) return;
    var delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this._status("waiting", { delay: delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self._connect(); }, delay);
  };

  Connection.prototype._handle = function (frame, socket) {
    var self = this;
    if (frame.type === "ready") {
      this.attempt = 0;
      this.readyCount += 1;
      this._status("ready");
      if (this.options.onReady) this.options.onReady(frame, this.readyCount);
      var queued = this.queue;
      this.queue = [];
      queued.forEach(function (f) { self._raw(f); });
      this.pending.forEach(function (f) { self._raw(f); });
      return;
    }
    if (frame.type === "error") {
      this._handleError(frame, socket);
      return;
    }
    // The echo of a tracked frame acknowledges it, even when its seq was seen before.
    if (frame.client_id && this.isPending(frame.client_id)) {
      this.pending = this.pending.filter(function (f) { return f.id !== frame.client_id; });
      this._pendingChanged();
      if (this.options.onAck) this.options.onAck(frame.client_id, frame);
    }
    if (typeof frame.seq === "number" && frame.conversation_id) {
      if (frame.seq <= this.lastSeq(frame.conversation_id)) return;
      this.setLastSeq(frame.conversation_id, frame.seq);
    }
    if (this.options.onEvent) this.options.onEvent(frame);
  };

  Connection.prototype._handleError = function (frame, socket) {
    var self = this;
    if (this.state !== "ready") {
      if (frame.code === "auth_failed") {
        this.stopped = true;
        this._status("failed", { reason: "auth_failed", message: frame.message });
        if (this.options.onError) this.options.onError(frame);
        socket.close(1000);
        return;
      }
      if (CONVERSATION_LOST[frame.code]) {
        if (this.options.onConversationLost) this.options.onConversationLost(frame.code);
        this.attempt = 0;
        socket.close(1000);
        return;
      }
    }
    var ref = frame.ref;
    if (ref && this.isPending(ref)) {
      if (RETRYABLE[frame.code]) {
        var delay = Math.max(0.2, Number(frame.retry_after) || 1) * 1000;
        clearTimeout(this.retryTimers[ref]);
        this.retryTimers[ref] = setTimeout(function () {
          delete self.retryTimers[ref];
          var f = self.pending.find(function (p) { return p.id === ref; });
          if (f && self.state === "ready") self._raw(f);
        }, delay);
      } else {
        this.pending = this.pending.filter(function (f) { return f.id !== ref; });
        this._pendingChanged();
        if (this.options.onRejected) this.options.onRejected(ref, frame);
      }
    }
    if (this.options.onError) this.options.onError(frame);
  };

  // --- rendering -------------------------------------------------------------------------

  /**
   * Draw a draft snapshot into el: masked positions (U+2591) become placeholder spans,
   * characters inside revisedSpans ([start, end) code-point spans) get the revised class.
   */
  function renderDraft(el, text, revisedSpans, classes) {
    classes = classes || {};
    var maskClass = classes.mask || "dlm-mask";
    var revisedClass = classes.revised || "dlm-revised";
    var chars = Array.from(String(text || ""));
    var revised = new Uint8Array(chars.length);
    (revisedSpans || []).forEach(function (span) {
      if (!Array.isArray(span) || span.length < 2) return;
      var end = Math.min(chars.length, Number(span[1]) || 0);
      for (var i = Math.max(0, Number(span[0]) || 0); i < end; i++) revised[i] = 1;
    });
    el.textContent = "";
    var i = 0;
    while (i < chars.length) {
      var masked = chars[i] === MASK;
      var rev = revised[i];
      var j = i;
      var run = "";
      while (j < chars.length && (chars[j] === MASK) === masked && revised[j] === rev) {
        run += chars[j];
        j++;
      }
      if (!masked && !rev) {
        el.appendChild(document.createTextNode(run));
      } else {
        var span = document.createElement("span");
        if (masked) {
          span.className = maskClass;
          span.setAttribute("aria-hidden", "true");
        }
        if (rev) span.className = (span.className ? span.className + " " : "") + revisedClass;
        span.textContent = run;
        el.appendChild(span);
      }
      i = j;
    }
  }

  /** Count of masked positions left in a draft text. */
  function maskedCount(text) {
    var n = 0;
    for (var ch of String(text || "")) if (ch === MASK) n++;
    return n;
  }

  /** Create an element with a class and optional text (always textContent). */
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /** "steps 12 · 9 forward passes · 40 tokens · 210 ms · 190 tokens/s" from final.usage. */
  function usageSummary(usage) {
    if (!usage) return "";
    var parts = [];
    if (usage.mode) parts.push(String(usage.mode));
    if (usage.steps !== undefined) parts.push(usage.steps + " steps");
    if (usage.forward_passes !== undefined) parts.push(usage.forward_passes + " forward passes");
    if (usage.tokens !== undefined) parts.push(usage.tokens + " tokens");
    var ms = usageMs(usage);
    if (ms !== null) parts.push(Math.round(ms) + " ms");
    var rate = tokensPerSecond(usage);
    if (rate !== null) parts.push(rate.toFixed(1) + " tokens/s");
    return parts.join(" \u00b7 ");
  }

  /** The turn's milliseconds (protocol field ms; milliseconds accepted too). */
  function usageMs(usage) {
    if (!usage) return null;
    var ms = usage.ms !== undefined ? usage.ms : usage.milliseconds;
    return ms === undefined || ms === null || !isFinite(Number(ms)) ? null : Number(ms);
  }

  function tokensPerSecond(usage) {
    var ms = usageMs(usage);
    var tokens = Number(usage && usage.tokens);
    if (!ms || !isFinite(ms) || !isFinite(tokens)) return null;
    return tokens / (ms / 1000);
  }

  /** Small JSON storage helper that never throws (private mode, quota, disabled storage). */
  function store(storage, key) {
    return {
      load: function () {
        try {
          return JSON.parse(storage.getItem(key) || "null") || {};
        } catch (e) {
          return {};
        }
      },
      save: function (value) {
        try {
          storage.setItem(key, JSON.stringify(value));
        } catch (e) {
          /* storage unavailable: the conversation lives as long as the page */
        }
      },
      clear: function () {
        try {
          storage.removeItem(key);
        } catch (e) {
          /* ignore */
        }
      },
    };
  }

  window.DlmClient = {
    MASK: MASK,
    Connection: Connection,
    MAX_TEXT_CHARS: MAX_TEXT_CHARS,
    frameProblem: frameProblem,
    backoffDelay: backoffDelay,
    wsUrlFor: wsUrlFor,
    newId: newId,
    renderDraft: renderDraft,
    maskedCount: maskedCount,
    el: el,
    usageSummary: usageSummary,
    tokensPerSecond: tokensPerSecond,
    store: store,
  };
})();
