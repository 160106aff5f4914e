/* swreg 行動自然人憑證 (the mobile citizen certificate, TW FidO) in the browser (no build step;
 * after wizard.js and agent.js; DESIGN.md §13).
 *
 * On the card step of 個人 types, on 憑證登入 and on 忘記密碼, when the portal offers it,
 * #bridge-choice picks the card (card.js / password.js, which this file leaves alone) or the
 * mobile ID (this file: #mobile-id). Elements marked data-bridge="card" or "mobile" show for
 * their choice only. With the mobile ID:
 *   1. POST <base> {national_id, push[, account]}        → {pending_id, qr, app_link,
 *      expires_at, poll_after}: the QR code (a data: URI the portal drew), the app-to-app link
 *      (for the phone itself), a countdown to expires_at
 *   2. POST <base>/poll {pending_id} (忘記密碼: also account, password, password_confirm) every
 *      poll_after seconds → {status: "pending"} until {status: "done", registration|login|reset}
 *   3. done: registration → reload (the next step); login → /account; 忘記密碼 → #reset-done.
 * <base> is /api/registrations/<id>/mobile-id, /api/login/mobile-id or
 * /api/password-reset/mobile-id. The pending id goes in bodies only, never in a URL (for a login
 * it is a bearer secret). The page asks the portal only, never MOI; the portal asks MOI
 * no more often than every 4 s. An error of a poll is final (the portal has dropped the pending
 * ticket): #mobile-status or the field says why, and 重新產生 starts again — except 忘記密碼's
 * new password, which the portal checks on every poll before it asks MOI (a bad one spends
 * nothing): its error shows at the field while the page keeps polling with what is typed.
 * Polling goes on while the page is hidden: the phone is another device. The form's own submit
 * (下一步, 登入, 重設密碼, Enter) starts the mobile ID while it is chosen; 上一步 and 取消 stay
 * plain form posts.
 */
(function () {
  "use strict";

  var RESET_FIELDS = ["account", "password", "password_confirm"];
  var PASSWORD_FIELDS = ["password", "password_confirm"];
  var GRACE_MS = 10000; /* past the deadline, a poll stuck on the password stops */
  var ACCOUNT_CODES = ["not_authorized", "account_inactive", "account_suspended"];
  var ID_CODES = ["invalid_national_id", "identity_mismatch"];
  var FINAL_STATES = {
    mobile_id_rejected: "rejected",
    mobile_id_timeout: "timeout",
    mobile_id_unavailable: "unavailable"
  };
  var TRANSIENT_CODES = ["network_error", "rate_limited"]; /* a poll retries these */
  var TRANSIENT_TRIES = 3;
  var DEFAULT_POLL_SECONDS = 4;

  var swreg = window.swreg;
  var choice = document.getElementById("bridge-choice");
  var part = document.getElementById("mobile-id");
  var form = document.getElementById("card-form") || document.getElementById("reset-form");
  if (!swreg || !swreg.say || !choice || !part || !form) {
    return;
  }

  var say = swreg.say;
  var mode = form.id === "reset-form" ? "reset" : form.getAttribute("data-mode");
  var registrationId = document.body.getAttribute("data-registration-id");
  var useMobile = document.getElementById("bridge-mobile");
  var nationalId = document.getElementById("mobile-national-id");
  var errorId = document.getElementById("error-mobile-national-id");
  var push = document.getElementById("mobile-push");
  var start = document.getElementById("mobile-start");
  var restart = document.getElementById("mobile-restart");
  var waiting = document.getElementById("mobile-waiting");
  var qr = document.getElementById("mobile-qr");
  var appLink = document.getElementById("mobile-app-link");
  var countdown = document.getElementById("mobile-countdown");
  var status = document.getElementById("mobile-status");
  var done = document.getElementById("reset-done");
  var trigger = document.getElementById(
    mode === "reset" ? "reset" : mode === "login" ? "login" : "next"
  );

  var attempt = 0; /* each start is a new attempt; answers to an older one are dropped */
  var busy = false;
  var pollTimer = null;
  var clockTimer = null;
  var deadline = NaN;
  var account = ""; /* 忘記密碼: the account the attempt began for */

  function base() {
    if (mode === "reset") {
      return "/api/password-reset/mobile-id";
    }
    if (mode === "login") {
      return "/api/login/mobile-id";
    }
    return "/api/registrations/" + encodeURIComponent(registrationId) + "/mobile-id";
  }

  function input(name) {
    return document.getElementById("f-" + name);
  }

  /* -- what the page shows -------------------------------------------------------------------- */

  function setStatus(state, text) {
    status.textContent = text || "";
    if (state) {
      status.setAttribute("data-state", state);
    } else {
      status.removeAttribute("data-state");
    }
  }

  function showIdError(message) {
    swreg.show(errorId, message);
    nationalId.setAttribute("aria-invalid", "true");
  }

  function showFieldError(name, message) {
    swreg.show(document.getElementById("error-" + name), message);
    input(name).setAttribute("aria-invalid", "true");
  }

  function clearPasswordErrors() {
    PASSWORD_FIELDS.forEach(function (name) {
      swreg.show(document.getElementById("error-" + name), "");
      input(name).removeAttribute("aria-invalid");
    });
  }

  function clearErrors() {
    swreg.show(errorId, "");
    nationalId.removeAttribute("aria-invalid");
    if (mode === "reset") {
      RESET_FIELDS.forEach(function (name) {
        swreg.show(document.getElementById("error-" + name), "");
        input(name).removeAttribute("aria-invalid");
      });
    }
  }

  function setBusy(on) {
    busy = on;
    start.disabled = on;
    restart.disabled = on;
    if (push) {
      push.disabled = on;
    }
    nationalId.readOnly = on;
    if (trigger) {
      trigger.disabled = on;
    }
    if (on) {
      keepFocus(status); /* the button pressed is disabled now: the progress is told here */
    }
  }

  /* A keyboard user keeps a place: when the focus was on a control now disabled or hidden (or
   * on the status that stood in for it), it goes to ``target``. */
  function keepFocus(target) {
    var active = document.activeElement;
    if (!active || active === document.body || active === status || active.disabled ||
        active.hidden) {
      target.focus();
    }
  }

  function twoDigits(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function tick() {
    if (isNaN(deadline)) {
      countdown.textContent = "";
      return;
    }
    var left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    var time = Math.floor(left / 60) + ":" + twoDigits(left % 60);
    countdown.textContent = say("mobile_time_left", { time: time });
  }

  function stopTimers() {
    if (pollTimer !== null) {
      clearTimeout(pollTimer);
      pollTimer = null;
    }
    if (clockTimer !== null) {
      clearInterval(clockTimer);
      clockTimer = null;
    }
  }

  function hideWaiting() {
    stopTimers();
    waiting.hidden = true;
    qr.hidden = true;
    qr.removeAttribute("src");
    appLink.hidden = true;
    appLink.setAttribute("href", "#");
    countdown.textContent = "";
    deadline = NaN;
  }

  /* The begin answer: the QR code and the app link (none for a push), the countdown. */
  function showWaiting(answer) {
    var code = typeof answer.qr === "string" && /^data:image\//.test(answer.qr);
    var link = typeof answer.app_link === "string" && /^mobilemoica:\/\//i.test(answer.app_link);
    if (code) {
      qr.src = answer.qr;
    }
    qr.hidden = !code;
    if (link) {
      appLink.setAttribute("href", answer.app_link);
    }
    appLink.hidden = !link;
    deadline = Date.parse(answer.expires_at);
    tick();
    clockTimer = setInterval(tick, 1000);
    waiting.hidden = false;
    setStatus("waiting", say(code ? "mobile_waiting" : "mobile_waiting_push"));
  }

  /* The password fields of 忘記密碼 are typed again for each attempt (as password.js does). */
  function clearPasswords() {
    if (mode === "reset") {
      input("password").value = "";
      input("password_confirm").value = "";
    }
  }

  /* -- the attempt ---------------------------------------------------------------------------- */

  function begin() {
    if (busy) {
      return;
    }
    clearErrors();
    swreg.show(done, "");
    var id = nationalId.value.trim().toUpperCase();
    nationalId.value = id;
    var empty = [];
    if (mode === "reset") {
      RESET_FIELDS.forEach(function (name) {
        if (!input(name).value) {
          showFieldError(name, say("field_required"));
          empty.push(input(name));
        }
      });
    }
    if (!id) {
      showIdError(say("field_required"));
      empty.push(nationalId);
    }
    if (empty.length) {
      setStatus(null, "");
      empty[0].focus();
      return;
    }
    var request = { national_id: id, push: Boolean(push && push.checked) };
    if (mode === "reset") {
      account = input("account").value;
      request.account = account;
    }
    var mine = ++attempt;
    hideWaiting();
    setBusy(true);
    restart.hidden = true;
    start.hidden = false;
    setStatus("starting", say("mobile_starting"));
    swreg.api("POST", base(), request).then(
      function (answer) {
        if (mine !== attempt) {
          return;
        }
        showWaiting(answer);
        schedule(mine, answer.pending_id, answer.poll_after, 0);
      },
      function (error) {
        if (mine === attempt) {
          fail(error, false);
        }
      }
    );
  }

  function schedule(mine, pendingId, seconds, failures) {
    var wait = Math.max(1, Number(seconds) || DEFAULT_POLL_SECONDS) * 1000;
    pollTimer = setTimeout(function () {
      pollTimer = null;
      poll(mine, pendingId, failures);
    }, wait);
  }

  function poll(mine, pendingId, failures) {
    if (mine !== attempt) {
      return;
    }
    var request = { pending_id: pendingId };
    if (mode === "reset") {
      request.account = account;
      request.password = input("password").value;
      request.password_confirm = input("password_confirm").value;
    }
    swreg.api("POST", base() + "/poll", request).then(
      function (answer) {
        if (mine !== attempt) {
          return;
        }
        if (mode === "reset") {
          clearPasswordErrors();
        }
        if (answer.status === "done") {
          finish(answer);
          return;
        }
        schedule(mine, pendingId, answer.poll_after, 0);
      },
      function (error) {
        if (mine !== attempt) {
          return;
        }
        if (mode === "reset" && PASSWORD_FIELDS.indexOf(error.field) >= 0) {
          if (!(Date.now() > deadline + GRACE_MS)) {
            clearPasswordErrors();
            showFieldError(error.field, error.message || say(error.code));
            schedule(mine, pendingId, DEFAULT_POLL_SECONDS, 0);
            return;
          }
          error = { code: "mobile_id_timeout", message: say("mobile_id_timeout") };
        }
        if (TRANSIENT_CODES.indexOf(error.code) >= 0 && failures + 1 < TRANSIENT_TRIES) {
          schedule(mine, pendingId, DEFAULT_POLL_SECONDS, failures + 1);
          return;
        }
        fail(error, true);
      }
    );
  }

  function finish(answer) {
    hideWaiting();
    clearPasswords();
    if (mode === "login") {
      setStatus("done", say("mobile_approved"));
      window.location.assign("/account");
      return;
    }
    if (mode === "reset") {
      setBusy(false);
      setStatus("done", say("mobile_approved"));
      var name = (answer.reset && answer.reset.account) || account;
      swreg.show(done, say("reset_done") + " (" + name + ")");
      return;
    }
    setStatus("done", say("status_done"));
    setTimeout(function () {
      window.location.reload();
    }, 600);
  }

  /* An error: at the field it is about, else in #mobile-status. After a poll (the pending ticket
   * is gone) 重新產生 replaces 開始驗證. */
  function fail(error, final) {
    hideWaiting();
    setBusy(false);
    clearPasswords();
    var code = (error && error.code) || "mobile_id_unavailable";
    var message = (error && error.message) || say(code);
    setStatus(null, "");
    if ((error && error.field === "national_id") || ID_CODES.indexOf(code) >= 0) {
      showIdError(message);
      nationalId.focus();
    } else if (mode === "reset" && error && RESET_FIELDS.indexOf(error.field) >= 0) {
      showFieldError(error.field, message);
    } else if (mode === "reset" && ACCOUNT_CODES.indexOf(code) >= 0) {
      showFieldError("account", message);
    } else {
      setStatus(FINAL_STATES[code] || "failed", message);
    }
    start.hidden = final;
    restart.hidden = !final;
    keepFocus(final ? restart : start);
    if (code === "already_registered" && mode === "register") {
      setTimeout(function () {
        window.location.assign("/");
      }, 3000);
    }
  }

  /* Back to the card (or to nothing): drop the attempt, its timers and what it showed. */
  function abandon() {
    attempt++;
    hideWaiting();
    setBusy(false);
    setStatus(null, "");
    start.hidden = false;
    restart.hidden = true;
  }

  /* -- the choice ----------------------------------------------------------------------------- */

  function applyChoice() {
    var chosen = useMobile.checked ? "mobile" : "card";
    document.querySelectorAll("[data-bridge]").forEach(function (node) {
      node.hidden = node.getAttribute("data-bridge") !== chosen;
    });
    document.body.classList.toggle("bridge-mobile", chosen === "mobile");
    if (chosen === "card") {
      abandon();
    }
  }

  choice.querySelectorAll('input[name="bridge"]').forEach(function (radio) {
    radio.addEventListener("change", applyChoice);
  });
  nationalId.addEventListener("input", function () {
    var upper = nationalId.value.toUpperCase();
    if (upper !== nationalId.value) {
      var from = nationalId.selectionStart;
      var to = nationalId.selectionEnd;
      nationalId.value = upper;
      nationalId.setSelectionRange(from, to);
    }
  });
  start.addEventListener("click", begin);
  restart.addEventListener("click", begin);

  /* Before card.js / password.js see it (capture, on the document): while the mobile ID is
   * chosen, the form's submit starts it instead of the card. */
  document.addEventListener(
    "submit",
    function (event) {
      if (event.target !== form || !useMobile.checked) {
        return;
      }
      var submitter = event.submitter;
      if (submitter && (submitter.id === "back" || submitter.id === "cancel")) {
        return; /* 上一步 and 取消 are plain form posts */
      }
      event.preventDefault();
      event.stopPropagation();
      begin();
    },
    true
  );

  choice.hidden = false;
  applyChoice();
})();
