/* swreg 忘記密碼 in the browser (no build step; after wizard.js, agent.js and hipki.js).
 *
 * A card registered to the account (its primary card or a 附卡) proves the reset: it signs a
 * challenge through whichever bridge answers (hipki.js: swreg.Bridge, the swreg card agent
 * first, then CHT's HiPKI component):
 *   1. POST /api/password-reset/challenge                → {challenge_id, payload}
 *   2. the agent's "sign", or HiPKI's MakeSignature      → certificate, signature, chain
 *   3. POST /api/password-reset {challenge_id, certificate, signature, chain, account,
 *      password, password_confirm}                        → {account, sessions_ended, ...}
 * The PIN goes to the card component only; it is never sent to the server. The new password
 * goes to the portal only, and both password fields are cleared whatever the answer.
 */
(function () {
  "use strict";

  var PIN_CODES = ["pin_incorrect", "card_locked", "no_card", "no_reader"];
  var ACCOUNT_CODES = [
    "not_authorized", "account_inactive", "account_suspended", "rate_limited"
  ];
  var FIELDS = ["account", "password", "password_confirm"];
  var swreg = window.swreg;
  var form = document.getElementById("reset-form");
  if (!form || !swreg || !swreg.Bridge) {
    return;
  }

  var say = swreg.say;
  var reader = document.getElementById("reader");
  var pin = document.getElementById("pin");
  var status = document.getElementById("card-status");
  var errorPin = document.getElementById("error-pin");
  var errorCard = document.getElementById("error-card");
  var done = document.getElementById("reset-done");
  var missing = document.getElementById("agent-missing");
  var detect = document.getElementById("detect-readers");
  var trustButton = document.getElementById("hipki-trust");
  var trigger = document.getElementById("reset");
  var busy = false;

  function input(name) {
    return document.getElementById("f-" + name);
  }

  function setStatus(key, values) {
    status.textContent = key ? say(key, values) : "";
  }

  function clearErrors() {
    swreg.show(errorPin, "");
    swreg.show(errorCard, "");
    FIELDS.forEach(function (name) {
      swreg.show(document.getElementById("error-" + name), "");
      input(name).removeAttribute("aria-invalid");
    });
  }

  function showFieldError(name, message) {
    swreg.show(document.getElementById("error-" + name), message);
    input(name).setAttribute("aria-invalid", "true");
  }

  function showError(error) {
    var code = (error && error.code) || "card_error";
    var message = (error && error.message) || say(code);
    if (error && FIELDS.indexOf(error.field) >= 0) {
      showFieldError(error.field, message);
    } else if (ACCOUNT_CODES.indexOf(code) >= 0) {
      showFieldError("account", message);
    } else {
      swreg.show(PIN_CODES.indexOf(code) >= 0 ? errorPin : errorCard, message);
    }
    if (code === "hipki_untrusted") {
      trustButton.hidden = false;
    }
  }

  var bridge = new swreg.Bridge({
    agentUrl: document.body.getAttribute("data-agent-url"),
    hipkiUrl: document.body.getAttribute("data-hipki-url"),
    select: reader,
    missing: missing,
    detectButton: detect,
    trustButton: trustButton,
    setStatus: setStatus,
    showError: showError,
    clearErrors: clearErrors
  });

  function finished() {
    busy = false;
    trigger.disabled = false;
    pin.value = "";
    input("password").value = "";
    input("password_confirm").value = "";
  }

  function run() {
    if (busy) {
      return;
    }
    clearErrors();
    swreg.show(done, "");
    var empty = FIELDS.filter(function (name) {
      return !input(name).value;
    });
    empty.forEach(function (name) {
      showFieldError(name, say("field_required"));
    });
    var pinValue = pin.value;
    if (!pinValue) {
      swreg.show(errorPin, say("field_required"));
    }
    if (empty.length || !pinValue) {
      (empty.length ? input(empty[0]) : pin).focus();
      return;
    }
    var popup = bridge.begin();
    if (popup === false) {
      return;
    }
    busy = true;
    trigger.disabled = true;
    setStatus("status_signing");
    bridge
      .signChallenge("/api/password-reset/challenge", pinValue, popup)
      .then(function (request) {
        setStatus("status_checking");
        FIELDS.forEach(function (name) {
          request[name] = input(name).value;
        });
        return swreg.api("POST", "/api/password-reset", request);
      })
      .then(
        function (result) {
          finished();
          setStatus("");
          swreg.show(done, say("reset_done") + " (" + result.account + ")");
        },
        function (error) {
          finished();
          setStatus("");
          showError(error);
          if (!document.activeElement || document.activeElement === document.body) {
            /* the busy button let the focus go: to the refused field, else the PIN */
            (form.querySelector('[aria-invalid="true"]') || pin).focus();
          }
        }
      );
    pinValue = null;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    run();
  });
  bridge.detect();
})();
