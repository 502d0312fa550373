/*
 * The tutor page: an exercise, an answer box, instant feedback. The verdict shown is the
 * checking tool's (tool_result of check_answer: result.correct), never the model's wording.
 * Protocol v1 through dlm-client.js; every network text is rendered with textContent.
 */
(function () {
  "use strict";
  var C = window.DlmClient;
  var $ = function (id) { return document.getElementById(id); };

  function meta(name, fallback) {
    var node = document.querySelector('meta[name="' + name + '"]');
    var value = node ? node.getAttribute("content") : "";
    return value && value.indexOf("{{") === -1 ? value : fallback;
  }

  var key = meta("dlm-key", "");
  var wsPath = meta("dlm-ws-path", "/ws");
  var storage = C.store(window.localStorage, "dlm-tutor:" + key);
  var saved = storage.load();
  var ui = {
    conn: $("conn"),
    exercise: $("exercise"),
    kind: $("kind"),
    form: $("answer-form"),
    answer: $("answer"),
    check: $("check"),
    next: $("next"),
    verdict: $("verdict"),
    feedback: $("feedback"),
    notice: $("notice"),
    attempts: $("attempts"),
  };
  var attemptsByClient = {};
  var attemptsByTurn = {};
  var checked = {}; // turn_id -> true once a check_answer result arrived
  var currentTurn = null;
  var waitingExercise = false;

  function save() {
    storage.save(saved);
  }

  var lastSeq = {};
  if (saved.conversation_id) lastSeq[saved.conversation_id] = saved.last_seq || 0;

  var connection = new C.Connection({
    url: C.wsUrlFor(location.href, wsPath),
    pending: saved.pending || [],
    lastSeq: lastSeq,
    hello: function () {
      var hello = { type: "hello", v: 1, key: key, channel: "tutor" };
      if (saved.conversation_id && saved.conversation_token) {
        hello.conversation_id = saved.conversation_id;
        hello.conversation_token = saved.conversation_token;
        hello.resume_from = connection.lastSeq(saved.conversation_id);
      }
      return hello;
    },
    onReady: onReady,
    onEvent: onEvent,
    onError: onError,
    onStatus: function (state) {
      var labels = { connecting: "connecting\u2026", ready: "online", waiting: "reconnecting\u2026",
        failed: "offline" };
      ui.conn.textContent = labels[state] || state;
    },
    onConversationLost: function () {
      if (saved.conversation_id) connection.forget(saved.conversation_id);
      saved = { pending: saved.pending || [] };
      save();
    },
    onRejected: function (clientId) {
      var a = attemptsByClient[clientId];
      if (a) a.status.textContent = "not sent";
      setBusy(false);
    },
    onPendingChange: function (list) {
      saved.pending = list;
      save();
    },
    onSeq: function (conversationId, seq) {
      if (conversationId === saved.conversation_id) {
        saved.last_seq = seq;
        save();
      }
    },
  });
  window.DlmTutor = {
    connection: connection,
    conversationId: function () { return saved.conversation_id || null; },
  };

  function setBusy(busy) {
    ui.check.disabled = busy || !saved.exercise;
    ui.form.setAttribute("aria-busy", String(busy));
  }

  function showExercise(exercise) {
    if (!exercise) {
      ui.exercise.textContent = "Loading an exercise\u2026";
      ui.answer.disabled = true;
      ui.check.disabled = true;
      return;
    }
    ui.exercise.textContent = exercise.prompt;
    ui.exercise.setAttribute("data-exercise-id", String(exercise.exercise_id || ""));
    ui.exercise.setAttribute("data-kind", String(exercise.kind || ""));
    ui.answer.disabled = false;
    ui.check.disabled = false;
  }

  function setVerdict(kind, text) {
    ui.verdict.setAttribute("data-verdict", kind);
    ui.verdict.className = "verdict " + kind;
    ui.verdict.textContent = text;
  }

  function notice(text) {
    ui.notice.hidden = !text;
    ui.notice.textContent = text || "";
  }

  function requestExercise() {
    waitingExercise = true;
    ui.next.disabled = true;
    var frame = { type: "next_exercise" };
    if (ui.kind.value) frame.kind = ui.kind.value;
    connection.send(frame);
  }

  function addAttempt(clientId, answer) {
    var li = C.el("li");
    var text = C.el("span", "answer-text", answer);
    var status = C.el("span", "status", "checking\u2026");
    li.append(text, document.createTextNode(" "), status);
    ui.attempts.prepend(li);
    var attempt = { li: li, status: status, answer: answer };
    attemptsByClient[clientId] = attempt;
    return attempt;
  }

  function onReady(frame) {
    if (frame.conversation_id !== saved.conversation_id) {
      saved.conversation_id = frame.conversation_id;
      saved.conversation_token = frame.conversation_token;
      saved.last_seq = frame.last_seq || 0;
      saved.exercise = null;
      connection.setLastSeq(frame.conversation_id, frame.last_seq || 0);
      save();
    }
    showExercise(saved.exercise);
    if (!saved.exercise && !waitingExercise) requestExercise();
  }

  function onEvent(frame) {
    switch (frame.type) {
      case "exercise":
        waitingExercise = false;
        ui.next.disabled = false;
        saved.exercise = { exercise_id: frame.exercise_id, kind: frame.kind, prompt: frame.prompt };
        save();
        showExercise(saved.exercise);
        setVerdict("", "");
        ui.feedback.textContent = "";
        ui.feedback.className = "feedback";
        ui.answer.value = "";
        ui.answer.focus();
        if (currentTurn === null) setBusy(false);
        break;
      case "user_message": {
        var a = attemptsByClient[frame.client_id];
        if (a && frame.turn_id) {
          attemptsByTurn[frame.turn_id] = a;
          a.li.setAttribute("data-turn", frame.turn_id);
        }
        if (frame.turn_id) currentTurn = frame.turn_id;
        // A typed "next one": no reply comes, an exercise event follows (docs/protocol.md).
        else if (a) a.status.textContent = "new exercise";
        break;
      }
      case "draft":
        if (frame.turn_id !== currentTurn && currentTurn !== null) break;
        ui.feedback.className = "feedback draft";
        ui.feedback.setAttribute("aria-busy", "true");
        C.renderDraft(ui.feedback, frame.text, frame.revised_spans);
        break;
      case "tool_call":
        // The round that called the tool is not feedback: clear its draft.
        ui.feedback.textContent = "";
        break;
      case "tool_result":
        if (frame.name === "check_answer") onCheck(frame);
        break;
      case "final":
        onFinal(frame);
        break;
      default:
        break;
    }
  }

  function onCheck(frame) {
    var result = frame.result || {};
    checked[frame.turn_id] = true;
    var a = attemptsByTurn[frame.turn_id];
    if (frame.status !== "ok" || typeof result.correct !== "boolean") {
      setVerdict("unknown", "The answer could not be checked.");
      if (a) a.status.textContent = "not checked";
      return;
    }
    if (result.correct) {
      setVerdict("correct", "\u2713 Correct");
      if (a) {
        a.status.textContent = "\u2713 correct";
        a.li.className = "correct";
      }
    } else {
      setVerdict("wrong", "\u2717 Not correct");
      if (a) {
        a.status.textContent = "\u2717 not correct";
        a.li.className = "wrong";
      }
    }
  }

  function onFinal(frame) {
    ui.feedback.removeAttribute("aria-busy");
    ui.feedback.className = "feedback final " + (frame.status || "");
    if (frame.status === "complete") ui.feedback.textContent = frame.text;
    else if (frame.status === "cancelled") ui.feedback.textContent = frame.text || "Stopped.";
    else ui.feedback.textContent = frame.text || "Sorry, no feedback this time. Try again.";
    if (!checked[frame.turn_id] && frame.turn_id === currentTurn) {
      setVerdict("unchecked", "The assistant did not check this answer with the tool.");
      var a = attemptsByTurn[frame.turn_id];
      if (a) a.status.textContent = "not checked";
    }
    if (frame.turn_id === currentTurn) currentTurn = null;
    setBusy(false);
  }

  var ERRORS = {
    busy: "The tutor is busy; your answer will be sent again shortly.",
    rate_limited: "Slow down a little; your answer will be sent again shortly.",
    turn_failed: "Sorry, no feedback could be generated. Try again.",
  };

  function onError(frame) {
    if (frame.code === "turn_failed") setBusy(false);
    if (frame.code === "auth_failed") {
      notice("The tutor is not available right now.");
      return;
    }
    notice(ERRORS[frame.code] || frame.message || "Something went wrong.");
    if (waitingExercise && frame.code !== "busy" && frame.code !== "rate_limited") {
      waitingExercise = false;
      ui.next.disabled = false;
    }
  }

  ui.form.addEventListener("submit", function (event) {
    event.preventDefault();
    var answer = ui.answer.value.trim();
    if (!answer || !saved.exercise) return;
    notice("");
    var id = C.newId("a");
    addAttempt(id, answer);
    setVerdict("pending", "Checking\u2026");
    ui.feedback.textContent = "";
    ui.feedback.className = "feedback";
    setBusy(true);
    connection.sendTracked({ type: "user_message", id: id, text: answer });
  });
  ui.next.addEventListener("click", requestExercise);

  // /tutor?kind=fractions starts on that topic.
  var wanted = new URLSearchParams(location.search).get("kind");
  if (wanted && Array.prototype.some.call(ui.kind.options, function (o) { return o.value === wanted; })) {
    ui.kind.value = wanted;
  }

  showExercise(saved.exercise);
  connection.start();
})();
