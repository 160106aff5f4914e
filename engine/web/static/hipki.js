/* swreg's client of CHT's HiPKI component, and the choice of bridge, shared by the pages that
 * read a card (no build step; after wizard.js and agent.js).
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
 * This file adds to window.swreg:
 *   Hipki(url, ui)       the HiPKI client (ui: see Bridge; only signChallenge works without it)
 *                        .probe() → Promise of {info, raw}: the component's /pkcs11info
 *                        .show(read) fills ui.select with its readers ("hipki:" + slotDescription)
 *                        .detectReaders() 開啟偵測多台讀卡機: GetUserCert lists readers and certs
 *                        .askTrust() the component's /addDomain page for this site
 *                        .openPopup(path, name) → a window of the component's (null: blocked)
 *                        .signChallenge(url, slot, pin[, popup]) → {challenge_id, certificate,
 *                        signature, chain}, as Agent.signChallenge (slot: the reader list's value)
 *   Bridge(ui)           which of them answers, agent first (ui: {agentUrl, hipkiUrl, select,
 *                        missing, detectButton, trustButton, setStatus(key, values),
 *                        showError(error), clearErrors()}; the two buttons are wired here:
 *                        開啟偵測多台讀卡機 and the trusted-site page); .kind is "agent", "hipki"
 *                        or null
 *                        .detect() → Promise; .detectReaders(); .askTrust(); .present();
 *                        .openWindow(); .begin() (present + openWindow, on the click: the
 *                        popup, or false once the user was told why not);
 *                        .signChallenge(url, pin, popup)
 * The PIN goes to the component only; it is never sent to the server.
 */
(function () {
  "use strict";

  var PROBE_TIMEOUT_MS = 5000; /* no image, or no getTbs from the popup: "not installed" */
  var REPLY_TIMEOUT_MS = 120000; /* the component at work once it has answered */
  var CLOSED_GRACE_MS = 400; /* a popup posts its reply, then closes itself */
  var DEFAULT_URL = "http://localhost:61161";
  var swreg = window.swreg;
  if (!swreg || !swreg.Agent) {
    return;
  }

  var lang = document.body.getAttribute("data-lang") || "zh-TW";
  var say = swreg.say;
  var failure = swreg.failure;

  function pinFailure(triesLeft) {
    var suffix = "";
    if (triesLeft !== null && triesLeft !== undefined) {
      suffix = lang === "en" ? " (" + triesLeft + " tries left)" : "，剩餘" + triesLeft + "次機會";
    }
    var error = failure("pin_incorrect", suffix);
    error.tries_left = triesLeft;
    return error;
  }

  /* -- what the component's codes mean (CHT errorcode.js, DOMAIN.md §4.1) ------------------- */

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

  function usableToken(slot) {
    return !!(slot && slot.token && typeof slot.token === "object");
  }

  /* The slotDescription a reader list's value names ("hipki:NAME"); null: the first card. */
  function slotOf(value) {
    value = value || "";
    return value.indexOf("hipki:") === 0 && value.length > 6 ? value.slice(6) : null;
  }

  function hideTrust(ui) {
    if (ui.trustButton) {
      ui.trustButton.hidden = true;
    }
  }

  function isAuthority(cert) {
    var label = String(cert.label || "").toLowerCase();
    var usage = String(cert.usage || "");
    return label === "root ca cert" || label === "ca cert" || usage.indexOf("keyCertSign") >= 0;
  }

  /* -- the HiPKI client ---------------------------------------------------------------------- */

  function Hipki(url, ui) {
    this.url = (url || DEFAULT_URL).replace(/\/+$/, "");
    this.ui = ui || {};
    this.certs = []; /* [{slot, certs}] from the last GetUserCert */
    this.popups = 0;
  }

  /* Resolves with {info, raw}; rejects with hipki_missing (no image within 5 s) or
   * hipki_failed (an image that holds no reply). */
  Hipki.prototype.probe = function () {
    var url = this.url;
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
      image.src = url + "/p11Image.bmp?t=" + Date.now();
    });
  };

  /* Fill ui.select with the component's slots ("hipki:" + slotDescription), a card first. */
  Hipki.prototype.fillReaders = function (slots) {
    var select = this.ui.select;
    var previous = select.value;
    while (select.firstChild) {
      select.removeChild(select.firstChild);
    }
    if (!slots.length) {
      var fallback = document.createElement("option");
      fallback.value = "hipki:";
      fallback.textContent = say("reader_default");
      select.appendChild(fallback);
      return;
    }
    var preferred = null;
    slots.forEach(function (slot) {
      var option = document.createElement("option");
      option.value = "hipki:" + slot.slotDescription;
      option.textContent = slot.slotDescription + (usableToken(slot) ? "" : " (—)");
      select.appendChild(option);
      if (option.value === previous || (preferred === null && usableToken(slot))) {
        preferred = option.value;
      }
    });
    if (preferred !== null) {
      select.value = preferred;
    }
  };

  /* What the component said about itself: readers, version, whether it trusts this site. */
  Hipki.prototype.show = function (read) {
    var ui = this.ui;
    var info = read.info;
    if (majorCode(info.ret_code) !== 0) {
      ui.setStatus("status_hipki");
      ui.showError(hipkiFailure(info, read.raw));
      return;
    }
    var slots = Array.isArray(info.slots) ? info.slots : [];
    this.fillReaders(slots);
    hideTrust(ui);
    if (!slots.length) {
      ui.setStatus("status_hipki");
      ui.showError(failure("no_reader"));
      return;
    }
    var version = String(info.serverVersion || info.version || "");
    ui.setStatus("status_hipki_readers", { version: version, count: slots.length });
  };

  /* Before a PIN goes to the component: it still answers, trusts the site, and the wanted
   * reader (null: the first with a card) has a card. Resolves with its slotDescription,
   * rejects with what to tell the user. */
  Hipki.prototype.ready = function (wanted) {
    return this.probe().then(function (read) {
      var info = read.info;
      if (majorCode(info.ret_code) !== 0) {
        throw hipkiFailure(info, read.raw);
      }
      var slots = Array.isArray(info.slots) ? info.slots : [];
      if (!slots.length) {
        throw failure("no_reader");
      }
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
  };

  /* One popup, one operation: answer its getTbs with the package (pkgPromise; null for a page
   * that takes none, /addDomain), resolve with {reply, raw} of the one reply whose func is
   * `func`. No getTbs within 5 s: the component is not there. */
  Hipki.prototype.call = function (popup, func, pkgPromise) {
    var origin = this.url;
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
        if (event.origin !== origin || event.source !== popup || done) {
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
                popup.postMessage(JSON.stringify(pkg), origin);
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
  };

  /* A window of its own for each operation (a name reused would take over a window still at
   * work on another one). Call it in the click's own turn, or the browser blocks it (null). */
  Hipki.prototype.openPopup = function (path, name) {
    this.popups += 1;
    return window.open(this.url + path, name + "-" + this.popups, "width=480,height=360");
  };

  /* GetUserCert (/pkcs11info?withcert=true) in `popup`: the readers with their certificates. */
  Hipki.prototype.readCertificates = function (popup, slot) {
    var self = this;
    var pkg = { func: "GetUserCert" };
    if (slot) {
      pkg.slotDescription = encodeURIComponent(slot);
    }
    return self.call(popup, "pkcs11info", Promise.resolve(pkg)).then(function (result) {
      var slots = Array.isArray(result.reply.slots) ? result.reply.slots : [];
      slots.forEach(function (item) {
        var certs = usableToken(item) && Array.isArray(item.token.certs) ? item.token.certs : [];
        self.certs = self.certs.filter(function (known) {
          return known.slot !== item.slotDescription;
        });
        self.certs.push({ slot: item.slotDescription, certs: certs });
      });
      return result.reply;
    });
  };

  /* The CA certificates on the card whose signing certificate is certb64 (null: not read). */
  Hipki.prototype.knownChain = function (certb64) {
    var chain = null;
    this.certs.forEach(function (known) {
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
  };

  /* The card's chain: from 「開啟偵測多台讀卡機」's GetUserCert, else read now (a second popup;
   * a browser that blocks it leaves the chain to the CAs the portal knows). */
  Hipki.prototype.cardChain = function (slot, certb64) {
    var self = this;
    var chain = self.knownChain(certb64);
    if (chain !== null) {
      return Promise.resolve(chain);
    }
    var popup = self.openPopup("/popupForm", "swreg-hipki-certs");
    if (!popup) {
      return Promise.resolve([]);
    }
    return self.readCertificates(popup, slot).then(
      function () {
        return self.knownChain(certb64) || [];
      },
      function () {
        return [];
      }
    );
  };

  /* 開啟偵測多台讀卡機 with HiPKI: GetUserCert lists the readers and the cards' certificates. */
  Hipki.prototype.detectReaders = function () {
    var self = this;
    var ui = self.ui;
    var popup = self.openPopup("/popupForm", "swreg-hipki");
    if (!popup) {
      ui.showError(failure("popup_blocked"));
      return;
    }
    ui.setStatus("status_connecting");
    self.readCertificates(popup, null).then(
      function (reply) {
        self.show({ info: reply, raw: null });
      },
      function (error) {
        ui.setStatus("");
        ui.showError(error);
      }
    );
  };

  /* 非信任網站: the component's own page asks the user to trust this site. */
  Hipki.prototype.askTrust = function () {
    var self = this;
    var ui = self.ui;
    ui.clearErrors();
    var popup = self.openPopup(
      "/addDomain?domain=" + encodeURIComponent(window.location.hostname),
      "swreg-hipki-trust"
    );
    if (!popup) {
      ui.showError(failure("popup_blocked"));
      return;
    }
    self.call(popup, "addDomain", null).then(
      function () {
        hideTrust(ui);
        return self.probe().then(function (read) {
          self.show(read);
          if (majorCode(read.info.ret_code) === 0) {
            ui.setStatus("status_hipki_trusted");
          }
        });
      },
      function (error) {
        ui.showError(error);
      }
    );
  };

  /* POST challengeUrl for a challenge and have the card in `slot` (the reader list's value,
   * "hipki:" + slotDescription; anything else: the first reader with a card) sign its payload
   * after the PIN, in `popup` (default: one opened now — call this in the click's own turn).
   * Resolves with what the server wants back: {challenge_id, certificate, signature, chain}.
   * The challenge is asked for while the component is probed, as the card check always did. */
  Hipki.prototype.signChallenge = function (challengeUrl, slot, pin, popup) {
    var self = this;
    popup = popup || self.openPopup("/popupForm", "swreg-hipki");
    if (!popup) {
      return Promise.reject(failure("popup_blocked"));
    }
    var challenge = swreg.api("POST", challengeUrl);
    challenge.catch(function () {
      /* reported through the package */
    });
    var chosen = null;
    /* The package travels as "tbsPackage=" + JSON in a form body: every string that may hold
     * "+", "&" or "%" is encodeURIComponent'ed (CHT's sample: tbs and pin), so a component that
     * form-decodes the body and one that only percent-decodes both read the original. */
    var pkg = self.ready(slotOf(slot)).then(function (ready) {
      chosen = ready;
      return challenge.then(function (issued) {
        return {
          func: "MakeSignature",
          tbs: encodeURIComponent(issued.payload),
          tbsEncoding: "base64",
          hashAlgorithm: "SHA256",
          signatureType: "PKCS1",
          pin: encodeURIComponent(pin),
          withCardSN: "false",
          nonce: "",
          slotDescription: encodeURIComponent(chosen)
        };
      });
    });
    return self.call(popup, "sign", pkg).then(function (result) {
      var reply = result.reply;
      return self.cardChain(chosen, reply.certb64).then(function (chain) {
        return challenge.then(function (issued) {
          return {
            challenge_id: issued.challenge_id,
            certificate: reply.certb64,
            signature: reply.signature,
            chain: chain
          };
        });
      });
    });
  };

  /* -- which component answers --------------------------------------------------------------- */

  function Bridge(ui) {
    var self = this;
    self.ui = ui;
    self.kind = null; /* "agent" | "hipki" | null */
    self.agent = null;
    self.hipki = new Hipki(ui.hipkiUrl, ui);
    ui.detectButton.addEventListener("click", function () {
      ui.clearErrors();
      self.detectReaders();
    });
    ui.trustButton.addEventListener("click", function () {
      self.askTrust();
    });
  }

  /* The agent if it answers (its readers listed), else HiPKI (its readers and site state
   * shown), else #agent-missing. */
  Bridge.prototype.detect = function () {
    var self = this;
    var ui = self.ui;
    ui.setStatus("status_connecting");
    self.agent = new swreg.Agent(ui.agentUrl);
    return self.agent.call("hello").then(
      function () {
        self.kind = "agent";
        ui.missing.hidden = true;
        hideTrust(ui);
        return self.listReaders();
      },
      function () {
        return self.hipki.probe().then(
          function (read) {
            self.kind = "hipki";
            ui.missing.hidden = true;
            self.hipki.show(read);
          },
          function (error) {
            if (error.code === "hipki_missing") {
              self.kind = null;
              ui.setStatus("");
              ui.missing.hidden = false;
              return;
            }
            self.kind = "hipki";
            ui.missing.hidden = true;
            ui.setStatus("");
            ui.showError(error);
          }
        );
      }
    );
  };

  Bridge.prototype.listReaders = function () {
    var ui = this.ui;
    return this.agent.showReaders(ui.select, ui.setStatus, ui.showError);
  };

  /* 開啟偵測多台讀卡機: the bridge's readers again, or a new look for a bridge. */
  Bridge.prototype.detectReaders = function () {
    if (this.kind === "agent") {
      this.listReaders();
    } else if (this.kind === "hipki") {
      this.hipki.detectReaders();
    } else {
      this.detect();
    }
  };

  Bridge.prototype.askTrust = function () {
    this.hipki.askTrust();
  };

  /* Is a bridge known? If not: the install help, 「未偵測到 HiCOS…」, and a new look. */
  Bridge.prototype.present = function () {
    if (this.kind) {
      return true;
    }
    this.ui.missing.hidden = false;
    this.ui.showError(failure("hipki_missing"));
    this.detect();
    return false;
  };

  /* The window a HiPKI operation needs, opened in the click's own turn: null when the browser
   * blocked it; undefined for the agent, which needs none. */
  Bridge.prototype.openWindow = function () {
    if (this.kind !== "hipki") {
      return undefined;
    }
    return this.hipki.openPopup("/popupForm", "swreg-hipki");
  };

  /* Ready to sign, on the user's click: a bridge answers and (HiPKI) its window is open.
   * Returns what signChallenge takes as `popup`, or false once the user was told why not. */
  Bridge.prototype.begin = function () {
    if (!this.present()) {
      return false;
    }
    var popup = this.openWindow();
    if (popup === null) {
      this.ui.showError(failure("popup_blocked"));
      return false;
    }
    return popup;
  };

  /* The card in the chosen reader answers a challenge of challengeUrl: Agent.signChallenge or
   * Hipki.signChallenge (in `popup`, from openWindow). */
  Bridge.prototype.signChallenge = function (challengeUrl, pin, popup) {
    var select = this.ui.select;
    if (this.kind === "hipki") {
      return this.hipki.signChallenge(challengeUrl, select.value, pin, popup);
    }
    return this.agent.signChallenge(challengeUrl, select.value || "pcsc:0", pin);
  };

  swreg.Hipki = Hipki;
  swreg.Bridge = Bridge;
})();
