/* swreg 憑證更換作業 in the browser (no build step; needs wizard.js for window.swreg).
 *
 * The new card is read by the swreg card agent (WebSocket, <body data-agent-url>, protocol in
 * readers/agent.py): list_readers, then sign with the new card's PIN. The flow:
 *   1. POST /api/renewal/challenge                     → {challenge_id, payload}
 *   2. agent "sign" {card, pin, data: payload}         → certificate, signature, chain
 *   3. POST /api/renewal {challenge_id, certificate, signature, chain[, account, password]}
 * The old account is the card login (the swreg_session cookie goes along by itself) or, when
 * the page shows #f-account and #f-password (no login: the old card has expired), those two.
 * The PIN goes to the agent only; it is never sent to the server.
 */
(function () {
  "use strict";

  var PIN_CODES = ["pin_incorrect", "card_locked", "no_card", "no_reader", "field_required"];
  var ACCOUNT_CODES = ["not_authorized", "not_registered", "account_inactive"];
  var swreg = window.swreg;
  var form = document.getElementById("renewal-form");
  if (!form || !swreg) {
    return;
  }

  var body = document.body;
  var lang = body.getAttribute("data-lang") || "zh-TW";
  var agentUrl = body.getAttribute("data-agent-url");
  var messages = swreg.data().messages || {};
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
  var trigger = document.getElementById("replace");
  var socket = null;
  var pending = {};
  var nextId = 1;
  var connected = false;
  var busy = false;

  function say(key, values) {
    var text = messages[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.replace("{" + name + "}", String(values[name]));
    });
    return text;
  }

  function setStatus(key, values) {
    status.textContent = key ? say(key, values) : "";
  }

  function failure(code) {
    return { code: code, message: say(code) };
  }

  /* -- the swreg card agent ------------------------------------------------------------- */

  function connect() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      return Promise.resolve();
    }
    return new Promise(function (resolve, reject) {
      var opened;
      try {
        opened = new WebSocket(agentUrl);
      } catch (e) {
        reject(failure("card_error"));
        return;
      }
      var timer = setTimeout(function () {
        opened.close();
        reject(failure("card_error"));
      }, 2500);
      opened.onopen = function () {
        clearTimeout(timer);
        socket = opened;
        resolve();
      };
      opened.onerror = function () {
        clearTimeout(timer);
        reject(failure("card_error"));
      };
      opened.onclose = function () {
        socket = null;
        Object.keys(pending).forEach(function (id) {
          pending[id].reject(failure("card_error"));
        });
        pending = {};
      };
      opened.onmessage = function (event) {
        var reply;
        try {
          reply = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        var waiter = pending[reply.id];
        if (!waiter) {
          return;
        }
        delete pending[reply.id];
        if (reply.ok) {
          waiter.resolve(reply);
        } else {
          waiter.reject(agentFailure(reply.error || {}));
        }
      };
    });
  }

  function call(op, args) {
    return connect().then(function () {
      return new Promise(function (resolve, reject) {
        var id = nextId++;
        var request = { id: id, op: op };
        Object.keys(args || {}).forEach(function (key) {
          request[key] = args[key];
        });
        pending[id] = { resolve: resolve, reject: reject };
        socket.send(JSON.stringify(request));
      });
    });
  }

  function agentFailure(error) {
    var message = lang === "en" ? error.message_en || error.message : error.message;
    return {
      code: error.code || "card_error",
      message: message || say(error.code || "card_error"),
      tries_left: error.tries_left
    };
  }

  function listReaders() {
    return call("list_readers").then(
      function (reply) {
        var readers = reply.readers || [];
        var previous = reader.value;
        while (reader.firstChild) {
          reader.removeChild(reader.firstChild);
        }
        if (!readers.length) {
          var fallback = document.createElement("option");
          fallback.value = "pcsc:0";
          fallback.textContent = say("reader_default");
          reader.appendChild(fallback);
          showError(failure("no_reader"));
          setStatus("");
          return;
        }
        var preferred = null;
        readers.forEach(function (item) {
          var option = document.createElement("option");
          option.value = "pcsc:" + item.name;
          option.textContent = item.name + (item.card_present ? "" : " (—)");
          reader.appendChild(option);
          if (option.value === previous || (preferred === null && item.card_present)) {
            preferred = option.value;
          }
        });
        if (preferred !== null) {
          reader.value = preferred;
        }
        setStatus("status_readers_found", { count: readers.length });
      },
      function (error) {
        showError(error);
      }
    );
  }

  function detectAgent() {
    setStatus("status_connecting");
    return call("hello").then(
      function () {
        connected = true;
        missing.hidden = true;
        return listReaders();
      },
      function () {
        connected = false;
        setStatus("");
        missing.hidden = false;
      }
    );
  }

  /* -- the replacement ------------------------------------------------------------------ */

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
  }

  function finished() {
    busy = false;
    trigger.disabled = false;
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
    if (!connected) {
      detectAgent();
      return;
    }
    busy = true;
    trigger.disabled = true;
    setStatus("status_signing");
    var issued = null;
    swreg
      .api("POST", "/api/renewal/challenge")
      .then(function (challenge) {
        issued = challenge;
        var card = reader.value || "pcsc:0";
        return call("sign", { card: card, pin: pinValue, data: challenge.payload });
      })
      .then(function (signed) {
        pinValue = null;
        setStatus("status_checking");
        var request = {
          challenge_id: issued.challenge_id,
          certificate: signed.certificate,
          signature: signed.signature,
          chain: signed.chain || []
        };
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
          pinValue = null;
          finished();
          setStatus("");
          showError(error);
        }
      );
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    run();
  });
  detect.addEventListener("click", function () {
    clearErrors();
    if (connected) {
      listReaders();
    } else {
      detectAgent();
    }
  });
  detectAgent();
})();
