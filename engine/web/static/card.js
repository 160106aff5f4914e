/* swreg card check and card login in the browser (no build step).
 *
 * The page cannot reach a smart card, so it asks a component on the user's own computer:
 *   1. the swreg card agent (agent.js: WebSocket, <body data-agent-url>), or
 *   2. the HiCOS / HiPKI component on http://localhost:61161 through its /popupForm page and
 *      postMessage (GetUserCert / MakeSignature), or
 *   3. neither: #agent-missing explains what to install.
 * The flow: POST the challenge request → the component verifies the PIN and signs the payload
 * → POST certificate, chain and signature → reload (registration) or go to /account (login).
 * The PIN goes to the component only; it is never sent to the server.
 */
(function () {
  "use strict";

  var HIPKI = "http://localhost:61161";
  var PIN_CODES = ["pin_incorrect", "card_locked", "no_card", "no_reader", "field_required"];
  var swreg = window.swreg;
  var form = document.getElementById("card-form");
  if (!form || !swreg || !swreg.Agent) {
    return;
  }

  var body = document.body;
  var mode = form.getAttribute("data-mode");
  var lang = body.getAttribute("data-lang") || "zh-TW";
  var agentUrl = body.getAttribute("data-agent-url");
  var registrationId = body.getAttribute("data-registration-id");
  var reader = document.getElementById("reader");
  var pin = document.getElementById("pin");
  var status = document.getElementById("card-status");
  var errorPin = document.getElementById("error-pin");
  var errorCard = document.getElementById("error-card");
  var missing = document.getElementById("agent-missing");
  var detect = document.getElementById("detect-readers");
  var trigger = document.getElementById(mode === "login" ? "login" : "next");
  var bridge = null; /* "agent" | "hipki" | null */
  var agent = null;
  var busy = false;
  var clicked = null;

  var say = swreg.say;
  var failure = swreg.failure;

  function setStatus(key, values) {
    status.textContent = key ? say(key, values) : "";
  }

  function pinFailure(triesLeft) {
    var suffix = "";
    if (triesLeft !== null && triesLeft !== undefined) {
      suffix = lang === "en" ? " (" + triesLeft + " tries left)" : "，剩餘" + triesLeft + "次機會";
    }
    var error = failure("pin_incorrect", suffix);
    error.tries_left = triesLeft;
    return error;
  }

  /* -- the swreg card agent (agent.js) ------------------------------------------------ */

  function listReaders() {
    return agent.showReaders(reader, setStatus, showError);
  }

  /* -- HiCOS / HiPKI (DOMAIN.md §4.1) --------------------------------------------------- */

  function probeHipki() {
    if (!window.fetch) {
      return Promise.reject(new Error("no fetch"));
    }
    var controller = window.AbortController ? new AbortController() : null;
    var timer = setTimeout(function () {
      if (controller) {
        controller.abort();
      }
    }, 2000);
    var init = { mode: "no-cors", cache: "no-store" };
    if (controller) {
      init.signal = controller.signal;
    }
    return fetch(HIPKI + "/p11Image.bmp", init).then(function () {
      clearTimeout(timer);
      return true;
    });
  }

  function hipkiFailure(reply) {
    var ret = Number(reply.ret_code) >>> 0;
    var last = Number(reply.last_error) >>> 0;
    if (ret === 0x76000006) {
      return failure("no_card");
    }
    if (ret === 0x76100003) {
      return failure("no_reader");
    }
    if (ret === 0x76000998) {
      return failure("field_required");
    }
    if (ret === 0x76000999) {
      return failure("hipki_cancelled");
    }
    if (ret === 0x76000031) {
      return failure("hipki_untrusted");
    }
    if (last === 0xa4) {
      return failure("card_locked");
    }
    if (last === 0x80000002) {
      return pinFailure(2);
    }
    if (last === 0x80000001) {
      return pinFailure(1);
    }
    if (last === 0xa0 || last === 0xa2 || ret === 0x76100006 || ret === 0x83000105) {
      return pinFailure(null);
    }
    var detail = reply.message || reply.last_error || reply.ret_code;
    return failure("hipki_failed", detail ? " (" + detail + ")" : "");
  }

  /* One popup, one operation: answer its getTbs with the package, read its one reply. */
  function hipkiCall(popup, pkgPromise) {
    return new Promise(function (resolve, reject) {
      var done = false;
      var sent = false;
      var watch = setInterval(function () {
        if (popup.closed && !done) {
          finish();
          reject(failure("hipki_cancelled"));
        }
      }, 500);
      var timeout = setTimeout(function () {
        finish();
        reject(failure("hipki_failed"));
      }, 120000);

      function finish() {
        done = true;
        clearInterval(watch);
        clearTimeout(timeout);
        window.removeEventListener("message", onMessage);
        try {
          if (!popup.closed) {
            popup.close();
          }
        } catch (e) {
          /* the popup may already be gone */
        }
      }

      function onMessage(event) {
        if (event.origin !== HIPKI || done) {
          return;
        }
        var reply;
        try {
          reply = typeof event.data === "string" ? JSON.parse(event.data) : event.data;
        } catch (e) {
          return;
        }
        if (!reply) {
          return;
        }
        if (reply.func === "getTbs") {
          if (!sent) {
            sent = true;
            pkgPromise.then(function (pkg) {
              popup.postMessage(JSON.stringify(pkg), HIPKI);
            });
          }
          return;
        }
        finish();
        if (Number(reply.ret_code) === 0) {
          resolve(reply);
        } else {
          reject(hipkiFailure(reply));
        }
      }

      pkgPromise.catch(function (error) {
        if (!done) {
          finish();
          reject(error);
        }
      });
      window.addEventListener("message", onMessage);
    });
  }

  /* -- which component answers ------------------------------------------------------------ */

  function detectBridge() {
    setStatus("status_connecting");
    agent = new swreg.Agent(agentUrl);
    return agent.call("hello").then(
      function () {
        bridge = "agent";
        missing.hidden = true;
        return listReaders();
      },
      function () {
        return probeHipki().then(
          function () {
            bridge = "hipki";
            missing.hidden = true;
            setStatus("status_hipki");
          },
          function () {
            bridge = null;
            setStatus("");
            missing.hidden = false;
          }
        );
      }
    );
  }

  /* -- the check ------------------------------------------------------------------------ */

  function urls() {
    if (mode === "login") {
      return { challenge: "/api/login/challenge", submit: "/api/login" };
    }
    var base = "/api/registrations/" + encodeURIComponent(registrationId);
    return { challenge: base + "/challenge", submit: base + "/card" };
  }

  function clearErrors() {
    swreg.show(errorPin, "");
    swreg.show(errorCard, "");
  }

  function showError(error) {
    var code = (error && error.code) || "card_error";
    var target = PIN_CODES.indexOf(code) >= 0 ? errorPin : errorCard;
    swreg.show(target, (error && error.message) || say(code));
    if (code === "already_registered") {
      setTimeout(function () {
        window.location.assign("/");
      }, 3000);
    }
  }

  function finished(ok) {
    busy = false;
    trigger.disabled = false;
    pin.value = "";
    if (!ok) {
      setStatus("");
    }
  }

  function sign(pinValue, challenge, popup) {
    if (bridge === "agent") {
      return challenge.then(function (issued) {
        var card = reader.value || "pcsc:0";
        return agent
          .call("sign", { card: card, pin: pinValue, data: issued.payload })
          .then(function (reply) {
            return {
              certificate: reply.certificate,
              signature: reply.signature,
              chain: reply.chain || []
            };
          });
      });
    }
    var pkg = challenge.then(function (issued) {
      return {
        func: "MakeSignature",
        tbs: issued.payload,
        tbsEncoding: "base64",
        hashAlgorithm: "SHA256",
        signatureType: "PKCS1",
        pin: encodeURIComponent(pinValue),
        withCardSN: "false",
        nonce: ""
      };
    });
    return hipkiCall(popup, pkg).then(function (reply) {
      return { certificate: reply.certb64, signature: reply.signature, chain: [] };
    });
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
    if (!bridge) {
      missing.hidden = false;
      detectBridge();
      return;
    }
    var popup = null;
    if (bridge === "hipki") {
      popup = window.open(HIPKI + "/popupForm", "swreg-hipki", "width=420,height=320");
      if (!popup) {
        showError(failure("popup_blocked"));
        return;
      }
    }
    busy = true;
    trigger.disabled = true;
    setStatus("status_signing");
    var target = urls();
    var challenge = swreg.api("POST", target.challenge);
    sign(pinValue, challenge, popup)
      .then(function (signed) {
        setStatus("status_checking");
        return challenge.then(function (issued) {
          return swreg.api("POST", target.submit, {
            challenge_id: issued.challenge_id,
            certificate: signed.certificate,
            signature: signed.signature,
            chain: signed.chain
          });
        });
      })
      .then(
        function () {
          finished(true);
          if (mode === "login") {
            window.location.assign("/account");
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
  detect.addEventListener("click", function () {
    clearErrors();
    if (bridge === "agent") {
      listReaders();
    } else {
      detectBridge();
    }
  });
  detectBridge();
})();
