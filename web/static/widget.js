/*
 * The support chat widget. Embed it on any page with one tag:
 *
 *   <script src="https://assistant.example/static/widget.js" data-key="pk_..." async></script>
 *
 * Optional attributes: data-ws (WebSocket URL; default: /ws on the script's own origin),
 * data-title (panel title), data-open="true" (start open).
 * It draws a chat bubble and a panel inside a shadow root (the host page's CSS cannot reach
 * it), speaks protocol v1 through dlm-client.js and keeps the conversation in localStorage
 * per key. Every text from the network is rendered with textContent.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) return;
  if (window.DlmWidget && window.DlmWidget.started) return;
  var scriptSrc = script.src;
  var config = {
    key: script.getAttribute("data-key") || "",
    ws: script.getAttribute("data-ws") || "",
    title: script.getAttribute("data-title") || "Chat with us",
    open: script.getAttribute("data-open") === "true",
  };
  window.DlmWidget = { started: true };

  function withClient(callback) {
    if (window.DlmClient) {
      callback();
      return;
    }
    var tag = document.createElement("script");
    tag.src = new URL("dlm-client.js", scriptSrc).toString();
    tag.async = true;
    tag.onload = callback;
    tag.onerror = function () {
      console.error("dlm widget: could not load " + tag.src);
    };
    document.head.appendChild(tag);
  }

  function whenBody(callback) {
    if (document.body) callback();
    else document.addEventListener("DOMContentLoaded", callback);
  }

  withClient(function () {
    whenBody(function () {
      window.DlmWidget = new Widget(config);
      window.DlmWidget.started = true;
    });
  });

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box}",
    ".root{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2430}",
    ".bubble{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:60px;height:60px;",
    "border-radius:50%;border:0;background:#1f5f8b;color:#fff;cursor:pointer;",
    "box-shadow:0 6px 20px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center}",
    ".bubble:hover{background:#174a6c}",
    ".bubble:focus-visible,button:focus-visible,textarea:focus-visible{outline:3px solid #f2a900;",
    "outline-offset:2px}",
    ".bubble svg{width:28px;height:28px;fill:currentColor}",
    ".badge{position:absolute;top:2px;right:2px;min-width:18px;height:18px;border-radius:9px;",
    "background:#d33;color:#fff;font-size:11px;line-height:18px;text-align:center;padding:0 4px}",
    ".panel{position:fixed;right:20px;bottom:92px;z-index:2147483001;width:370px;",
    "height:min(580px,calc(100vh - 120px));background:#fff;border-radius:14px;",
    "box-shadow:0 12px 40px rgba(0,0,0,.28);display:flex;flex-direction:column;overflow:hidden}",
    ".panel[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:8px;padding:12px 12px 12px 16px;",
    "background:#1f5f8b;color:#fff}",
    "h2{font-size:16px;margin:0;flex:1;font-weight:600}",
    ".conn{font-size:12px;opacity:.85}",
    ".close{background:transparent;border:0;color:#fff;font-size:22px;line-height:1;",
    "width:36px;height:36px;border-radius:8px;cursor:pointer}",
    ".close:hover{background:rgba(255,255,255,.15)}",
    ".log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:8px;",
    "background:#f6f8fa}",
    ".msg{max-width:85%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;",
    "overflow-wrap:anywhere}",
    ".msg.user{align-self:flex-end;background:#1f5f8b;color:#fff;border-bottom-right-radius:4px}",
    ".msg.user.sending{opacity:.7}",
    ".msg.user.failed{background:#a33}",
    ".msg.assistant{align-self:flex-start;background:#fff;border:1px solid #dde3ea;",
    "border-bottom-left-radius:4px}",
    ".msg.assistant.draft{color:#36404d}",
    ".msg.operator{align-self:flex-start;background:#fff6dd;border:1px solid #ecd28b;",
    "border-bottom-left-radius:4px}",
    ".who{display:block;font-size:11px;font-weight:600;color:#7a5a00;margin-bottom:2px}",
    ".msg.cancelled .text,.msg.failed-reply .text{color:#6b7480;font-style:italic}",
    ".note{display:block;font-size:11px;color:#6b7480;margin-top:4px}",
    ".dlm-mask{color:#c7ced6;letter-spacing:-1px}",
    ".dlm-revised{background:#fff0a8;border-radius:3px;animation:fade 1.2s ease-out forwards}",
    "@keyframes fade{from{background:#ffe066}to{background:transparent}}",
    "@media (prefers-reduced-motion:reduce){.dlm-revised{animation:none}.dots span{animation:none}}",
    ".rating{display:flex;gap:4px;margin-top:6px;align-items:center}",
    ".rating button{border:1px solid #dde3ea;background:#fff;border-radius:8px;cursor:pointer;",
    "padding:3px 8px;color:#4a5562;display:inline-flex;align-items:center}",
    ".rating svg{width:16px;height:16px;fill:currentColor}",
    ".rating button:hover{color:#1f5f8b;border-color:#1f5f8b}",
    ".rating button[aria-pressed=true]{background:#e3f0fa;border-color:#1f5f8b;color:#1f5f8b}",
    ".rating .thanks{font-size:11px;color:#6b7480}",
    ".notice{align-self:center;font-size:12px;color:#4a5562;background:#e9edf2;",
    "border-radius:10px;padding:4px 10px;text-align:center;max-width:95%}",
    ".notice.handoff{background:#fff6dd;color:#5c4400}",
    ".notice.error{background:#fde8e8;color:#8a1f1f}",
    ".typing{align-self:flex-start;display:flex;align-items:center;gap:8px;font-size:12px;",
    "color:#6b7480;padding:4px 2px}",
    ".typing[hidden]{display:none}",
    ".dots{display:inline-flex;gap:3px}",
    ".dots span{width:7px;height:7px;border-radius:50%;background:#9aa5b1;",
    "animation:blink 1.2s infinite}",
    ".dots span:nth-child(2){animation-delay:.2s}.dots span:nth-child(3){animation-delay:.4s}",
    "@keyframes blink{0%,80%,100%{opacity:.25}40%{opacity:1}}",
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid #dde3ea;background:#fff;",
    "align-items:flex-end}",
    "textarea{flex:1;resize:none;font:inherit;border:1px solid #c5ced8;border-radius:10px;",
    "padding:8px 10px;min-height:40px;max-height:120px}",
    ".send,.cancel{border:0;border-radius:10px;padding:0 14px;height:40px;font:inherit;",
    "font-weight:600;cursor:pointer}",
    ".send{background:#1f5f8b;color:#fff}",
    ".cancel{background:#e9edf2;color:#1d2430}",
    ".cancel[hidden]{display:none}",
    ".sr-only{position:absolute;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;",
    "clip:rect(0,0,0,0);white-space:nowrap;border:0}",
    "@media (max-width:480px){",
    ".panel{inset:0;right:0;bottom:0;width:100vw;height:100%;max-height:none;border-radius:0}",
    ".panel.open~.bubble,.bubble.covered{display:none}",
    "}",
  ].join("\n");

  var BUBBLE_ICON =
    "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z";

  // A thumb icon drawn as SVG (emoji fonts are not everywhere).
  var THUMB =
    "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6" +
    "C6.2 8 6 8.5 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";

  function thumb(down) {
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    if (down) svg.setAttribute("transform", "rotate(180)");
    var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", THUMB);
    svg.appendChild(path);
    return svg;
  }

  // Filled in by the gateway from the tool registry (assistant/tools/registry.py); served
  // as a plain file it stays empty and every tool shows the generic label.
  var TOOL_LABELS = /*{{TOOL_LABELS}}*/ {};

  function Widget(config) {
    var C = window.DlmClient;
    var self = this;
    this.config = config;
    this.storage = C.store(window.localStorage, "dlm-widget:" + config.key);
    this.saved = this.storage.load();
    this.byMessageId = {};
    this.byClientId = {};
    this.drafts = {};
    this.awaiting = false; // a message was sent and its turn has not started or ended yet
    this.turn = null; // turn_id of the reply in flight
    this.owner = "bot";
    this.open = false;
    this.unread = 0;
    this._build();

    var wsUrl = config.ws ? new URL(config.ws, location.href).toString() : C.wsUrlFor(scriptSrc);
    if (/^http/.test(wsUrl)) wsUrl = C.wsUrlFor(wsUrl, new URL(wsUrl).pathname);
    var lastSeq = {};
    if (this.saved.conversation_id) lastSeq[this.saved.conversation_id] = this.saved.last_seq || 0;
    this.connection = new C.Connection({
      url: wsUrl,
      pending: this.saved.pending || [],
      lastSeq: lastSeq,
      hello: function () { return self._hello(); },
      onReady: function (frame, n) { self._onReady(frame, n); },
      onEvent: function (frame) { self._onEvent(frame); },
      onError: function (frame) { self._onError(frame); },
      onStatus: function (state, info) { self._onStatus(state, info); },
      onConversationLost: function () { self._resetConversation(); },
      onRejected: function (clientId, frame) { self._onRejected(clientId, frame); },
      onPendingChange: function (list) {
        self.saved.pending = list;
        self._save();
      },
      onSeq: function (conversationId, seq) {
        if (conversationId === self.saved.conversation_id) {
          self.saved.last_seq = seq;
          self._save();
        }
      },
    });
    // Messages the page did not see acknowledged before it was closed are shown again.
    (this.saved.pending || []).forEach(function (f) {
      if (f.type === "user_message") self._addUser(f.text, f.id, null, "sending");
    });
    this.awaiting = this.connection.pending.length > 0;
    if (config.open) this.setOpen(true);
    this.connection.start();
  }

  Widget.prototype._save = function () {
    this.storage.save(this.saved);
  };

  Widget.prototype._hello = function () {
    var hello = { type: "hello", v: 1, key: this.config.key, channel: "widget" };
    if (this.saved.conversation_id && this.saved.conversation_token) {
      hello.conversation_id = this.saved.conversation_id;
      hello.conversation_token = this.saved.conversation_token;
      hello.resume_from = this.connection.lastSeq(this.saved.conversation_id);
    }
    return hello;
  };

  Widget.prototype._resetConversation = function () {
    if (this.saved.conversation_id) this.connection.forget(this.saved.conversation_id);
    this.saved = { pending: this.saved.pending || [] };
    this._save();
    this._clearLog();
  };

  // --- DOM --------------------------------------------------------------------------------

  Widget.prototype._build = function () {
    var C = window.DlmClient;
    var el = C.el;
    var self = this;
    var host = el("div");
    host.id = "dlm-widget";
    this.host = host;
    var root = host.attachShadow({ mode: "open" });
    this.root = root;
    var style = document.createElement("style");
    style.textContent = CSS;
    root.appendChild(style);
    var wrap = el("div", "root");
    root.appendChild(wrap);

    var panel = el("section", "panel");
    panel.id = "dlm-panel";
    panel.hidden = true;
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-labelledby", "dlm-title");
    this.panel = panel;

    var header = el("header");
    var title = el("h2", null, this.config.title);
    title.id = "dlm-title";
    this.connLabel = el("span", "conn", "connecting\u2026");
    this.connLabel.setAttribute("role", "status");
    var close = el("button", "close", "\u00d7");
    close.type = "button";
    close.setAttribute("aria-label", "Close chat");
    close.addEventListener("click", function () { self.setOpen(false); });
    header.append(title, this.connLabel, close);

    var log = el("div", "log");
    log.setAttribute("aria-label", "Conversation");
    log.tabIndex = 0;
    this.log = log;

    var typing = el("div", "typing");
    typing.hidden = true;
    var dots = el("span", "dots");
    dots.setAttribute("aria-hidden", "true");
    dots.append(el("span"), el("span"), el("span"));
    this.typingLabel = el("span", null, "Assistant is typing\u2026");
    typing.append(dots, this.typingLabel);
    this.typing = typing;

    var form = el("form");
    form.setAttribute("aria-label", "Send a message");
    var label = el("label", "sr-only", "Your message");
    label.htmlFor = "dlm-input";
    var input = el("textarea");
    input.id = "dlm-input";
    input.rows = 1;
    input.maxLength = 4000;
    input.placeholder = "Type your message\u2026";
    input.setAttribute("enterkeyhint", "send");
    this.input = input;
    var cancel = el("button", "cancel", "Stop");
    cancel.type = "button";
    cancel.hidden = true;
    cancel.setAttribute("aria-label", "Stop the reply");
    cancel.addEventListener("click", function () { self.cancel(); });
    this.cancelButton = cancel;
    var send = el("button", "send", "Send");
    send.type = "submit";
    this.sendButton = send;
    form.append(label, input, cancel, send);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.sendText(input.value);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        self.sendText(input.value);
      }
    });

    panel.append(header, log, form);
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        self.setOpen(false);
      } else if (event.key === "Tab" && self._fullScreen()) {
        self._trapTab(event);
      }
    });

    var bubble = el("button", "bubble");
    bubble.type = "button";
    bubble.setAttribute("aria-label", "Open chat");
    bubble.setAttribute("aria-expanded", "false");
    bubble.setAttribute("aria-controls", "dlm-panel");
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", BUBBLE_ICON);
    svg.appendChild(path);
    this.badge = el("span", "badge");
    this.badge.hidden = true;
    this.badge.setAttribute("aria-hidden", "true");
    bubble.append(svg, this.badge);
    bubble.addEventListener("click", function () { self.setOpen(!self.open); });
    this.bubble = bubble;

    // Replies and notices are read out once, when final, not at every draft step.
    this.announcer = el("div", "sr-only");
    this.announcer.setAttribute("aria-live", "polite");
    this.announcer.setAttribute("aria-atomic", "true");

    wrap.append(panel, bubble, this.announcer);
    document.body.appendChild(host);
  };

  Widget.prototype.setOpen = function (open) {
    this.open = open;
    this.panel.hidden = !open;
    this.panel.classList.toggle("open", open);
    this.bubble.setAttribute("aria-expanded", String(open));
    this.bubble.setAttribute("aria-label", open ? "Close chat" : "Open chat");
    this.panel.setAttribute("aria-modal", String(open && this._fullScreen()));
    if (open) {
      this.unread = 0;
      this.badge.hidden = true;
      this.input.focus();
      this._scroll();
    } else {
      this.bubble.focus();
    }
  };

  /** Under 480 px the panel covers the page: it is then modal and keeps the focus. */
  Widget.prototype._fullScreen = function () {
    return window.matchMedia("(max-width: 480px)").matches;
  };

  Widget.prototype._trapTab = function (event) {
    var focusable = Array.prototype.filter.call(
      this.panel.querySelectorAll("button, textarea, [tabindex]"),
      function (node) { return !node.disabled && node.offsetParent !== null; }
    );
    if (!focusable.length) return;
    var first = focusable[0];
    var last = focusable[focusable.length - 1];
    var active = this.root.activeElement;
    if (event.shiftKey && active === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && active === last) {
      event.preventDefault();
      first.focus();
    }
  };

  Widget.prototype._announce = function (text) {
    var a = this.announcer;
    a.textContent = "";
    setTimeout(function () { a.textContent = text; }, 30);
    if (!this.open) {
      this.unread += 1;
      this.badge.textContent = String(this.unread);
      this.badge.hidden = false;
    }
  };

  Widget.prototype._scroll = function () {
    var log = this.log;
    log.scrollTop = log.scrollHeight;
  };

  Widget.prototype._append = function (node) {
    if (this.typing.parentNode === this.log) this.log.insertBefore(node, this.typing);
    else this.log.appendChild(node);
    this._scroll();
  };

  Widget.prototype._clearLog = function () {
    this.log.textContent = "";
    this.byMessageId = {};
    this.byClientId = {};
    this.drafts = {};
    this.turn = null;
    this.awaiting = false;
    this._updateBusy();
  };

  Widget.prototype._notice = function (text, kind) {
    var node = window.DlmClient.el("div", "notice" + (kind ? " " + kind : ""), text);
    node.setAttribute("role", kind === "error" ? "alert" : "status");
    this._append(node);
    return node;
  };

  Widget.prototype._updateBusy = function () {
    var busy = this.awaiting || this.turn !== null;
    var hasDraft = this.turn !== null && this.drafts[this.turn] && this.drafts[this.turn].drafted;
    var showTyping = busy && !hasDraft && this.owner === "bot";
    this.typing.hidden = !showTyping;
    if (showTyping) this.log.appendChild(this.typing);
    else if (this.typing.parentNode) this.typing.remove();
    if (!busy) this.typingLabel.textContent = "Assistant is typing\u2026";
    this.cancelButton.hidden = !(busy && this.owner === "bot");
    this.log.setAttribute("aria-busy", String(busy));
    this._scroll();
  };

  // --- messages ---------------------------------------------------------------------------

  Widget.prototype._addUser = function (text, clientId, messageId, state) {
    var el = window.DlmClient.el;
    var existing = (clientId && this.byClientId[clientId]) || (messageId && this.byMessageId[messageId]);
    if (existing) {
      if (messageId) {
        existing.messageId = messageId;
        this.byMessageId[messageId] = existing;
      }
      existing.node.classList.toggle("sending", state === "sending");
      return existing;
    }
    var node = el("div", "msg user" + (state === "sending" ? " sending" : ""), text);
    node.setAttribute("data-role", "user");
    var record = { node: node, clientId: clientId, messageId: messageId };
    if (clientId) this.byClientId[clientId] = record;
    if (messageId) this.byMessageId[messageId] = record;
    this._append(node);
    return record;
  };

  Widget.prototype._assistantNode = function () {
    var el = window.DlmClient.el;
    var node = el("div", "msg assistant");
    node.setAttribute("data-role", "assistant");
    var text = el("div", "text");
    node.appendChild(text);
    return { node: node, text: text };
  };

  Widget.prototype._addAssistant = function (messageId, text, status) {
    if (messageId && this.byMessageId[messageId]) return this.byMessageId[messageId];
    var r = this._assistantNode();
    r.messageId = messageId;
    this._finish(r, text, status);
    if (messageId) this.byMessageId[messageId] = r;
    this._append(r.node);
    return r;
  };

  Widget.prototype._finish = function (r, text, status) {
    var el = window.DlmClient.el;
    r.node.classList.remove("draft");
    r.node.removeAttribute("aria-busy");
    r.node.setAttribute("data-status", status || "complete");
    if (status === "cancelled") {
      r.node.classList.add("cancelled");
      r.text.textContent = text || "Reply stopped.";
      if (text) r.node.appendChild(el("span", "note", "stopped"));
    } else if (status === "failed") {
      r.node.classList.add("failed-reply");
      r.text.textContent = text || "Sorry, something went wrong. Please try again.";
    } else {
      r.text.textContent = text;
      if (r.messageId) this._addRating(r);
    }
  };

  Widget.prototype._addRating = function (r) {
    var el = window.DlmClient.el;
    var self = this;
    var bar = el("div", "rating");
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Rate this reply");
    var up = el("button");
    var down = el("button");
    up.appendChild(thumb(false));
    down.appendChild(thumb(true));
    up.type = down.type = "button";
    up.setAttribute("aria-label", "Helpful");
    down.setAttribute("aria-label", "Not helpful");
    up.setAttribute("aria-pressed", "false");
    down.setAttribute("aria-pressed", "false");
    var thanks = el("span", "thanks");
    function rate(value) {
      self.connection.send({ type: "feedback", message_id: r.messageId, rating: value });
      up.setAttribute("aria-pressed", String(value === 1));
      down.setAttribute("aria-pressed", String(value === -1));
    }
    up.addEventListener("click", function () { rate(1); });
    down.addEventListener("click", function () { rate(-1); });
    bar.append(up, down, thanks);
    r.rating = { up: up, down: down, thanks: thanks };
    r.node.appendChild(bar);
  };

  Widget.prototype._addOperator = function (messageId, text, name) {
    if (messageId && this.byMessageId[messageId]) return;
    var el = window.DlmClient.el;
    var node = el("div", "msg operator");
    node.setAttribute("data-role", "operator");
    node.append(el("span", "who", (name || "Support agent") + " (staff)"), el("div", "text", text));
    var record = { node: node, messageId: messageId };
    if (messageId) this.byMessageId[messageId] = record;
    this._append(node);
    this._announce((name || "Support agent") + ": " + text);
  };

  Widget.prototype._renderHistory = function (messages) {
    var self = this;
    (messages || []).forEach(function (m) {
      if (m.role === "user") {
        // One drawn unconfirmed (restored from storage at load, or its echo lost in a drop)
        // moves to its place in the stored order, after the messages before it.
        var drawn = m.client_id && self.byClientId[m.client_id];
        var unconfirmed = drawn && drawn.node.classList.contains("sending");
        var record = self._addUser(m.text, m.client_id, m.id, "sent");
        if (unconfirmed) self._append(record.node);
      } else if (m.role === "assistant") {
        if (m.status === "complete" || m.status === "cancelled" || m.status === "failed") {
          self._addAssistant(m.id, m.text, m.status);
        }
      } else if (m.role === "operator") {
        if (!self.byMessageId[m.id]) self._addOperator(m.id, m.text, m.operator_name);
      }
    });
  };

  // --- actions ----------------------------------------------------------------------------

  Widget.prototype.sendText = function (raw) {
    var text = String(raw || "").trim();
    if (!text) return;
    var id = window.DlmClient.newId("m");
    this.input.value = "";
    this._addUser(text, id, null, "sending");
    if (this.owner === "bot") {
      this.awaiting = true;
      this._updateBusy();
    }
    if (!this.connection.sendTracked({ type: "user_message", id: id, text: text })) {
      this.input.value = text;
    }
  };

  Widget.prototype.cancel = function () {
    this.connection.send({ type: "cancel" });
  };

  // --- frames -----------------------------------------------------------------------------

  Widget.prototype._onStatus = function (state, info) {
    var labels = {
      connecting: "connecting\u2026",
      ready: "online",
      waiting: "reconnecting\u2026",
      failed: "offline",
    };
    this.connLabel.textContent = labels[state] || state;
    if (state === "failed" && info.reason === "auth_failed") {
      this._notice("The chat is not available on this site right now.", "error");
    }
  };

  Widget.prototype._onReady = function (frame, n) {
    var changed = frame.conversation_id !== this.saved.conversation_id;
    if (changed) {
      this.saved.conversation_id = frame.conversation_id;
      this.saved.conversation_token = frame.conversation_token;
      this.saved.last_seq = frame.last_seq || 0;
      this.connection.setLastSeq(frame.conversation_id, frame.last_seq || 0);
      this._save();
    } else if (frame.conversation_token) {
      this.saved.conversation_token = frame.conversation_token;
      this._save();
    }
    if (changed && n > 1) this._clearLog();
    this.owner = frame.owner || "bot";
    this._renderHistory(frame.messages);
    // Messages still waiting for their echo go after the stored history.
    var self = this;
    this.connection.pending.forEach(function (f) {
      var r = self.byClientId[f.id];
      if (r && !r.messageId) self._append(r.node);
    });
    if (n === 1 && this.owner === "human") {
      this._notice("A person from our team is handling this conversation.", "handoff");
    }
    this._updateBusy();
  };

  Widget.prototype._onEvent = function (frame) {
    switch (frame.type) {
      case "user_message":
        return this._onUserMessage(frame);
      case "draft":
        return this._onDraft(frame);
      case "tool_call":
        return this._onToolCall(frame);
      case "tool_result":
        return undefined;
      case "final":
        return this._onFinal(frame);
      case "operator_message":
        return this._addOperator(frame.message_id, frame.text, frame.operator_name);
      case "handoff":
        return this._onHandoff(frame);
      case "feedback_saved":
        return this._onFeedbackSaved(frame);
      default:
        return undefined;
    }
  };

  Widget.prototype._onUserMessage = function (frame) {
    this._addUser(frame.text, frame.client_id, frame.message_id, "sent");
    if (frame.turn_id) {
      this.turn = frame.turn_id;
      this.awaiting = false;
    } else if (!this.connection.pending.length) {
      this.awaiting = false;
    }
    this._updateBusy();
  };

  Widget.prototype._draftRecord = function (turnId) {
    var r = this.drafts[turnId];
    if (!r) {
      r = this._assistantNode();
      r.turnId = turnId;
      r.node.classList.add("draft");
      r.node.setAttribute("aria-busy", "true");
      this.drafts[turnId] = r;
    }
    return r;
  };

  Widget.prototype._onDraft = function (frame) {
    if (!frame.turn_id) return;
    if (this.turn === null) this.turn = frame.turn_id;
    var r = this._draftRecord(frame.turn_id);
    if (r.round !== undefined && frame.round !== r.round) r.drafted = false;
    r.round = frame.round;
    window.DlmClient.renderDraft(r.text, frame.text, frame.revised_spans);
    r.node.setAttribute("data-step", String(frame.step));
    if (!r.node.parentNode) this._append(r.node);
    r.drafted = true;
    this._updateBusy();
  };

  Widget.prototype._onToolCall = function (frame) {
    // The round that asked for the tool is not a reply: its draft (if any showed) goes away.
    var r = this.drafts[frame.turn_id];
    if (r) {
      r.text.textContent = "";
      r.drafted = false;
      if (r.node.parentNode) r.node.remove();
    }
    if (this.turn === null) this.turn = frame.turn_id;
    if (frame.turn_id === this.turn) {
      this.typingLabel.textContent = TOOL_LABELS[frame.name] || "Working on it\u2026";
      this._updateBusy();
    }
  };

  Widget.prototype._onFinal = function (frame) {
    var r = this.drafts[frame.turn_id];
    delete this.drafts[frame.turn_id];
    var existing = frame.message_id && this.byMessageId[frame.message_id];
    if (existing) {
      if (r && r.node.parentNode) r.node.remove();
    } else {
      if (!r) r = this._assistantNode();
      r.messageId = frame.message_id;
      this._finish(r, frame.text, frame.status);
      if (frame.message_id) this.byMessageId[frame.message_id] = r;
      if (!r.node.parentNode) this._append(r.node);
      this._announce(frame.status === "cancelled" ? "Reply stopped." : frame.text);
    }
    if (frame.turn_id === this.turn) this.turn = null;
    this._updateBusy();
  };

  Widget.prototype._onHandoff = function (frame) {
    var previous = this.owner;
    this.owner = frame.owner;
    if (frame.owner === "human" && previous !== "human") {
      this.turn = null;
      this.awaiting = false;
      this._notice("A person from our team will take over this conversation.", "handoff");
      this._announce("A person from our team will take over this conversation.");
    } else if (frame.owner === "bot" && previous !== "bot") {
      this._notice("You are chatting with the assistant again.", "handoff");
    } else if (frame.owner === "closed") {
      this._notice("This conversation was closed.", "handoff");
    }
    this._updateBusy();
  };

  Widget.prototype._onFeedbackSaved = function (frame) {
    var r = this.byMessageId[frame.message_id];
    if (!r || !r.rating) return;
    r.rating.up.setAttribute("aria-pressed", String(frame.rating === 1));
    r.rating.down.setAttribute("aria-pressed", String(frame.rating === -1));
    r.rating.thanks.textContent = "Thanks for the feedback";
  };

  Widget.prototype._onRejected = function (clientId, frame) {
    var r = this.byClientId[clientId];
    if (r) {
      r.node.classList.remove("sending");
      r.node.classList.add("failed");
      r.node.setAttribute("data-state", "failed");
    }
    if (!this.connection.pending.length) this.awaiting = false;
    this._updateBusy();
  };

  var ERROR_TEXT = {
    busy: "The assistant is busy right now; your message will be sent again shortly.",
    rate_limited: "You are sending messages quickly; your message will be sent again shortly.",
    turn_failed: "Sorry, the reply could not be generated. Please try again.",
    too_large: "That message is too long.",
    forbidden: "That is not allowed here.",
    internal: "Something went wrong on our side.",
  };

  Widget.prototype._onError = function (frame) {
    if (frame.code === "auth_failed") return; // shown by the status handler
    if (frame.code === "turn_failed") {
      this.turn = null;
      this.awaiting = false;
      this._updateBusy();
    }
    var text = ERROR_TEXT[frame.code] || frame.message || "Something went wrong.";
    if (frame.retry_after && (frame.code === "busy" || frame.code === "rate_limited")) {
      text += " (retrying in " + Math.ceil(Number(frame.retry_after)) + " s)";
    }
    var node = this._notice(text, "error");
    node.setAttribute("data-code", String(frame.code || ""));
  };
})();
