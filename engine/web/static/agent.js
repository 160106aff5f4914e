/* swreg card agent client, shared by the pages that read a card (no build step; after wizard.js).
 *
 * The swreg card agent (`swreg agent`) is a WebSocket server on the user's own computer
 * (<body data-agent-url>; protocol in readers/agent.py): every request is
 * {id, op, ...args}, every reply {id, ok, ...} or {id, ok: false, error: {code, message, ...}}.
 * This file adds to window.swreg:
 *   say(key, values)    a message of the page (script data "messages"), {name} filled in
 *   failure(code)       an error object {code, message} in the page's language
 *   localNetworkDenied() whether the browser denies this page the way to 127.0.0.1 (below)
 *   Agent(url)          .call(op, args) → Promise of the reply (rejects with {code, message})
 *                       .fillReaders(select) → Promise of the number of readers, filling the
 *                       <select> with "pcsc:NAME" options, or a PKCS#11 token's own spec
 *                       (a reader with a card first)
 *                       .showReaders(select, setStatus, showError) the same, told to the user
 *                       .detect(select, missing, setStatus, showError) → Promise of whether the
 *                       agent answers (then the readers are listed; else #agent-missing shows)
 *                       .signChallenge(url, card, pin) → the card's answer to a challenge of url
 * The PIN goes to the agent only, inside a "sign" call; it is never sent to the server.
 *
 * Chrome's Local Network Access (Chromium 142+; docs/cards.md): a page that is not itself on a
 * loopback address may open ws://127.0.0.1 only with the user's permission ("loopback-network",
 * named "local-network-access" before Chromium 145), and only from a secure context. Without it
 * the socket fails at once (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS), which a page
 * cannot tell from an agent that is not running. So, on such a page, before connecting:
 * permission "prompt" → #local-network says the browser will ask and why (and the socket is
 * given time for the user's answer); "denied" → no socket, and #local-network says what to do
 * (site settings, then 開啟偵測多台讀卡機) in place of #agent-missing's install help, which any
 * script that reveals it while the permission is denied finds hidden again. #local-network is
 * the page's own, or one made before #agent-missing. Denied, the agent's calls reject with
 * {code: "local_network_denied"}, and failure("hipki_missing") (HiPKI on localhost is blocked
 * alike) keeps its code but says so.
 */
(function () {
  "use strict";

  var swreg = window.swreg;
  if (!swreg) {
    return;
  }
  var CONNECT_TIMEOUT_MS = 2500;
  var PROMPT_TIMEOUT_MS = 60000; /* the browser's permission prompt is open: the user decides */
  var LOOPBACK_HOST = /^(localhost|.+\.localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])$/i;
  var lang = document.body.getAttribute("data-lang") || "zh-TW";
  var messages = swreg.data().messages || {};

  function say(key, values) {
    var text = messages[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.replace("{" + name + "}", String(values[name]));
    });
    return text;
  }

  /* An error object {code, message}; "no component answered" (hipki_missing) keeps its code but
   * is worded by its real cause while the browser denies this page the local network. */
  function failure(code, extra) {
    var key = code === "hipki_missing" && localNetworkDenied() ? "local_network_denied" : code;
    return { code: code, message: say(key) + (extra || "") };
  }

  /* -- Chrome's Local Network Access ---------------------------------------------------------- */

  var localNetwork = {
    /* pages on a loopback address are exempt; so are browsers without the permission */
    applies:
      !LOOPBACK_HOST.test(window.location.hostname) &&
      !!(navigator.permissions && navigator.permissions.query),
    status: null /* the PermissionStatus, whose .state is live */
  };

  function localNetworkDenied() {
    return localNetwork.status !== null && localNetwork.status.state === "denied";
  }

  /* Promise of the permission's state: "granted", "prompt", "denied", or null when it does not
   * apply (a loopback page, or a browser that knows neither name). */
  function localNetworkState() {
    if (!localNetwork.applies) {
      return Promise.resolve(null);
    }
    if (localNetwork.status) {
      return Promise.resolve(localNetwork.status.state);
    }
    var query = function (name) {
      return navigator.permissions.query({ name: name });
    };
    return query("loopback-network")
      .catch(function () {
        return query("local-network-access");
      })
      .then(
        function (status) {
          localNetwork.status = status;
          return status.state;
        },
        function () {
          localNetwork.applies = false;
          return null;
        }
      );
  }

  /* #local-network: the page's own, else one made before #agent-missing (null: neither). */
  function localNetworkNotice(create) {
    var notice = document.getElementById("local-network");
    if (!notice) {
      var missing = document.getElementById("agent-missing");
      if (!create || !missing) {
        return null;
      }
      notice = document.createElement("section");
      notice.id = "local-network";
      notice.className = "notice";
      notice.hidden = true;
      missing.parentNode.insertBefore(notice, missing);
    }
    if (!notice.firstChild) {
      var title = document.createElement("h2");
      title.id = "local-network-title";
      var text = document.createElement("p");
      text.id = "local-network-text";
      notice.appendChild(title);
      notice.appendChild(text);
      notice.setAttribute("aria-labelledby", title.id);
    }
    return notice;
  }

  /* Tell the user what the permission's state means: "prompt" → the browser will ask; "denied" →
   * what to do (over plain http: that only an https:// address can work); else nothing. */
  function showLocalNetwork(state) {
    var key = null;
    if (state === "prompt") {
      key = "local_network_ask";
    } else if (state === "denied") {
      key = window.isSecureContext ? "local_network_denied_help" : "local_network_insecure";
    }
    var notice = localNetworkNotice(key !== null);
    if (!notice) {
      return;
    }
    if (key === null) {
      notice.hidden = true;
      return;
    }
    document.getElementById("local-network-title").textContent = say("local_network_title");
    document.getElementById("local-network-text").textContent = say(key);
    notice.setAttribute("data-state", state);
    notice.hidden = false;
    if (state === "denied") {
      hideInstallHelp();
    }
  }

  /* The install help is the wrong advice while the browser itself blocks the way to the
   * component: whoever reveals #agent-missing then finds it hidden again. */
  function hideInstallHelp() {
    var missing = document.getElementById("agent-missing");
    if (missing && !missing.hidden) {
      missing.hidden = true;
    }
  }

  (function watchInstallHelp() {
    var missing = document.getElementById("agent-missing");
    if (!localNetwork.applies || !missing || !window.MutationObserver) {
      return;
    }
    new MutationObserver(function () {
      if (!missing.hidden && localNetworkDenied()) {
        showLocalNetwork("denied");
      }
    }).observe(missing, { attributes: true, attributeFilter: ["hidden"] });
  })();

  /* -- the agent ------------------------------------------------------------------------------ */

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

  /* Open the socket, once Local Network Access allows it (see the top of this file). */
  Agent.prototype.connect = function () {
    var self = this;
    if (self.socket && self.socket.readyState === WebSocket.OPEN) {
      return Promise.resolve(self);
    }
    return localNetworkState().then(function (state) {
      showLocalNetwork(state);
      if (state === "denied") {
        return Promise.reject(failure("local_network_denied"));
      }
      return self.open(state === "prompt" ? PROMPT_TIMEOUT_MS : CONNECT_TIMEOUT_MS).then(
        function (agent) {
          showLocalNetwork(null);
          return agent;
        },
        function (error) {
          return localNetworkState().then(function (after) {
            if (after === "denied") {
              showLocalNetwork(after);
              throw failure("local_network_denied");
            }
            throw error;
          });
        }
      );
    });
  };

  Agent.prototype.open = function (timeoutMs) {
    var self = this;
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
      }, timeoutMs);
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

  /* Is the agent there? Fill the readers if so; else show the install help (#agent-missing), or
   * what to do when the browser denies the page the local network (#local-network). */
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
      function (error) {
        setStatus("");
        missing.hidden = error.code === "local_network_denied";
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
  swreg.localNetworkDenied = localNetworkDenied;
  swreg.Agent = Agent;
})();
