/* swreg card check and card login in the browser (no build step; after agent.js and hipki.js).
 *
 * The card is read through whichever bridge answers (hipki.js: swreg.Bridge, the swreg card
 * agent first, then CHT's HiPKI component; #agent-missing when neither does).
 * The flow: POST the challenge request → the component verifies the PIN and signs the payload
 * → POST certificate, chain and signature → reload (registration) or go to /account (login)
 * or /officer (the officer console's login, data-mode="officer").
 * The PIN goes to the component only; it is never sent to the server.
 */
(function () {
  "use strict";

  var PIN_CODES = ["pin_incorrect", "card_locked", "no_card", "no_reader", "field_required"];
  var swreg = window.swreg;
  var form = document.getElementById("card-form");
  if (!form || !swreg || !swreg.Bridge) {
    return;
  }

  var body = document.body;
  var mode = form.getAttribute("data-mode");
  var registrationId = body.getAttribute("data-registration-id");
  var reader = document.getElementById("reader");
  var pin = document.getElementById("pin");
  var status = document.getElementById("card-status");
  var errorPin = document.getElementById("error-pin");
  var errorCard = document.getElementById("error-card");
  var missing = document.getElementById("agent-missing");
  var detect = document.getElementById("detect-readers");
  var trustButton = document.getElementById("hipki-trust");
  var loginMode = mode === "login" || mode === "officer";
  var trigger = document.getElementById(loginMode ? "login" : "next");
  var busy = false;
  var clicked = null;

  var say = swreg.say;

  function setStatus(key, values) {
    status.textContent = key ? say(key, values) : "";
  }

  function clearErrors() {
    swreg.show(errorPin, "");
    swreg.show(errorCard, "");
  }

  function showError(error) {
    var code = (error && error.code) || "card_error";
    var target = PIN_CODES.indexOf(code) >= 0 ? errorPin : errorCard;
    swreg.show(target, (error && error.message) || say(code));
    if (code === "hipki_untrusted") {
      trustButton.hidden = false;
    }
    if (code === "already_registered") {
      setTimeout(function () {
        window.location.assign("/");
      }, 3000);
    }
  }

  /* Which component answers: hipki.js's swreg.Bridge. */
  var bridge = new swreg.Bridge({
    agentUrl: body.getAttribute("data-agent-url"),
    hipkiUrl: body.getAttribute("data-hipki-url"),
    select: reader,
    missing: missing,
    detectButton: detect,
    trustButton: trustButton,
    setStatus: setStatus,
    showError: showError,
    clearErrors: clearErrors
  });

  /* -- the check ------------------------------------------------------------------------ */

  function urls() {
    if (mode === "login") {
      return { challenge: "/api/login/challenge", submit: "/api/login" };
    }
    if (mode === "officer") {
      return { challenge: "/api/console/login/challenge", submit: "/api/console/login" };
    }
    var base = "/api/registrations/" + encodeURIComponent(registrationId);
    return { challenge: base + "/challenge", submit: base + "/card" };
  }

  function finished(ok) {
    busy = false;
    trigger.disabled = false;
    pin.value = "";
    if (!ok) {
      setStatus("");
    }
  }

  function run() {
    if (busy) {
      return;
    }
    clearErrors();
    var pinValue = pin.value;
    if (!pinValue) {
      showError({ code: "field_required", message: say("field_required") });
      pin.focus();
      return;
    }
    var popup = bridge.begin();
    if (popup === false) {
      return;
    }
    busy = true;
    trigger.disabled = true;
    setStatus("status_signing");
    var target = urls();
    bridge
      .signChallenge(target.challenge, pinValue, popup)
      .then(function (signed) {
        setStatus("status_checking");
        return swreg.api("POST", target.submit, {
          challenge_id: signed.challenge_id,
          certificate: signed.certificate,
          signature: signed.signature,
          chain: signed.chain
        });
      })
      .then(
        function () {
          finished(true);
          if (loginMode) {
            window.location.assign(mode === "officer" ? "/officer" : "/account");
            return;
          }
          setStatus("status_done");
          setTimeout(function () {
            window.location.reload();
          }, 600);
        },
        function (error) {
          finished(false);
          showError(error);
          if (!document.activeElement || document.activeElement === document.body) {
            pin.focus(); /* the busy button let the focus go: back to the PIN, by its error */
          }
        }
      );
    pinValue = null;
  }

  form.querySelectorAll("button[type=submit]").forEach(function (button) {
    button.addEventListener("click", function () {
      clicked = button;
    });
  });
  form.addEventListener("submit", function (event) {
    var submitter = event.submitter || clicked;
    clicked = null;
    if (submitter && (submitter.id === "back" || submitter.id === "cancel")) {
      return; /* 上一步 and 取消 are plain form posts */
    }
    event.preventDefault();
    run();
  });
  bridge.detect();
})();
