/* swreg 通關憑證註冊 with an IC card (no build step; after wizard.js, agent.js and hipki.js).
 *
 * Without this script the page imports a .cer (非IC卡類憑證) as a plain form post. With it, a usage
 * type that takes a card also offers IC卡類憑證, as in the seed manual: choose it, enter the
 * 工商憑證's PIN and press 匯入, then 送出.
 *   匯入  POST /api/customs-certificates/challenge            → {challenge_id, payload}
 *         the agent's "sign", or HiPKI's MakeSignature        → certificate, signature, chain
 *   送出  POST /api/customs-certificates {usage_type, kind: "ic_card", answers, certificate,
 *         chain, challenge_id, signature}                     → 「主憑證匯入成功!」
 * The card is read through whichever bridge answers (hipki.js: swreg.Bridge, the swreg card
 * agent first, then CHT's HiPKI component). The signature over the single-use challenge proves
 * the importer holds the card; the PIN goes to the card component only. A refusal naming a form
 * field stands next to it; the others by the card.
 */
(function () {
  "use strict";

  var PIN_CODES = ["pin_incorrect", "card_locked", "no_card", "no_reader"];
  var swreg = window.swreg;
  var form = document.getElementById("customs-form");
  var section = document.getElementById("ic-card");
  if (!form || !section || !swreg || !swreg.Bridge) {
    return;
  }

  var say = swreg.say;
  var usageType = document.getElementById("usage-fields").getAttribute("data-usage-type");
  var chooseIc = document.getElementById("import-ic");
  var chooseFile = document.getElementById("import-non-ic");
  var reader = document.getElementById("reader");
  var pin = document.getElementById("pin");
  var status = document.getElementById("card-status");
  var errorPin = document.getElementById("error-pin");
  var errorCard = document.getElementById("error-card");
  var missing = document.getElementById("agent-missing");
  var detect = document.getElementById("detect-readers");
  var trustButton = document.getElementById("hipki-trust");
  var readButton = document.getElementById("ic-read");
  var loaded = document.getElementById("ic-loaded");
  var submit = document.getElementById("submit");
  var success = document.getElementById("import-success");
  var keyLine = document.getElementById("import-key");
  var queryLink = document.getElementById("query-link");
  var bridge = null; /* swreg.Bridge, from the first time IC卡類憑證 is chosen */
  var signed = null; /* the card's answer to the challenge, until 送出 */
  var busy = false;

  function setStatus(key, values) {
    status.textContent = key ? say(key, values) : "";
  }

  function icChosen() {
    return chooseIc.checked;
  }

  function applyChoice() {
    document.getElementById("ic-body").hidden = !icChosen();
    document.getElementById("non-ic").querySelector(".row-body").hidden = icChosen();
    if (icChosen() && !bridge) {
      bridge = new swreg.Bridge({
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
      bridge.detect();
    }
  }

  /* -- errors ------------------------------------------------------------------------------ */

  function fieldError(name) {
    var id = "error-" + name;
    var node = document.getElementById(id);
    var input = document.getElementById("f-" + name);
    if (!node && input) {
      node = document.createElement("p");
      node.id = id;
      node.className = "error";
      node.setAttribute("role", "alert");
      input.parentNode.insertBefore(node, input.nextSibling);
    }
    return node;
  }

  function clearErrors() {
    form.querySelectorAll("p.error[id^='error-']").forEach(function (node) {
      swreg.show(node, "");
    });
    form.querySelectorAll("[aria-invalid]").forEach(function (input) {
      input.removeAttribute("aria-invalid");
    });
  }

  function showError(error) {
    var code = (error && error.code) || "card_error";
    var message = (error && error.message) || say(code);
    var target = PIN_CODES.indexOf(code) >= 0 ? errorPin : null;
    if (!target && error && error.field && document.getElementById("f-" + error.field)) {
      target = fieldError(error.field);
      document.getElementById("f-" + error.field).setAttribute("aria-invalid", "true");
    }
    swreg.show(target || errorCard, message);
    if (code === "hipki_untrusted") {
      trustButton.hidden = false;
    }
  }

  /* -- 匯入: the card signs a challenge ------------------------------------------------------ */

  function readCard() {
    if (busy) {
      return;
    }
    clearErrors();
    signed = null;
    swreg.show(loaded, "");
    var pinValue = pin.value;
    if (!pinValue) {
      swreg.show(errorPin, say("field_required"));
      pin.focus();
      return;
    }
    var popup = bridge.begin();
    if (popup === false) {
      return;
    }
    busy = true;
    readButton.setAttribute("aria-disabled", "true"); /* busy; disabled would drop the focus */
    setStatus("status_signing");
    bridge
      .signChallenge("/api/customs-certificates/challenge", pinValue, popup)
      .then(
        function (answer) {
          signed = answer;
          setStatus("");
          swreg.show(loaded, say("ic_loaded"));
        },
        function (error) {
          setStatus("");
          showError(error);
        }
      )
      .then(function () {
        busy = false;
        readButton.removeAttribute("aria-disabled");
        pin.value = "";
        pinValue = null;
      });
  }

  /* -- 送出: the certificate and the proof to the API ---------------------------------------- */

  function answers() {
    var found = {};
    document
      .getElementById("usage-fields")
      .querySelectorAll("input[name], select[name]")
      .forEach(function (input) {
        found[input.name] = input.value;
      });
    return found;
  }

  function send() {
    clearErrors();
    if (!signed) {
      swreg.show(errorCard, say("ic_read_first"));
      return;
    }
    var request = {
      usage_type: usageType,
      kind: "ic_card",
      answers: answers(),
      certificate: signed.certificate,
      chain: signed.chain,
      challenge_id: signed.challenge_id,
      signature: signed.signature
    };
    signed = null; /* a challenge is single use: a refusal needs 匯入 again */
    swreg.show(loaded, "");
    busy = true;
    submit.setAttribute("aria-disabled", "true"); /* busy; disabled would drop the focus */
    swreg
      .api("POST", "/api/customs-certificates", request)
      .then(
        function (done) {
          swreg.show(success, done.message);
          queryLink.textContent = done.query_key;
          var query = "/customs/query?key=" + encodeURIComponent(done.query_key);
          queryLink.setAttribute("href", query);
          keyLine.hidden = false;
        },
        function (error) {
          showError(error);
        }
      )
      .then(function () {
        busy = false;
        submit.removeAttribute("aria-disabled");
      });
  }

  form.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    if (!icChosen() || (submitter && submitter.id === "change-usage")) {
      return; /* the .cer upload and 變更憑證使用類型 stay plain form posts */
    }
    event.preventDefault();
    if (!busy) {
      send();
    }
  });
  readButton.addEventListener("click", readCard);
  [chooseIc, chooseFile].forEach(function (radio) {
    radio.addEventListener("change", applyChoice);
  });
  section.hidden = false;
  chooseFile.hidden = false;
  applyChoice();
})();
