/* swreg 憑證更換作業 in the browser (no build step; after wizard.js, agent.js and hipki.js).
 *
 * The new card is read through whichever bridge answers (hipki.js: swreg.Bridge, the swreg card
 * agent first, then CHT's HiPKI component), which signs a challenge with the new card's PIN:
 *   1. POST /api/renewal/challenge                     → {challenge_id, payload}
 *   2. the agent's "sign", or HiPKI's MakeSignature     → certificate, signature, chain
 *   3. POST /api/renewal {challenge_id, certificate, signature, chain[, account, password]}
 * The old account is the card login (the swreg_session cookie goes along by itself) or, when
 * the page shows #f-account and #f-password (no login: the old card has expired), those two.
 * The PIN goes to the card component only; it is never sent to the server.
 */
(function () {
  "use strict";

  var PIN_CODES = ["pin_incorrect", "card_locked", "no_card", "no_reader", "field_required"];
  var ACCOUNT_CODES = ["not_authorized", "not_registered", "account_inactive"];
  var swreg = window.swreg;
  var form = document.getElementById("renewal-form");
  if (!form || !swreg || !swreg.Bridge) {
    return;
  }

  var say = swreg.say;
  var failure = swreg.failure;
  var reader = document.getElementById("reader");
  var pin = document.getElementById("pin");
  var account = document.getElementById("f-account");
  var password = document.getElementById("f-password");
  var status = document.getElementById("card-status");
  var errorPin = document.getElementById("error-pin");
  var errorCard = document.getElementById("error-card");
  var errorAccount = document.getElementById("error-account");
  var renewed = document.getElementById("renewed");
  var missing = document.getElementById("agent-missing");
  var detect = document.getElementById("detect-readers");
  var trustButton = document.getElementById("hipki-trust");
  var trigger = document.getElementById("replace");
  var busy = false;

  function setStatus(key, values) {
    status.textContent = key ? say(key, values) : "";
  }

  function clearErrors() {
    swreg.show(errorPin, "");
    swreg.show(errorCard, "");
    swreg.show(errorAccount, "");
  }

  function showError(error) {
    var code = (error && error.code) || "card_error";
    var target = errorCard;
    if (PIN_CODES.indexOf(code) >= 0) {
      target = errorPin;
    } else if (ACCOUNT_CODES.indexOf(code) >= 0 || error.field === "account") {
      target = errorAccount;
    }
    swreg.show(target, (error && error.message) || say(code));
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

  /* -- the replacement ------------------------------------------------------------------ */

  function finished() {
    busy = false;
    trigger.removeAttribute("aria-disabled");
    pin.value = "";
  }

  function run() {
    if (busy) {
      return;
    }
    clearErrors();
    swreg.show(renewed, "");
    var pinValue = pin.value;
    if (!pinValue) {
      showError(failure("field_required"));
      pin.focus();
      return;
    }
    if (account && (!account.value || !password.value)) {
      swreg.show(errorAccount, say("field_required"));
      (account.value ? password : account).focus();
      return;
    }
    var popup = bridge.begin();
    if (popup === false) {
      return;
    }
    busy = true;
    trigger.setAttribute("aria-disabled", "true"); /* busy; disabled would drop the focus */
    setStatus("status_signing");
    bridge
      .signChallenge("/api/renewal/challenge", pinValue, popup)
      .then(function (request) {
        setStatus("status_checking");
        if (account) {
          request.account = account.value;
          request.password = password.value;
        }
        return swreg.api("POST", "/api/renewal", request);
      })
      .then(
        function (done) {
          finished();
          setStatus("");
          if (password) {
            password.value = "";
          }
          swreg.show(renewed, say("renewed") + " (" + done.account + ")");
        },
        function (error) {
          finished();
          setStatus("");
          showError(error);
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
