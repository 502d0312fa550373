/*
 * The agent console: operator sign-in (key kept in sessionStorage), the live list of the
 * tenant's conversations, one conversation at a time with its history, live drafts, every
 * tool call (arguments, result, timing) and per-turn stats; take over, reply, hand back.
 * Protocol v1 through dlm-client.js. Everything from the network is set with textContent.
 */
(function () {
  "use strict";
  var C = window.DlmClient;
  var el = C.el;
  var $ = function (id) { return document.getElementById(id); };
  var KEY_STORE = "dlm-console-key";
  var ACTIVE_MS = 5 * 60 * 1000;

  function meta(name, fallback) {
    var node = document.querySelector('meta[name="' + name + '"]');
    var value = node ? node.getAttribute("content") : "";
    return value && value.indexOf("{{") === -1 ? value : fallback;
  }

  var ui = {
    conn: $("conn"),
    operator: $("operator"),
    logout: $("logout"),
    login: $("login"),
    loginForm: $("login-form"),
    keyInput: $("operator-key"),
    loginError: $("login-error"),
    app: $("app"),
    filter: $("filter"),
    list: $("conversations"),
    empty: $("empty"),
    back: $("back"),
    title: $("view-title"),
    owner: $("owner"),
    takeOver: $("take-over"),
    handBack: $("hand-back"),
    transcript: $("transcript"),
    replyForm: $("reply-form"),
    reply: $("reply"),
    send: $("send"),
    notice: $("view-notice"),
  };

  var connection = null;
  var me = null;
  var conversations = {}; // id -> list entry
  var fresh = {}; // ids that arrived after sign-in and were not opened yet
  var opened = {}; // ids opened in this tab
  var current = null; // { id, owner, operator_id, byMessage, drafts, calls }

  function sessionKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch (e) {
      return "";
    }
  }

  function setSessionKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORE, value);
      else sessionStorage.removeItem(KEY_STORE);
    } catch (e) {
      /* the key then lives as long as this page */
    }
  }

  // --- sign in / out ----------------------------------------------------------------------

  function showLogin(message) {
    ui.login.hidden = false;
    ui.app.hidden = true;
    ui.logout.hidden = true;
    ui.operator.textContent = "";
    ui.conn.textContent = "";
    ui.loginError.hidden = !message;
    ui.loginError.textContent = message || "";
    ui.keyInput.focus();
  }

  function signIn(key) {
    if (connection) connection.stop();
    conversations = {};
    fresh = {};
    current = null;
    renderList();
    var ws = C.wsUrlFor(location.href, meta("dlm-ws-path", "/ws"));
    var initialList = true;
    connection = new C.Connection({
      url: ws,
      hello: function () { return { type: "hello", v: 1, key: key, channel: "console" }; },
      onReady: function (frame) {
        me = frame.operator || { id: null, name: "" };
        setSessionKey(key);
        ui.login.hidden = true;
        ui.app.hidden = false;
        ui.logout.hidden = false;
        ui.operator.textContent = me.name ? "Signed in as " + me.name : "";
        initialList = true;
        connection.send({ type: "subscribe" });
        if (current) {
          var frame2 = { type: "open", conversation_id: current.id };
          var seq = connection.lastSeq(current.id);
          if (seq) frame2.resume_from = seq;
          current.reopening = true;
          connection.send(frame2);
        }
      },
      onEvent: function (frame) {
        if (frame.type === "conversation_list") {
          onList(frame.conversations || [], initialList);
          initialList = false;
        } else if (frame.type === "conversation_update") {
          onUpdate(frame.conversation || frame);
        } else if (frame.type === "history") {
          onHistory(frame);
        } else if (current && frame.conversation_id === current.id) {
          onConversationEvent(frame);
        }
      },
      onError: onError,
      onStatus: function (state, info) {
        var labels = { connecting: "connecting\u2026", ready: "live", waiting: "reconnecting\u2026",
          failed: "offline" };
        ui.conn.textContent = labels[state] || state;
        if (state === "failed" && info.reason === "auth_failed") {
          setSessionKey("");
          showLogin(info.message || "That operator key was not accepted.");
        }
      },
      onAck: function () {},
      onRejected: function (clientId, frame) {
        viewNotice(frame.message || "The message was not sent.");
      },
    });
    window.DlmConsole = { connection: connection };
    connection.start();
  }

  ui.loginForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var key = ui.keyInput.value.trim();
    if (!key) return;
    ui.keyInput.value = "";
    signIn(key);
  });

  ui.logout.addEventListener("click", function () {
    setSessionKey("");
    if (connection) connection.stop();
    connection = null;
    current = null;
    showLogin("");
  });

  function onError(frame) {
    if (frame.code === "auth_failed") return; // handled by onStatus
    viewNotice((frame.message || frame.code || "error") + (frame.code ? " (" + frame.code + ")" : ""));
  }

  function viewNotice(text) {
    ui.notice.hidden = !text;
    ui.notice.textContent = text || "";
  }

  // --- the list ---------------------------------------------------------------------------

  function onList(list, initial) {
    var next = {};
    list.forEach(function (c) { next[c.id] = c; });
    if (!initial) {
      Object.keys(next).forEach(function (id) { if (!conversations[id]) fresh[id] = true; });
    }
    conversations = next;
    renderList();
  }

  function onUpdate(entry) {
    if (!entry || !entry.id) return;
    if (!conversations[entry.id] && !opened[entry.id]) fresh[entry.id] = true;
    conversations[entry.id] = Object.assign({}, conversations[entry.id] || {}, entry);
    renderList();
    if (current && current.id === entry.id) {
      if (entry.owner) current.owner = entry.owner;
      if ("operator_id" in entry) current.operator_id = entry.operator_id;
      renderOwner();
    }
  }

  function stateOf(c) {
    if (c.waiting) return "waiting";
    if (c.owner === "human") return "human";
    if (c.owner === "closed") return "closed";
    return "bot";
  }

  function renderList() {
    var filter = ui.filter.value;
    var items = Object.keys(conversations).map(function (id) { return conversations[id]; });
    items.sort(function (a, b) {
      if (!!a.waiting !== !!b.waiting) return a.waiting ? -1 : 1;
      return String(b.updated_at || "").localeCompare(String(a.updated_at || ""));
    });
    ui.list.textContent = "";
    var shown = 0;
    items.forEach(function (c) {
      var state = stateOf(c);
      if (filter !== "all" && filter !== state) return;
      shown++;
      var li = el("li");
      li.setAttribute("data-conversation", c.id);
      li.setAttribute("data-state", state);
      var button = el("button", "conv" + (current && current.id === c.id ? " selected" : ""));
      button.type = "button";
      if (current && current.id === c.id) button.setAttribute("aria-current", "true");
      var top = el("span", "conv-top");
      top.append(el("span", "channel", c.channel || "chat"), el("span", "conv-id", shortId(c.id)));
      var badges = el("span", "badges");
      if (fresh[c.id]) badges.appendChild(el("span", "badge new", "new"));
      if (c.waiting) badges.appendChild(el("span", "badge waiting", "waiting for a human"));
      if (c.owner === "human" && c.operator_id) {  // waiting ones have no operator yet
        var mine = isMe(c.operator_id);
        badges.appendChild(el("span", "badge human", mine ? "yours" : "operator"));
      }
      var updated = Date.parse(c.updated_at || "");
      if (!c.waiting && c.owner !== "human" && updated && Date.now() - updated < ACTIVE_MS) {
        badges.appendChild(el("span", "badge active", "active"));
      }
      top.appendChild(badges);
      var last = el("span", "last", c.last_text || "");
      var when = el("span", "when", updated ? new Date(updated).toLocaleTimeString() : "");
      button.append(top, last, when);
      button.addEventListener("click", function () { openConversation(c.id); });
      li.appendChild(button);
      ui.list.appendChild(li);
    });
    ui.empty.hidden = shown > 0;
  }

  ui.filter.addEventListener("change", renderList);

  function shortId(id) {
    id = String(id || "");
    return id.length > 10 ? id.slice(0, 8) + "\u2026" : id;
  }

  // --- one conversation ---------------------------------------------------------------------

  function openConversation(id) {
    if (current && current.id === id) {
      ui.app.classList.add("viewing");
      return;
    }
    if (current) connection.send({ type: "close_view", conversation_id: current.id });
    var entry = conversations[id] || {};
    current = {
      id: id,
      owner: entry.owner || "bot",
      operator_id: entry.operator_id === undefined ? null : entry.operator_id,
      byMessage: {},
      drafts: {},
      calls: {},
      reopening: false,
    };
    opened[id] = true;
    delete fresh[id];
    connection.forget(id);
    ui.transcript.textContent = "";
    ui.title.textContent = (entry.channel || "Conversation") + " " + shortId(id);
    ui.title.setAttribute("title", id);
    ui.app.classList.add("viewing");
    viewNotice("");
    renderOwner();
    renderList();
    connection.send({ type: "open", conversation_id: id });
  }

  ui.back.addEventListener("click", function () {
    ui.app.classList.remove("viewing");
  });

  /** Operator ids come as numbers in some frames and as strings in others. */
  function isMe(operatorId) {
    return !!me && operatorId !== null && operatorId !== undefined && me.id !== null &&
      String(operatorId) === String(me.id);
  }

  function ownedByMe() {
    return !!(current && current.owner === "human" && isMe(current.operator_id));
  }

  function renderOwner() {
    if (!current) {
      ui.owner.textContent = "";
      ui.takeOver.disabled = ui.handBack.disabled = ui.reply.disabled = ui.send.disabled = true;
      return;
    }
    var mine = ownedByMe();
    var label = current.owner === "human"
      ? (mine ? "you own it" : current.operator_id ? "an operator owns it" : "waiting for a human")
      : current.owner === "closed" ? "closed" : "the bot answers";
    ui.owner.textContent = label;
    ui.owner.setAttribute("data-owner", current.owner + (mine ? "-me" : ""));
    ui.takeOver.disabled = mine || current.owner === "closed";
    ui.handBack.disabled = !mine;
    ui.reply.disabled = !mine;
    ui.send.disabled = !mine;
    ui.reply.placeholder = mine ? "Reply as " + (me.name || "operator") : "Take the conversation over to reply";
  }

  ui.takeOver.addEventListener("click", function () {
    if (current) connection.send({ type: "take_over", conversation_id: current.id });
  });
  ui.handBack.addEventListener("click", function () {
    if (current) connection.send({ type: "hand_back", conversation_id: current.id });
  });
  ui.replyForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = ui.reply.value.trim();
    if (!text || !ownedByMe()) return;
    ui.reply.value = "";
    connection.sendTracked({
      type: "operator_message",
      conversation_id: current.id,
      id: C.newId("op"),
      text: text,
    });
  });
  ui.reply.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.replyForm.requestSubmit();
    }
  });

  function scrollDown() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function item(kind, who) {
    var li = el("li", "item " + kind);
    li.setAttribute("data-kind", kind);
    if (who) li.appendChild(el("span", "who", who));
    return li;
  }

  function append(li) {
    ui.transcript.appendChild(li);
    scrollDown();
    return li;
  }

  function addMessage(m) {
    var id = m.id || m.message_id;
    if (id && current.byMessage[id]) return current.byMessage[id];
    var li;
    if (m.role === "user") {
      li = item("user", "Visitor");
      li.appendChild(el("div", "text", m.text));
    } else if (m.role === "operator") {
      li = item("operator", (m.operator_name || "Operator") + " (operator)");
      li.appendChild(el("div", "text", m.text));
    } else if (m.role === "assistant") {
      li = item("assistant", "Assistant");
      li.appendChild(el("div", "text", m.text));
      var status = m.status || "complete";
      li.setAttribute("data-status", status);
      if (status !== "complete") li.appendChild(el("span", "status", status));
      var usage = m.usage || m.stats;
      if (usage) li.appendChild(el("div", "stats", C.usageSummary(usage)));
    } else {
      li = item("system", m.role || "note");
      li.appendChild(el("div", "text", m.text));
    }
    if (id) {
      li.setAttribute("data-message-id", id);
      current.byMessage[id] = li;
    }
    return append(li);
  }

  function json(value) {
    if (value === undefined || value === null) return "";
    try {
      return JSON.stringify(value, null, 2);
    } catch (e) {
      return String(value);
    }
  }

  function toolCard(callId, name, turnId) {
    var card = callId && current.calls[callId];
    if (card) return card;
    var li = item("tool", "Tool call");
    li.setAttribute("data-call-id", callId || "");
    if (turnId) li.setAttribute("data-turn", turnId);
    var head = el("div", "tool-head");
    var nameEl = el("code", "tool-name", name || "");
    var statusEl = el("span", "tool-status", "running\u2026");
    var msEl = el("span", "tool-ms", "");
    head.append(nameEl, statusEl, msEl);
    var args = el("pre", "tool-args");
    var result = el("pre", "tool-result");
    var error = el("p", "tool-error");
    error.hidden = true;
    var argsLabel = el("span", "label", "arguments");
    var resultLabel = el("span", "label", "result");
    resultLabel.hidden = true;
    li.append(head, argsLabel, args, resultLabel, result, error);
    card = { li: li, name: nameEl, status: statusEl, ms: msEl, args: args, result: result,
      resultLabel: resultLabel, error: error };
    if (callId) current.calls[callId] = card;
    return card;
  }

  function fillCall(card, call) {
    if (call.name) card.name.textContent = call.name;
    if (call.arguments !== undefined) card.args.textContent = json(call.arguments);
    if (call.status) {
      card.status.textContent = call.status;
      card.li.setAttribute("data-status", call.status);
    }
    if (call.ms !== undefined && call.ms !== null) {
      card.ms.textContent = Math.round(Number(call.ms) * 10) / 10 + " ms";
    }
    if (call.result !== undefined && call.result !== null) {
      card.resultLabel.hidden = false;
      card.result.textContent = json(call.result);
    }
    if (call.error) {
      card.error.hidden = false;
      card.error.textContent = String(call.error);
    }
  }

  function onHistory(frame) {
    if (!current || frame.conversation_id !== current.id) return;
    var reopening = current.reopening;
    current.reopening = false;
    current.byMessage = {};
    current.drafts = {};
    current.calls = {};
    ui.transcript.textContent = "";
    if (frame.owner) current.owner = frame.owner;
    if ("operator_id" in frame) current.operator_id = frame.operator_id;
    renderOwner();
    var calls = (frame.tool_calls || []).slice();
    (frame.messages || []).forEach(function (m) {
      if (m.role === "assistant" && m.turn_id) {
        calls = calls.filter(function (call) {
          if (call.turn_id !== m.turn_id) return true;
          historyCall(call);
          return false;
        });
      }
      addMessage(m);
    });
    calls.forEach(historyCall);
    if (!reopening || !connection.lastSeq(current.id)) {
      connection.setLastSeq(current.id, frame.last_seq || 0);
    }
    scrollDown();
  }

  function historyCall(call) {
    var callId = call.call_id || call.id;
    var card = toolCard(String(callId), call.name, call.turn_id);
    fillCall(card, call);
    append(card.li);
  }

  function draftItem(turnId) {
    var d = current.drafts[turnId];
    if (!d) {
      var li = item("draft", "Assistant (drafting)");
      li.setAttribute("data-turn", turnId);
      var text = el("div", "text");
      li.appendChild(text);
      d = { li: li, text: text, who: li.firstChild };
      current.drafts[turnId] = d;
    }
    return d;
  }

  function onConversationEvent(frame) {
    switch (frame.type) {
      case "user_message":
        addMessage({ id: frame.message_id, role: "user", text: frame.text });
        break;
      case "draft": {
        var d = draftItem(frame.turn_id);
        C.renderDraft(d.text, frame.text, frame.revised_spans);
        var left = C.maskedCount(frame.text);
        d.who.textContent = "Assistant (drafting: step " + frame.step + ", round " +
          (frame.round || 0) + ", " + left + " masked)";
        if (!d.li.parentNode) append(d.li);
        else scrollDown();
        break;
      }
      case "tool_call": {
        var old = current.drafts[frame.turn_id];
        if (old && old.li.parentNode) old.li.remove();
        delete current.drafts[frame.turn_id];
        var card = toolCard(frame.call_id, frame.name, frame.turn_id);
        fillCall(card, { name: frame.name, arguments: frame.arguments });
        if (!card.li.parentNode) append(card.li);
        break;
      }
      case "tool_result": {
        var card2 = toolCard(frame.call_id, frame.name, frame.turn_id);
        fillCall(card2, frame);
        if (!card2.li.parentNode) append(card2.li);
        break;
      }
      case "final": {
        var draft = current.drafts[frame.turn_id];
        if (draft && draft.li.parentNode) draft.li.remove();
        delete current.drafts[frame.turn_id];
        addMessage({ id: frame.message_id, role: "assistant", text: frame.text,
          status: frame.status, usage: frame.usage });
        break;
      }
      case "operator_message":
        ackOperatorMessage(frame);
        addMessage({ id: frame.message_id, role: "operator", text: frame.text,
          operator_name: frame.operator_name });
        break;
      case "handoff": {
        current.owner = frame.owner;
        current.operator_id = frame.operator_id === undefined ? null : frame.operator_id;
        var who = frame.owner === "human"
          ? (isMe(frame.operator_id) ? "You took this conversation over."
            : "An operator took this conversation over.")
          : frame.owner === "bot" ? "Handed back to the bot." : "Conversation closed.";
        var li = item("event", null);
        li.appendChild(el("div", "text", who));
        append(li);
        if (conversations[current.id]) {
          conversations[current.id].owner = frame.owner;
          conversations[current.id].operator_id = current.operator_id;
          renderList();
        }
        renderOwner();
        if (ownedByMe()) ui.reply.focus();
        break;
      }
      case "exercise": {
        var ex = item("exercise", "Exercise (" + (frame.kind || "") + ")");
        ex.appendChild(el("div", "text", frame.prompt));
        append(ex);
        break;
      }
      default:
        break;
    }
  }

  /**
   * The echo acknowledges the message it repeats: by its client_id (the client does that on
   * its own; repeated here so the rule is in one place), or, for an echo from a gateway
   * older than that field, by operator and text.
   */
  function ackOperatorMessage(frame) {
    if (frame.client_id) {
      connection.acknowledge(frame.client_id);
      return;
    }
    if (!isMe(frame.operator_id)) return;
    var match = connection.pending.find(function (f) {
      return f.type === "operator_message" && f.conversation_id === frame.conversation_id &&
        f.text === frame.text;
    });
    if (match) connection.acknowledge(match.id);
  }

  var saved = sessionKey();
  if (saved) signIn(saved);
  else showLogin("");
})();
