/* swreg card agent client, shared by the pages that read a card (no build step; after wizard.js).
 *
 * The swreg card agent (`swreg agent`) is a WebSocket server on the user's own computer
 * (<body data-agent-url>; protocol in readers/agent.py): every request is
 * {id, op, ...args}, every reply {id, ok, ...} or {id, ok: false, error: {code, message, ...}}.
 * This file adds to window.swreg:
 *   say(key, values)    a message of the page (script data "messages"), {name} filled in
 *   failure(code)       an error object {code, message} in the page's language
 *   Agent(url)          .call(op, args) → Promise of the reply (rejects with {code, message})
 *                       .fillReaders(select) → Promise of the number of readers, filling the
 *                       <select> with "pcsc:NAME" options, or a PKCS#11 token's own spec
 *                       (a reader with a card first)
 *                       .showReaders(select, setStatus, showError) the same, told to the user
 *                       .detect(select, missing, setStatus, showError) → Promise of whether the
 *                       agent answers (then the readers are listed; else #agent-missing shows)
 *                       .signChallenge(url, card, pin) → the card's answer to a challenge of url
 * The PIN goes to the agent only, inside a "sign" call; it is never sent to the server.
 */
(function () {
  "use strict";

  var swreg = window.swreg;
  if (!swreg) {
    return;
  }
  var CONNECT_TIMEOUT_MS = 2500;
  var lang = document.body.getAttribute("data-lang") || "zh-TW";
  var messages = swreg.data().messages || {};

  function say(key, values) {
    var text = messages[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.replace("{" + name + "}", String(values[name]));
    });
    return text;
  }

  function failure(code, extra) {
    return { code: code, message: say(code) + (extra || "") };
  }

  function agentFailure(error) {
    var message = lang === "en" ? error.message_en || error.message : error.message;
    return {
      code: error.code || "card_error",
      message: message || say(error.code || "card_error"),
      field: error.field,
      tries_left: error.tries_left
    };
  }

  function Agent(url) {
    this.url = url;
    this.socket = null;
    this.pending = {};
    this.nextId = 1;
  }

  Agent.prototype.connect = function () {
    var self = this;
    if (self.socket && self.socket.readyState === WebSocket.OPEN) {
      return Promise.resolve(self);
    }
    return new Promise(function (resolve, reject) {
      var socket;
      try {
        socket = new WebSocket(self.url);
      } catch (e) {
        reject(failure("card_error"));
        return;
      }
      var timer = setTimeout(function () {
        socket.close();
        reject(failure("card_error"));
      }, CONNECT_TIMEOUT_MS);
      socket.onopen = function () {
        clearTimeout(timer);
        self.socket = socket;
        resolve(self);
      };
      socket.onerror = function () {
        clearTimeout(timer);
        reject(failure("card_error"));
      };
      socket.onclose = function () {
        self.socket = null;
        Object.keys(self.pending).forEach(function (id) {
          self.pending[id].reject(failure("card_error"));
        });
        self.pending = {};
      };
      socket.onmessage = function (event) {
        var reply;
        try {
          reply = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        var waiter = self.pending[reply.id];
        if (!waiter) {
          return;
        }
        delete self.pending[reply.id];
        if (reply.ok) {
          waiter.resolve(reply);
        } else {
          waiter.reject(agentFailure(reply.error || {}));
        }
      };
    });
  };

  Agent.prototype.call = function (op, args) {
    var self = this;
    return self.connect().then(function () {
      return new Promise(function (resolve, reject) {
        var id = self.nextId++;
        var request = { id: id, op: op };
        Object.keys(args || {}).forEach(function (key) {
          request[key] = args[key];
        });
        self.pending[id] = { resolve: resolve, reject: reject };
        self.socket.send(JSON.stringify(request));
      });
    });
  };

  /* Fill <select> with the agent's readers; resolves with their number (0: a default entry). */
  Agent.prototype.fillReaders = function (select) {
    return this.call("list_readers").then(function (reply) {
      var readers = reply.readers || [];
      var previous = select.value;
      while (select.firstChild) {
        select.removeChild(select.firstChild);
      }
      if (!readers.length) {
        var fallback = document.createElement("option");
        fallback.value = "pcsc:0";
        fallback.textContent = say("reader_default");
        select.appendChild(fallback);
        return 0;
      }
      var preferred = null;
      readers.forEach(function (item) {
        var option = document.createElement("option");
        /* a PKCS#11 token comes with its own spec (an RFC 7512 URI the agent resolves only
         * within its own modules); a PC/SC reader is named */
        var token = item.bridge === "pkcs11" && item.spec;
        option.value = token ? item.spec : "pcsc:" + item.name;
        option.textContent =
          (token ? (item.token || item.name) + " (PKCS#11)" : item.name) +
          (item.card_present ? "" : " (—)");
        select.appendChild(option);
        if (option.value === previous || (preferred === null && item.card_present)) {
          preferred = option.value;
        }
      });
      if (preferred !== null) {
        select.value = preferred;
      }
      return readers.length;
    });
  };

  /* fillReaders, told to the user: the count through setStatus(key, values), errors to
   * showError. */
  Agent.prototype.showReaders = function (select, setStatus, showError) {
    return this.fillReaders(select).then(
      function (count) {
        if (!count) {
          showError(failure("no_reader"));
          setStatus("");
          return;
        }
        setStatus("status_readers_found", { count: count });
      },
      function (error) {
        showError(error);
      }
    );
  };

  /* Is the agent there? Fill the readers if so; else show the install help (#agent-missing). */
  Agent.prototype.detect = function (select, missing, setStatus, showError) {
    var self = this;
    setStatus("status_connecting");
    return self.call("hello").then(
      function () {
        missing.hidden = true;
        return self.showReaders(select, setStatus, showError).then(function () {
          return true;
        });
      },
      function () {
        setStatus("");
        missing.hidden = false;
        return false;
      }
    );
  };

  /* POST challengeUrl for a challenge, have the card sign its payload after the PIN; resolves
   * with what the server wants back: {challenge_id, certificate, signature, chain}. */
  Agent.prototype.signChallenge = function (challengeUrl, card, pin) {
    var self = this;
    return swreg.api("POST", challengeUrl).then(function (issued) {
      var signing = self.call("sign", { card: card, pin: pin, data: issued.payload });
      return signing.then(function (reply) {
        return {
          challenge_id: issued.challenge_id,
          certificate: reply.certificate,
          signature: reply.signature,
          chain: reply.chain || []
        };
      });
    });
  };

  swreg.say = say;
  swreg.failure = failure;
  swreg.Agent = Agent;
})();
