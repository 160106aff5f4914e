/* swreg card check and card login in the browser (no build step).
 *
 * The page cannot reach a smart card, so it asks a component on the user's own computer:
 *   1. the swreg card agent (agent.js: WebSocket, <body data-agent-url>), or
 *   2. CHT's HiPKI component (DOMAIN.md §4.1; <body data-hipki-url>, normally
 *      http://localhost:61161): its /p11Image.bmp carries its /pkcs11info JSON in the pixels
 *      (version, readers, whether it trusts this site), read from a canvas before any PIN is
 *      asked for; the operations go through its single-use /popupForm page and postMessage
 *      (GetUserCert, MakeSignature); an untrusted site is offered the component's /addDomain
 *      page, or
 *   3. neither: #agent-missing explains what to install (known within 5 s: the probe's limit).
 * The flow: POST the challenge request → the component verifies the PIN and signs the payload
 * → POST certificate, chain and signature → reload (registration) or go to /account (login).
 * The PIN goes to the component only; it is never sent to the server.
 */
(function () {
  "use strict";

  var PROBE_TIMEOUT_MS = 5000; /* no image, or no getTbs from the popup: "not installed" */
  var REPLY_TIMEOUT_MS = 120000; /* the component at work once it has answered */
  var CLOSED_GRACE_MS = 400; /* a popup posts its reply, then closes itself */
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
  var HIPKI = (body.getAttribute("data-hipki-url") || "http://localhost:61161").replace(/\/+$/, "");
  var registrationId = body.getAttribute("data-registration-id");
  var reader = document.getElementById("reader");
  var pin = document.getElementById("pin");
  var status = document.getElementById("card-status");
  var errorPin = document.getElementById("error-pin");
  var errorCard = document.getElementById("error-card");
  var missing = document.getElementById("agent-missing");
  var detect = document.getElementById("detect-readers");
  var trustButton = document.getElementById("hipki-trust");
  var trigger = document.getElementById(mode === "login" ? "login" : "next");
  var bridge = null; /* "agent" | "hipki" | null */
  var agent = null;
  var busy = false;
  var clicked = null;
  var hipkiCerts = []; /* [{slot, certs}] from the last GetUserCert */
  var popups = 0;

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

  /* -- HiPKI (DOMAIN.md §4.1) ----------------------------------------------------------- */

  var UNTRUSTED = 0x76000031;
  var LOGIN_FAILED = 0x76100006;
  /* ret_code → what the user is told (the component's other codes: "hipki_failed (code name)") */
  var MAJOR = {};
  MAJOR[0x76000006] = "no_card";
  MAJOR[0x76100003] = "no_reader";
  MAJOR[0x76000998] = "field_required";
  MAJOR[0x76000999] = "hipki_cancelled";
  MAJOR[UNTRUSTED] = "hipki_untrusted";
  MAJOR[0x7600000f] = "hipki_forbidden";
  MAJOR[0x76500001] = "certificate_not_yet_valid";
  MAJOR[0x76500002] = "certificate_expired";
  MAJOR[0x76210001] = "identity_mismatch";
  MAJOR[0x83000101] = "certificate_type_mismatch";
  MAJOR[0x83000102] = "certificate_type_mismatch";
  MAJOR[0x83000103] = "certificate_type_mismatch";
  MAJOR[0x83000104] = "certificate_type_mismatch";

  function hex(code) {
    var text = code.toString(16).toUpperCase();
    return "0x" + "00000000".slice(text.length) + text;
  }

  /* A major code as an unsigned 32-bit number (the component may write it negative). */
  function majorCode(value) {
    var code = Number(value);
    if (!isFinite(code)) {
      return NaN;
    }
    return code < 0 ? 0xffffffff + code + 1 : code;
  }

  /* last_error as an unsigned 32-bit number. It comes as a signed 32-bit number
   * (-2147483646) or sign-extended to 64 bits (18446744071562067970), which a JavaScript
   * number cannot hold exactly: read the digits from the raw reply and keep the low 32 bits;
   * NaN when they are unknowable. */
  function minorCode(raw, reply) {
    var digits = null;
    if (typeof raw === "string") {
      var found = /"last_error"\s*:\s*"?(-?\d+)/.exec(raw);
      digits = found ? found[1] : null;
    }
    if (digits === null) {
      var number = Number(reply.last_error || 0);
      if (!isFinite(number) || Math.abs(number) > Number.MAX_SAFE_INTEGER) {
        return NaN;
      }
      digits = String(Math.trunc(number));
    }
    if (window.BigInt) {
      return Number(window.BigInt.asUintN(32, window.BigInt(digits)));
    }
    var value = Number(digits);
    if (value < 0 && value >= -0x80000000) {
      return 0xffffffff + value + 1;
    }
    return value >= 0 && value <= 0xffffffff ? value : NaN;
  }

  function componentFailure(code, reply) {
    var name = say("hipki_code_" + hex(code).slice(2).toLowerCase());
    if (name.indexOf("hipki_code_") === 0) {
      name = (reply && reply.message) || "";
    }
    var detail = name ? hex(code) + " " + name : hex(code);
    return failure("hipki_failed", lang === "en" ? " (" + detail + ")" : "（" + detail + "）");
  }

  /* What a HiPKI reply with ret_code ≠ 0 means to the user (raw: the reply's JSON text). */
  function hipkiFailure(reply, raw) {
    var ret = majorCode(reply.ret_code);
    if (ret === LOGIN_FAILED) {
      var last = minorCode(raw, reply);
      if (last === 0xa4) {
        return failure("card_locked");
      }
      if (last === 0x80000002) {
        return pinFailure(2);
      }
      if (last === 0x80000001) {
        return pinFailure(1);
      }
      if (last === 0xa2) {
        return { code: "pin_incorrect", message: say("hipki_pin_length") };
      }
      if (last === 0xa0 || isNaN(last)) {
        return pinFailure(null);
      }
      return componentFailure(ret, reply);
    }
    if (ret === 0x83000105) {
      return { code: "pin_incorrect", message: say("hipki_pin_format") };
    }
    if (MAJOR[ret]) {
      return failure(MAJOR[ret]);
    }
    return componentFailure(isNaN(ret) ? 0 : ret, reply);
  }

  /* /p11Image.bmp: the /pkcs11info JSON in the pixels, B, G, R of each pixel until a 0. */
  function decodeImage(image) {
    var canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    var context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    var bytes = [];
    outer: for (var i = 0; i + 2 < pixels.length; i += 4) {
      var triple = [pixels[i + 2], pixels[i + 1], pixels[i]];
      for (var j = 0; j < 3; j++) {
        if (triple[j] === 0) {
          break outer;
        }
        bytes.push(triple[j]);
      }
    }
    var text = new TextDecoder("utf-8").decode(new Uint8Array(bytes));
    var info = JSON.parse(text);
    if (!info || info.func !== "pkcs11info") {
      throw new Error("not a pkcs11info reply");
    }
    return { info: info, raw: text };
  }

  /* Resolves with {info, raw}; rejects with hipki_missing (no image within 5 s) or
   * hipki_failed (an image that holds no reply). */
  function readInfoImage() {
    return new Promise(function (resolve, reject) {
      var image = new Image();
      var settled = false;
      var timer = setTimeout(function () {
        settle(failure("hipki_missing"));
      }, PROBE_TIMEOUT_MS);

      function settle(error, read) {
        if (settled) {
          return;
        }
        settled = true;
        clearTimeout(timer);
        image.onload = null;
        image.onerror = null;
        if (error) {
          image.removeAttribute("src");
          reject(error);
        } else {
          resolve(read);
        }
      }

      image.crossOrigin = "anonymous";
      image.onload = function () {
        var read;
        try {
          read = decodeImage(image);
        } catch (e) {
          settle(failure("hipki_failed"));
          return;
        }
        settle(null, read);
      };
      image.onerror = function () {
        settle(failure("hipki_missing"));
      };
      image.src = HIPKI + "/p11Image.bmp?t=" + Date.now();
    });
  }

  function usableToken(slot) {
    return !!(slot && slot.token && typeof slot.token === "object");
  }

  function chosenSlot() {
    var value = reader.value || "";
    return value.indexOf("hipki:") === 0 && value.length > 6 ? value.slice(6) : null;
  }

  /* Fill <select> with the component's slots ("hipki:" + slotDescription), a card first. */
  function fillHipkiReaders(slots) {
    var previous = reader.value;
    while (reader.firstChild) {
      reader.removeChild(reader.firstChild);
    }
    if (!slots.length) {
      var fallback = document.createElement("option");
      fallback.value = "hipki:";
      fallback.textContent = say("reader_default");
      reader.appendChild(fallback);
      return;
    }
    var preferred = null;
    slots.forEach(function (slot) {
      var option = document.createElement("option");
      option.value = "hipki:" + slot.slotDescription;
      option.textContent = slot.slotDescription + (usableToken(slot) ? "" : " (—)");
      reader.appendChild(option);
      if (option.value === previous || (preferred === null && usableToken(slot))) {
        preferred = option.value;
      }
    });
    if (preferred !== null) {
      reader.value = preferred;
    }
  }

  /* What the component said about itself: readers, version, whether it trusts this site. */
  function showHipki(read) {
    var info = read.info;
    if (majorCode(info.ret_code) !== 0) {
      setStatus("status_hipki");
      showError(hipkiFailure(info, read.raw));
      return;
    }
    var slots = Array.isArray(info.slots) ? info.slots : [];
    fillHipkiReaders(slots);
    trustButton.hidden = true;
    if (!slots.length) {
      setStatus("status_hipki");
      showError(failure("no_reader"));
      return;
    }
    var version = String(info.serverVersion || info.version || "");
    setStatus("status_hipki_readers", { version: version, count: slots.length });
  }

  /* Before a PIN goes to the component: it still answers, trusts the site, and the chosen
   * reader has a card. Rejects with what to tell the user. */
  function hipkiReady() {
    return readInfoImage().then(function (read) {
      var info = read.info;
      if (majorCode(info.ret_code) !== 0) {
        throw hipkiFailure(info, read.raw);
      }
      var slots = Array.isArray(info.slots) ? info.slots : [];
      if (!slots.length) {
        throw failure("no_reader");
      }
      var wanted = chosenSlot();
      var slot = null;
      slots.forEach(function (item) {
        if (slot === null && (wanted === null ? usableToken(item) : item.slotDescription === wanted)) {
          slot = item;
        }
      });
      if (!usableToken(slot)) {
        throw failure("no_card");
      }
      return slot.slotDescription;
    });
  }

  /* One popup, one operation: answer its getTbs with the package (pkgPromise; null for a page
   * that takes none, /addDomain), resolve with {reply, raw} of the one reply whose func is
   * `func`. No getTbs within 5 s: the component is not there. */
  function hipkiCall(popup, func, pkgPromise) {
    return new Promise(function (resolve, reject) {
      var done = false;
      var sent = false;
      var watch = setInterval(function () {
        if (popup.closed && !done) {
          setTimeout(function () {
            if (!done) {
              finish();
              reject(failure("hipki_cancelled"));
            }
          }, CLOSED_GRACE_MS);
        }
      }, 500);
      var waiting = pkgPromise
        ? setTimeout(function () {
            if (!done) {
              finish();
              reject(failure("hipki_missing"));
            }
          }, PROBE_TIMEOUT_MS)
        : null;
      var timeout = setTimeout(function () {
        if (!done) {
          finish();
          reject(componentFailure(0x7600000d, null));
        }
      }, REPLY_TIMEOUT_MS);

      function finish() {
        done = true;
        clearInterval(watch);
        clearTimeout(timeout);
        clearTimeout(waiting);
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
        if (event.origin !== HIPKI || event.source !== popup || done) {
          return; /* another site, or another of the component's windows */
        }
        var raw = typeof event.data === "string" ? event.data : null;
        var reply;
        try {
          reply = raw !== null ? JSON.parse(raw) : event.data;
        } catch (e) {
          return;
        }
        if (!reply || typeof reply !== "object") {
          return;
        }
        if (reply.func === "getTbs" && pkgPromise) {
          clearTimeout(waiting);
          if (!sent) {
            sent = true;
            pkgPromise.then(function (pkg) {
              if (!done) {
                popup.postMessage(JSON.stringify(pkg), HIPKI);
              }
            });
          }
          return;
        }
        if (reply.func !== func) {
          return; /* not the reply to this operation */
        }
        finish();
        if (majorCode(reply.ret_code) === 0) {
          resolve({ reply: reply, raw: raw });
        } else {
          reject(hipkiFailure(reply, raw));
        }
      }

      if (pkgPromise) {
        pkgPromise.catch(function (error) {
          if (!done) {
            finish();
            reject(error);
          }
        });
      }
      window.addEventListener("message", onMessage);
    });
  }

  /* A window of its own for each operation (a name reused would take over a window still at
   * work on another one). */
  function openPopup(path, name) {
    popups += 1;
    return window.open(HIPKI + path, name + "-" + popups, "width=480,height=360");
  }

  /* GetUserCert (/pkcs11info?withcert=true) in `popup`: the readers with their certificates. */
  function readCertificates(popup, slot) {
    var pkg = { func: "GetUserCert" };
    if (slot) {
      pkg.slotDescription = encodeURIComponent(slot);
    }
    return hipkiCall(popup, "pkcs11info", Promise.resolve(pkg)).then(function (result) {
      var slots = Array.isArray(result.reply.slots) ? result.reply.slots : [];
      slots.forEach(function (item) {
        var certs = usableToken(item) && Array.isArray(item.token.certs) ? item.token.certs : [];
        hipkiCerts = hipkiCerts.filter(function (known) {
          return known.slot !== item.slotDescription;
        });
        hipkiCerts.push({ slot: item.slotDescription, certs: certs });
      });
      return result.reply;
    });
  }

  function isAuthority(cert) {
    var label = String(cert.label || "").toLowerCase();
    var usage = String(cert.usage || "");
    return label === "root ca cert" || label === "ca cert" || usage.indexOf("keyCertSign") >= 0;
  }

  /* The CA certificates on the card whose signing certificate is certb64 (null: not read). */
  function knownChain(certb64) {
    var chain = null;
    hipkiCerts.forEach(function (known) {
      var holds = known.certs.some(function (cert) {
        return cert.certb64 === certb64;
      });
      if (holds && chain === null) {
        chain = known.certs
          .filter(function (cert) {
            return cert.certb64 !== certb64 && cert.certb64 && isAuthority(cert);
          })
          .map(function (cert) {
            return cert.certb64;
          });
      }
    });
    return chain;
  }

  /* The card's chain: from 「開啟偵測多台讀卡機」's GetUserCert, else read now (a second popup;
   * a browser that blocks it leaves the chain to the CAs the portal knows). */
  function cardChain(slot, certb64) {
    var chain = knownChain(certb64);
    if (chain !== null) {
      return Promise.resolve(chain);
    }
    var popup = openPopup("/popupForm", "swreg-hipki-certs");
    if (!popup) {
      return Promise.resolve([]);
    }
    return readCertificates(popup, slot).then(
      function () {
        return knownChain(certb64) || [];
      },
      function () {
        return [];
      }
    );
  }

  /* 開啟偵測多台讀卡機 with HiPKI: GetUserCert lists the readers and the cards' certificates. */
  function detectHipkiReaders() {
    var popup = openPopup("/popupForm", "swreg-hipki");
    if (!popup) {
      showError(failure("popup_blocked"));
      return;
    }
    setStatus("status_connecting");
    readCertificates(popup, null).then(
      function (reply) {
        showHipki({ info: reply, raw: null });
      },
      function (error) {
        setStatus("");
        showError(error);
      }
    );
  }

  /* 非信任網站: the component's own page asks the user to trust this site. */
  function askTrust() {
    clearErrors();
    var popup = openPopup(
      "/addDomain?domain=" + encodeURIComponent(window.location.hostname),
      "swreg-hipki-trust"
    );
    if (!popup) {
      showError(failure("popup_blocked"));
      return;
    }
    hipkiCall(popup, "addDomain", null).then(
      function () {
        trustButton.hidden = true;
        return readInfoImage().then(function (read) {
          showHipki(read);
          if (majorCode(read.info.ret_code) === 0) {
            setStatus("status_hipki_trusted");
          }
        });
      },
      function (error) {
        showError(error);
      }
    );
  }

  /* -- which component answers ------------------------------------------------------------ */

  function detectBridge() {
    setStatus("status_connecting");
    agent = new swreg.Agent(agentUrl);
    return agent.call("hello").then(
      function () {
        bridge = "agent";
        missing.hidden = true;
        trustButton.hidden = true;
        return listReaders();
      },
      function () {
        return readInfoImage().then(
          function (read) {
            bridge = "hipki";
            missing.hidden = true;
            showHipki(read);
          },
          function (error) {
            if (error.code === "hipki_missing") {
              bridge = null;
              setStatus("");
              missing.hidden = false;
              return;
            }
            bridge = "hipki";
            missing.hidden = true;
            setStatus("");
            showError(error);
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
    if (code === "hipki_untrusted") {
      trustButton.hidden = false;
    }
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
    var slot = null;
    /* The package travels as "tbsPackage=" + JSON in a form body: every string that may hold
     * "+", "&" or "%" is encodeURIComponent'ed (CHT's sample: tbs and pin), so a component that
     * form-decodes the body and one that only percent-decodes both read the original. */
    var pkg = hipkiReady().then(function (ready) {
      slot = ready;
      return challenge.then(function (issued) {
        return {
          func: "MakeSignature",
          tbs: encodeURIComponent(issued.payload),
          tbsEncoding: "base64",
          hashAlgorithm: "SHA256",
          signatureType: "PKCS1",
          pin: encodeURIComponent(pinValue),
          withCardSN: "false",
          nonce: "",
          slotDescription: encodeURIComponent(slot)
        };
      });
    });
    return hipkiCall(popup, "sign", pkg).then(function (result) {
      var reply = result.reply;
      return cardChain(slot, reply.certb64).then(function (chain) {
        return { certificate: reply.certb64, signature: reply.signature, chain: chain };
      });
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
      showError(failure("hipki_missing"));
      detectBridge();
      return;
    }
    var popup = null;
    if (bridge === "hipki") {
      popup = openPopup("/popupForm", "swreg-hipki");
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
    challenge.catch(function () {
      /* reported through sign() */
    });
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
    } else if (bridge === "hipki") {
      detectHipkiReaders();
    } else {
      detectBridge();
    }
  });
  trustButton.addEventListener("click", askTrust);
  detectBridge();
})();
